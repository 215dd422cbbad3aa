"""The billing page in real headless Chromium: log in, tabs, range, grouping, CSV, chart."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.members import add_member
from tests.conftest import give_credit, make_company, make_job, make_price, make_usage

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def world(django_user_model):
    """Two companies with a month of usage over three models; a staff user and an owner."""
    make_price("gpt-4o", input="2.5", cached="1.25", output="10")
    make_price("gpt-4o-mini", input="0.15", cached="0.075", output="0.6")
    make_price("claude-sonnet", input="3", cached="0.3", output="15")
    acme = make_company(name="Acme Hiring", timezone="Europe/Berlin")
    make_company(name="Globex Assessments")
    give_credit(acme, "250")
    give_credit(acme, "50", kind="grant")
    jobs = [make_job(acme, title=t) for t in ("Backend Engineer", "Data Analyst", "SRE")]
    now = timezone.now()
    for i in range(40):
        model = ("gpt-4o", "gpt-4o-mini", "claude-sonnet")[i % 3]
        where = {"job_id": str(jobs[i % 3].pk)} if i % 7 else {"draft_job_id": f"draft-{i % 2}"}
        make_usage(
            acme,
            model=model,
            prompt_tokens=20_000 + 1500 * (i % 5),
            cached_prompt_tokens=2000 * (i % 3),
            completion_tokens=6_000 + 700 * (i % 4),
            question_count=5 + i % 6,
            occurred_at=now - timedelta(hours=13 * i),
            **where,
        )
    django_user_model.objects.create_superuser("staff", "s@example.com", "pw-staff-123")
    add_member(company=acme, username="owner", password="pw-owner-123")
    return acme


def log_in(page, username: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def tab(page, name: str):
    return page.get_by_role("navigation", name="Billing sections").get_by_role("link", name=name)


def test_company_admin_uses_every_tab_and_downloads_the_csv(page, world, shoot):
    log_in(page, "owner", "pw-owner-123")
    page.wait_for_url(f"**/billing/{world.pk}/")  # /billing/ sent them to their company
    assert page.get_by_role("heading", name="Acme Hiring").is_visible()
    assert tab(page, "Overview").get_attribute("aria-current") == "page"
    assert page.get_by_text("Spend this month").is_visible()
    shoot(page, "1-overview")

    tab(page, "Usage").click()
    page.get_by_label("Period").select_option("last_30")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**preset=last_30**")
    chart = page.locator("figure.chart svg[role=img]")
    assert chart.is_visible()
    assert page.locator("figure.chart rect title").count() >= 10
    assert "gpt-4o-mini" in page.locator(".legend").inner_text()
    shoot(page, "2-usage-by-day")

    page.get_by_label("Group by").select_option("job")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**group=job**")
    total_text = page.locator(".totals div").first.locator("dd").inner_text()
    shoot(page, "3-usage-by-job")

    with page.expect_download() as info:
        page.get_by_role("link", name="Download CSV").click()
    exported = list(csv.DictReader(io.StringIO(open(info.value.path()).read())))
    assert {"job_title", "cost"} <= set(exported[0])
    csv_total = sum(Decimal(r["cost"]) for r in exported)
    assert f"${csv_total.quantize(Decimal('0.01')):,}" == total_text

    page.get_by_role("link", name="Backend Engineer").click()
    page.wait_for_url("**group=generation**")
    assert page.get_by_text("Generations of job").is_visible()
    shoot(page, "4-job-drill-down")

    tab(page, "Credits").click()
    assert page.get_by_role("heading", name="Credits").is_visible()
    assert page.locator("table.data tbody tr").count() >= 40
    shoot(page, "5-credits")


def test_company_admin_cannot_open_another_company(page, world):
    from billing.models import Company

    other = Company.objects.get(name="Globex Assessments")
    log_in(page, "owner", "pw-owner-123")
    page.wait_for_url(f"**/billing/{world.pk}/")
    response = page.goto(f"/billing/{other.pk}/?tab=usage&format=csv")
    assert response.status == 404
    assert page.goto("/admin/").url.endswith("/admin/login/?next=/admin/")


def test_staff_sees_all_companies_sorts_and_opens_one(page, world, shoot):
    log_in(page, "staff", "pw-staff-123")
    page.wait_for_url("**/billing/")
    rows = page.locator("table.data tbody tr")
    assert rows.count() == 2
    page.get_by_role("link", name="Spend this month").click()
    page.wait_for_url("**sort=spend**")
    page.get_by_role("link", name="Spend this month").click()  # descending
    page.wait_for_url("**dir=desc**")
    assert rows.first.inner_text().startswith("Acme Hiring")
    shoot(page, "0-staff-overview")
    page.get_by_role("link", name="Acme Hiring").click()
    tab(page, "Usage").click()
    assert page.locator(".totals").is_visible()

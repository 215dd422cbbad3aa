"""November's statement in Chromium: a company admin opens it from the Statements tab,
prints it (print media) and downloads its CSV; axe-core and the money rule at both widths."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing.credits import adjust_credits
from billing.members import add_member
from billing.models import Statement
from tests.billing.conftest import grant
from tests.billing.statement_world import close, install_clock
from tests.browser.checks import SCREENSHOTS, axe_violations, look_at
from tests.conftest import make_company, make_job, make_price, make_usage

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def issued():
    """Acme's October and November, issued on December 1st; a late event after."""
    with pytest.MonkeyPatch.context() as patch:
        clock = install_clock(patch)
        clock.set(2026, 9, 1, 0)
        make_price("gpt-4o", input="2.5", cached="1.25", output="10")
        make_price("gpt-4o-mini", input="0.15", cached="0.075", output="0.6")
        acme = make_company(name="Acme Hiring", timezone="Europe/Berlin")
        clock.set(2026, 10, 2, 9)
        grant(acme, "250", reason="Purchase order 2026-117")
        grant(acme, "20", kind="grant", reason="Welcome credit")
        jobs = [make_job(acme, title=t) for t in ("Backend Engineer", "Data Analyst")]
        for month in (10, 11):
            for day in range(3, 29, 2):
                clock.set(2026, month, day, 10)
                make_usage(
                    acme, model="gpt-4o", job_id=str(jobs[day % 4 // 2].pk), question_count=6
                )
                make_usage(acme, model="gpt-4o-mini", prompt_tokens=40, completion_tokens=20)
        clock.set(2026, 11, 20, 9)
        adjust_credits(company=acme, amount="-5", reason="Duplicate purchase order corrected")
        clock.set(2026, 12, 1, 2)
        close(acme, now=clock.now)
        clock.set(2026, 12, 2, 9)
        make_usage(acme, model="gpt-4o", occurred_at=datetime(2026, 11, 30, 21, tzinfo=UTC))
    add_member(company=acme, username="owner", password="pw-owner-123")
    return acme


@pytest.fixture
def tab(browser, _short_lived_connections, live_server, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    context = browser.new_context(
        base_url=live_server.url,
        viewport={"width": 1366, "height": 900},
        bypass_csp=True,  # axe-core is injected as a script
        accept_downloads=True,
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def test_a_company_admin_opens_prints_and_downloads_novembers_statement(tab, issued):
    page = tab
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("owner")
    page.get_by_label("Password").fill("pw-owner-123")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**/billing/{issued.pk}/")

    nav = page.get_by_role("navigation", name="Billing sections")
    nav.get_by_role("link", name="Statements").click()
    page.wait_for_load_state()
    table = page.locator("table.statements")
    assert "open (not yet issued)" in table.inner_text()
    november = Statement.objects.get(company=issued, month="2026-11-01")
    assert november.content_hash[:12] in table.inner_text()
    look_at(page, "statements-01-tab")

    page.get_by_role("link", name="November 2026", exact=True).click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Statement for November 2026").is_visible()
    assert page.get_by_role("button", name="Print").is_visible()  # billing.js shows it
    assert "Backend Engineer" in page.locator("main").inner_text()
    look_at(page, "statements-02-november")

    page.emulate_media(media="print")
    assert not page.locator(".site-header").is_visible()
    assert not page.get_by_role("link", name="Download CSV").is_visible()
    assert page.get_by_role("heading", name="Statement for November 2026").is_visible()
    assert page.locator("code.hash").inner_text() == november.content_hash
    assert axe_violations(page) == []
    page.screenshot(path=str(SCREENSHOTS / "statements-03-print.png"), full_page=True)
    page.emulate_media(media="screen")

    with page.expect_download() as download:
        page.get_by_role("link", name="Download CSV").click()
    rows = list(csv.reader(io.StringIO(open(download.value.path()).read())))
    closing = next(r for r in rows if r[0] == "closing")
    assert Decimal(closing[-1]) == november.closing
    assert rows[2][2] == november.content_hash

    page.goto(f"/billing/{issued.pk}/statements/2026-12/")
    assert "Late usage for 2026-11" in page.locator("main").inner_text()
    look_at(page, "statements-04-open-december")

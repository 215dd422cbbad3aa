"""The billing page's numbers: totals, time zones (DST), CSV, overview and credits."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.money import to_cents
from tests.conftest import give_credit, make_company, make_job, make_price, make_usage

pytestmark = pytest.mark.django_db
UTC = ZoneInfo("UTC")


def page(client, company, **params):
    return client.get(reverse("billing:company", args=[company.pk]), params)


def csv_rows(response) -> list[dict]:
    assert response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def busy_company(company):
    """Usage this month over two models, two jobs and a pending draft."""
    make_price("m-big", input="3", cached="1.5", output="15")
    make_price("m-small", input="0.15", cached="0.075", output="0.6")
    give_credit(company, "500")
    job_a, job_b = make_job(company, title="Backend"), make_job(company, title="Frontend")
    now = timezone.now()
    for i in range(9):
        make_usage(
            company,
            model="m-big" if i % 2 else "m-small",
            job_id=str((job_a, job_b)[i % 2].pk) if i < 7 else None,
            draft_job_id=None if i < 7 else "pending-1",
            prompt_tokens=1000 + i * 37,
            cached_prompt_tokens=i * 11,
            completion_tokens=333 + i,
            question_count=3 + i,
            occurred_at=now - timedelta(minutes=i),
        )
    return company


@pytest.mark.parametrize("group", ["day", "model", "job", "generation"])
def test_rows_add_up_to_totals_and_csv_equals_page(staff_client, busy_company, group):
    response = page(staff_client, busy_company, tab="usage", group=group)
    assert response.status_code == 200
    totals, rows = response.context["totals"], response.context["rows"]
    assert totals.generations == 9
    assert sum(r["cost"] for r in rows) == totals.cost
    assert sum(r["questions"] for r in rows) == totals.questions == sum(3 + i for i in range(9))
    exported = csv_rows(page(staff_client, busy_company, tab="usage", group=group, format="csv"))
    assert len(exported) == len(rows)
    assert "cost" in exported[0]
    assert sum(Decimal(r["cost"]) for r in exported) == totals.cost  # full precision
    assert to_cents(sum(Decimal(r["cost"]) for r in exported)) == to_cents(totals.cost)
    assert sum(int(r["questions"]) for r in exported) == totals.questions


def test_all_groupings_agree_on_the_totals(staff_client, busy_company):
    totals = {
        g: page(staff_client, busy_company, tab="usage", group=g).context["totals"]
        for g in ("day", "model", "job", "generation")
    }
    assert len(set(totals.values())) == 1
    assert totals["day"].cost_per_question == totals["day"].cost / totals["day"].questions


def test_filters_and_job_drill_down(staff_client, busy_company):
    response = page(staff_client, busy_company, tab="usage", group="job")
    jobs = {r["job__title"]: r for r in response.context["rows"]}
    assert set(jobs) == {"Backend", "Frontend", None}
    assert jobs[None]["draft"] == "pending-1"
    backend = jobs["Backend"]
    drill = page(staff_client, busy_company, tab="usage", group="generation", job=backend["job_id"])
    assert drill.context["job"].title == "Backend"
    assert len(drill.context["rows"]) == backend["generations"] == 4
    assert drill.context["totals"].cost == backend["cost"]
    assert "Backend" in drill.content.decode()
    by_model = page(staff_client, busy_company, tab="usage", model="m-big", status="linked")
    assert by_model.context["totals"].generations == 3  # i = 1, 3, 5 (7 is a draft)
    drafts = page(staff_client, busy_company, tab="usage", status="draft", group="model")
    assert drafts.context["totals"].generations == 2


def test_chart_is_server_rendered_svg_with_tooltips(staff_client, busy_company):
    html = page(staff_client, busy_company, tab="usage").content.decode()
    assert "<svg" in html and "m-big" in html and "<rect" in html
    assert html.count("<title>") >= 2  # a tooltip per bar segment
    chart = html[html.index('<figure class="chart">') : html.index("</figure>")]
    assert "<script" not in chart  # drawn by the server, not by JavaScript
    assert "<script>" not in html and "style=" not in html  # nothing inline (CSP)


def test_day_boundaries_follow_company_time_zone_across_dst(staff_client):
    company = make_company(timezone="America/New_York")
    make_price("m", output="10")
    # DST starts 2026-03-08 02:00 in New York: that local day is 23 hours long,
    # from 05:00 UTC to 04:00 UTC the next day.
    instants = {
        "before": datetime(2026, 3, 8, 4, 59, tzinfo=UTC),  # Mar 7, 23:59 EST
        "first": datetime(2026, 3, 8, 5, 0, tzinfo=UTC),  # Mar 8, 00:00 EST
        "last": datetime(2026, 3, 9, 3, 59, tzinfo=UTC),  # Mar 8, 23:59 EDT
        "after": datetime(2026, 3, 9, 4, 0, tzinfo=UTC),  # Mar 9, 00:00 EDT
    }
    for at in instants.values():
        make_usage(company, model="m", prompt_tokens=0, completion_tokens=100_000, occurred_at=at)
    for group in ("day", "generation", "job"):
        response = page(
            staff_client,
            company,
            tab="usage",
            group=group,
            **{"from": "2026-03-08", "to": "2026-03-08"},
        )
        assert response.context["totals"].generations == 2, group
        assert response.context["totals"].cost == Decimal("2")
    rows = page(
        staff_client, company, tab="usage", **{"from": "2026-03-07", "to": "2026-03-09"}
    ).context["rows"]
    assert [(r["day"], r["generations"]) for r in rows] == [
        (date(2026, 3, 7), 1),
        (date(2026, 3, 8), 2),
        (date(2026, 3, 9), 1),
    ]


def test_default_range_is_this_month_in_company_time_zone(staff_client):
    company = make_company(timezone="Pacific/Kiritimati")  # UTC+14
    filters = page(staff_client, company, tab="usage").context["filters"]
    today = timezone.localtime(timezone.now(), ZoneInfo("Pacific/Kiritimati")).date()
    assert (filters.start, filters.end) == (today.replace(day=1), today)
    last = page(staff_client, company, tab="usage", preset="last_7").context["filters"]
    assert (last.end - last.start).days == 6


def test_bad_range_is_reported_and_falls_back(staff_client, company):
    response = page(
        staff_client, company, tab="usage", **{"from": "2026-05-02", "to": "2026-05-01"}
    )
    assert response.status_code == 200
    assert "The start date is after the end date." in response.content.decode()


def test_empty_usage_says_what_to_do(member_client, company):
    html = page(member_client, company, tab="usage").content.decode()
    assert "No usage in this range" in html and "Pick a wider period" in html


def test_overview_shows_balance_spend_forecast_drafts_and_warnings(staff_client, busy_company):
    busy_company.monthly_spend_limit = Decimal("0.01")
    busy_company.save()
    response = page(staff_client, busy_company)
    spend = response.context["spend"]
    usage_total = page(staff_client, busy_company, tab="usage").context["totals"].cost
    assert spend.this_month == usage_total
    assert spend.forecast >= spend.this_month
    assert spend.pending.generations == 2 and spend.pending.cost > 0
    assert response.context["summary"].balance == Decimal("500") - usage_total
    assert any("spend limit" in w for w in response.context["warnings"])
    assert 'aria-current="page"' in response.content.decode()


def test_credits_tab_lists_ledger_with_running_balance_and_filters(staff_client, busy_company):
    response = page(staff_client, busy_company, tab="credits")
    entries = response.context["entries"]
    assert len(entries) == 10  # one purchase, nine usage debits
    assert entries[0].balance_after == response.context["summary"].balance
    purchases = page(staff_client, busy_company, tab="credits", kind="purchase").context["entries"]
    assert [e.kind for e in purchases] == ["purchase"]
    none = page(
        staff_client, busy_company, tab="credits", **{"from": "2020-01-01", "to": "2020-01-31"}
    )
    assert none.context["entries"] == [] and "No ledger entries" in none.content.decode()


def test_staff_overview_lists_companies_with_spend_and_flags(staff_client, busy_company):
    poor = make_company(name="Poor Co")
    response = staff_client.get(reverse("billing:home"))
    assert response.status_code == 200
    rows = {c.name: c for c in response.context["companies"]}
    usage_total = page(staff_client, busy_company, tab="usage").context["totals"].cost
    assert rows[busy_company.name].month_spend == usage_total
    assert rows[busy_company.name].pending_cost > 0
    assert rows["Poor Co"].is_low and not rows[busy_company.name].is_low
    found = staff_client.get(reverse("billing:home"), {"q": "poor"}).context["companies"]
    assert [c.pk for c in found] == [poor.pk]
    by_balance = staff_client.get(reverse("billing:home"), {"sort": "balance", "dir": "desc"})
    assert by_balance.context["companies"][0].pk == busy_company.pk


def test_member_is_sent_to_their_company(member_client, company):
    response = member_client.get(reverse("billing:home"))
    assert response.status_code == 302
    assert response["Location"] == reverse("billing:company", args=[company.pk])


def test_anonymous_user_must_log_in(client, company):
    response = client.get(reverse("billing:company", args=[company.pk]))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert client.get("/accounts/login/").status_code == 200

"""The Statements tab, the printable statement and its CSV: figures, access and queries."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import Statement
from tests.billing.conftest import grant
from tests.billing.statement_world import close
from tests.conftest import make_job, make_price, make_usage

pytestmark = pytest.mark.django_db


@pytest.fixture
def november(company, clock):
    """October and November issued, December open; a cost below a cent on November."""
    company.timezone = "Europe/Berlin"
    company.save()
    make_price("model-a", effective_from=datetime(2025, 1, 1, tzinfo=UTC))
    clock.set(2026, 10, 5, 12)
    grant(company, "100", reason="PO 17")
    clock.set(2026, 11, 5, 12)
    job = make_job(company, title="Data Engineer")
    make_usage(company, model="model-a", job_id=str(job.pk), question_count=4)
    make_usage(company, cost="0.0015", model="model-b", question_count=1)
    clock.set(2026, 12, 1, 1)
    close(company, now=clock.now)
    clock.set(2026, 12, 3, 9)
    make_usage(company, model="model-a", occurred_at=datetime(2026, 11, 30, 22, tzinfo=UTC))
    return Statement.objects.get(company=company, month="2026-11-01")


def tab(company):
    return reverse("billing:company", args=[company.pk]) + "?tab=statements"


def page(company, month="2026-11"):
    return reverse("billing:statement", args=[company.pk, month])


def csv_url(company, month="2026-11"):
    return reverse("billing:statement_csv", args=[company.pk, month])


def test_the_tab_lists_issued_statements_and_the_open_month(
    member_client, company, november, django_assert_max_num_queries
):
    with django_assert_max_num_queries(10):
        response = member_client.get(tab(company))
    body = response.content.decode()
    assert response.status_code == 200
    assert body.index("December 2026") < body.index("November 2026") < body.index("October 2026")
    assert "open (not yet issued)" in body
    assert november.content_hash[:12] in body
    assert 'aria-current="page" class="active">Statements' in body


def test_the_statement_page_shows_the_summary_by_the_display_rule(
    member_client, company, november, django_assert_max_num_queries
):
    with django_assert_max_num_queries(5):
        response = member_client.get(page(company))
    body = response.content.decode()
    assert response.status_code == 200
    assert "Statement for November 2026" in body
    assert "$0.0015" in body  # a cost below a cent never reads $0.00
    assert "Data Engineer" in body and "Jobs not saved yet (drafts)" in body
    assert november.content_hash in body
    assert "css/statement.css" in body
    assert "Reconciliation: closing" in body


def test_the_open_month_is_computed_live_with_its_late_usage(member_client, company, november):
    body = member_client.get(page(company, "2026-12")).content.decode()
    assert "Open (not yet issued)" in body
    assert "Late usage for 2026-11" in body


def test_the_csv_has_every_digit_and_reconciles(member_client, company, november):
    response = member_client.get(csv_url(company))
    assert response["Content-Type"].startswith("text/csv")
    assert f"statement-{company.pk}-2026-11.csv" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    header = rows.index(["section", "kind", "entry_id", "booked_at_utc", "usage_month", "model", "job_id", "label", "entries", "questions", "amount"])  # fmt: skip
    lines = rows[header + 1 :]
    by_section = {}
    for row in lines:
        by_section.setdefault(row[0], []).append(row)
    assert [r[5] for r in by_section["usage_model"]] == ["model-a", "model-b"]
    assert by_section["usage_model"][1][10] == "-0.0015"
    opening = Decimal(by_section["opening"][0][10])
    closing = Decimal(by_section["closing"][0][10])
    movements = sum(Decimal(r[10]) for r in by_section["total"])
    assert closing == opening + movements == november.closing
    assert rows[2] == ["status", f"issued {november.closed_at.isoformat()}", november.content_hash]


def test_another_companys_statement_is_a_404(member_client, other_company, clock):
    clock.set(2026, 10, 5, 12)
    grant(other_company, "10")
    clock.set(2026, 11, 2, 0)
    close(other_company, now=clock.now)
    for url in (page(other_company, "2026-10"), csv_url(other_company, "2026-10")):
        assert member_client.get(url).status_code == 404


@pytest.mark.parametrize("month", ["2026-13", "nope", "2025-01", "2031-01"])
def test_a_month_without_a_statement_is_a_404(member_client, company, november, month):
    assert member_client.get(page(company, month)).status_code == 404
    assert member_client.get(csv_url(company, month)).status_code == 404


def test_a_company_without_activity_has_an_empty_tab(member_client, company):
    body = member_client.get(tab(company)).content.decode()
    assert "No statements yet." in body


def test_staff_reach_the_same_page_from_the_admin(
    staff_client, company, november, django_assert_max_num_queries
):
    changelist = staff_client.get(reverse("admin:billing_statement_changelist"))
    assert page(company) in changelist.content.decode()
    change = reverse("admin:billing_statement_change", args=[november.pk])
    with django_assert_max_num_queries(6):
        detail = staff_client.get(change)
    body = detail.content.decode()
    assert detail.status_code == 200
    assert page(company) in body and november.content_hash in body
    assert 'name="_save"' not in body  # read-only
    assert staff_client.get(page(company)).status_code == 200
    assert staff_client.post(change, {}).status_code == 403

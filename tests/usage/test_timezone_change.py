"""A company's time zone change moves its usage to the new local days, never silently."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command

from billing.companies import upsert_company
from core.errors import InvalidInput
from tests.conftest import make_company, make_price, make_usage
from tests.usage.rollup_check import assert_rollup_matches_raw
from usage.models import QuestionGenerationUsage
from usage.selectors import month_to_date_spend

pytestmark = pytest.mark.django_db
EVENING = datetime(2026, 10, 31, 20, 0, tzinfo=ZoneInfo("UTC"))  # Nov 1st in Tokyo


def test_changing_the_zone_moves_usage_to_its_new_day_and_month():
    company = make_company(external_id="org_tz", timezone="UTC")
    make_price("m", output="10")
    make_usage(company, model="m", prompt_tokens=0, completion_tokens=100_000, occurred_at=EVENING)
    november = datetime(2026, 11, 2, tzinfo=ZoneInfo("UTC"))
    assert month_to_date_spend(company, november) == 0

    out = StringIO()
    call_command("change_company_timezone", "org_tz", "Asia/Tokyo", stdout=out)
    assert "Moved 1 usage rows" in out.getvalue()
    company.refresh_from_db()
    assert company.timezone == "Asia/Tokyo"
    assert QuestionGenerationUsage.objects.get().occurred_on.isoformat() == "2026-11-01"
    assert month_to_date_spend(company, november) == Decimal("1")
    assert_rollup_matches_raw(company)

    call_command("change_company_timezone", "org_tz", "Asia/Tokyo", stdout=out)  # again: no-op
    assert_rollup_matches_raw(company)


def test_dry_run_changes_nothing():
    company = make_company(timezone="UTC")
    make_price("m")
    make_usage(company, model="m", occurred_at=EVENING)
    call_command(
        "change_company_timezone", str(company.pk), "Asia/Tokyo", "--dry-run", stdout=StringIO()
    )
    company.refresh_from_db()
    assert company.timezone == "UTC"
    assert QuestionGenerationUsage.objects.get().occurred_on.isoformat() == "2026-10-31"


def test_a_plain_edit_is_refused_once_usage_exists():
    company = make_company(external_id="org_plain", timezone="UTC")
    upsert_company(external_id="org_plain", name=company.name, timezone_name="Europe/Berlin")
    make_price("m")
    make_usage(company, model="m")
    with pytest.raises(InvalidInput) as refused:
        upsert_company(external_id="org_plain", name=company.name, timezone_name="Asia/Tokyo")
    assert "change_company_timezone" in refused.value.message
    assert refused.value.fields == {"timezone": "cannot change once usage is recorded"}


def test_the_admin_refuses_the_edit_too(staff_client):
    company = make_company(timezone="UTC")
    make_price("m")
    make_usage(company, model="m")
    form = {
        "name": company.name,
        "external_id": company.external_id,
        "timezone": "Asia/Tokyo",
        "currency": "USD",
        "is_active": "on",
        "low_balance_threshold": "10",
        "overdraft_allowance": "0",
        "billing_emails": "",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
    }
    response = staff_client.post(f"/admin/billing/company/{company.pk}/change/", form)
    assert response.status_code == 200  # the form again, with the error
    assert "change_company_timezone" in response.content.decode()
    company.refresh_from_db()
    assert company.timezone == "UTC"

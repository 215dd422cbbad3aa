"""Month-to-date spend of several companies at once, each in its own time zone
(the batch's limit alerts and the admin company list read it)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from tests.conftest import make_company
from usage.models import UsageDailyRollup
from usage.selectors import month_to_date_spend, month_to_date_spend_by_company

pytestmark = pytest.mark.django_db

# 2026-11-01 03:00 UTC: already November in Tokyo, still October in Los Angeles.
NOW = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)


def _bucket(company, day: date, cost: str, status: str = "linked", model: str = "m") -> None:
    UsageDailyRollup.objects.create(
        company=company, day=day, model=model, status=status, generations=1, cost=Decimal(cost)
    )


def test_each_company_counts_its_own_local_month_up_to_its_own_today():
    tokyo = make_company(timezone="Asia/Tokyo")
    los_angeles = make_company(timezone="America/Los_Angeles")
    quiet = make_company()
    for company in (tokyo, los_angeles):
        _bucket(company, date(2026, 10, 1), "1.000000000001")
        _bucket(company, date(2026, 10, 31), "2.5")
        _bucket(company, date(2026, 10, 31), "0.25", status="draft")
        _bucket(company, date(2026, 11, 1), "4", model="other")
        _bucket(company, date(2026, 11, 2), "100")  # after everyone's today: not counted

    spend = month_to_date_spend_by_company([tokyo, los_angeles, quiet], NOW)

    assert spend == {
        tokyo.pk: Decimal("4"),
        los_angeles.pk: Decimal("3.750000000001"),
        quiet.pk: Decimal(0),
    }
    for company in (tokyo, los_angeles, quiet):
        assert spend[company.pk] == month_to_date_spend(company, NOW)

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import give_credit, make_company, make_price, make_usage
from usage.quota import quota_status
from usage.selectors import month_to_date_spend

pytestmark = pytest.mark.django_db


def test_allowed_until_balance_reaches_overdraft(company, price):
    give_credit(company, "1")
    assert quota_status(company).allowed
    make_usage(company, prompt_tokens=0, completion_tokens=100_000)  # $1.00
    status = quota_status(company)
    assert status.balance == 0 and not status.allowed
    company.overdraft_allowance = Decimal("5")
    assert quota_status(company).allowed


def test_monthly_limit_blocks_new_generations(company, price):
    give_credit(company, "100")
    company.monthly_spend_limit = Decimal("1")
    make_usage(company, prompt_tokens=0, completion_tokens=100_000)
    status = quota_status(company)
    assert status.month_to_date_spend == Decimal("1") and not status.allowed
    assert "monthly spend limit reached" in status.reasons


def test_month_follows_the_company_time_zone():
    company = make_company(timezone="Asia/Tokyo")
    make_price("m", output="10")
    # 2026-10-31 20:00 UTC is already November 1st in Tokyo.
    at = datetime(2026, 10, 31, 20, 0, tzinfo=ZoneInfo("UTC"))
    make_usage(company, model="m", prompt_tokens=0, completion_tokens=100_000, occurred_at=at)
    nov = datetime(2026, 11, 2, tzinfo=ZoneInfo("UTC"))
    assert month_to_date_spend(company, nov) == Decimal("1")
    assert month_to_date_spend(company, at - timedelta(hours=12)) == Decimal("0")


def test_unpriced_generations_are_counted_not_silently_zero(company, price):
    make_usage(company, model="model-without-a-price")
    make_usage(company)
    status = quota_status(company)
    assert status.unpriced_generations == 1
    assert status.month_to_date_spend > 0  # the priced one only

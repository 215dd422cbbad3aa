"""Holds settle by their usage and verify_ledger checks they agree; per-key limits are
set by commands and counted in the company's days."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, transaction

from billing.api_keys import create_api_key, set_api_key_limits
from billing.invariants import check_ledger
from billing.models import APIKey, Reservation
from core.errors import InvalidInput
from tests.conftest import give_credit, make_company, make_event, make_price
from usage.budgets import key_spend
from usage.errors import BudgetExceeded
from usage.models import KeyDailySpend
from usage.pricing import reprice_usage
from usage.quota import quota_status
from usage.recording import record_usage
from usage.reservations import Estimate, reserve
from usage.timezones import change_company_timezone

pytestmark = pytest.mark.django_db


def hold(company, key=None, cost="1", ikey="h", **kwargs):
    return reserve(
        company=company,
        api_key=key,
        estimate=Estimate(cost=cost),
        idempotency_key=ikey,
        **kwargs,
    ).reservation


def test_verify_ledger_passes_with_settled_holds_and_catches_a_stray_one(company, price):
    give_credit(company, "10")
    h = hold(company)
    usage = record_usage(
        replace(make_event(company), reservation_id=str(h.pk)), company=company
    ).usage
    assert check_ledger() == []
    other = make_company()
    give_credit(other, "10")
    stray = hold(other, ikey="stray")
    Reservation.objects.filter(pk=stray.pk).update(status="released", closed_at=stray.created_at)
    # The unique constraint already refuses a usage row settling two holds...
    with pytest.raises(IntegrityError), transaction.atomic():
        Reservation.objects.filter(pk=stray.pk).update(status="settled", settled_usage_id=usage.pk)
    # ...and verify_ledger names a hold settled by another company's usage.
    Reservation.objects.filter(pk=h.pk).update(company=other)
    assert [f.invariant for f in check_ledger()] == ["settled_holds_match_their_usage"]


def test_a_hold_never_writes_money(company):
    give_credit(company, "5")
    hold(company)
    assert company.ledger_entries.count() == 1  # the purchase only
    assert quota_status(company).balance == Decimal("5")


def test_limits_are_set_at_creation_and_changed_by_the_command(company):
    out = StringIO()
    call_command(
        "create_api_key",
        "ci",
        company=str(company.pk),
        daily_limit="2",
        monthly_limit="20",
        stdout=out,
    )
    key = APIKey.objects.get(name="ci")
    assert (key.daily_limit, key.monthly_limit) == (Decimal("2"), Decimal("20"))
    call_command("set_api_key_limits", key.prefix, daily_limit="none", stdout=out)
    key.refresh_from_db()
    assert (key.daily_limit, key.monthly_limit) == (None, Decimal("20"))
    assert "daily limit none, monthly limit 20.00" in out.getvalue()
    with pytest.raises(CommandError, match="must not be negative"):
        call_command("set_api_key_limits", key.prefix, monthly_limit="-1")
    with pytest.raises(CommandError, match="company keys only"):
        call_command("create_api_key", "platform", daily_limit="1")


def test_a_platform_key_carries_no_limits(db):
    key, _ = create_api_key(name="platform")
    with pytest.raises(InvalidInput) as caught:
        set_api_key_limits(prefix=key.prefix, daily_limit="1")
    assert caught.value.fields == {"daily_limit": "company keys only"}


def test_key_spend_counts_the_companys_local_day_and_month(price):
    company = make_company(timezone="Asia/Tokyo")
    key, _ = create_api_key(name="k", company=company, daily_limit="1")
    # 2026-10-31 20:00 UTC is November 1st in Tokyo: a new day and a new month.
    before = datetime(2026, 10, 31, 14, 0, tzinfo=ZoneInfo("UTC"))
    after = datetime(2026, 10, 31, 20, 0, tzinfo=ZoneInfo("UTC"))
    for at in (before, after):
        record_usage(
            make_event(company, cost="0.5", occurred_at=at, api_key=key),
            company=company,
            now=at,
        )
    assert key_spend(company, key, after + timedelta(hours=1)) == (Decimal("0.5"), Decimal("0.5"))
    assert key_spend(company, key, before) == (Decimal("0.5"), Decimal("0.5"))
    record_usage(make_event(company, cost="0.25", occurred_at=after), company=company, now=after)
    assert key_spend(company, key, after) == (Decimal("0.5"), Decimal("0.5"))  # not this key's


def test_every_reason_that_applies_is_given(price):
    company = make_company(monthly_spend_limit=Decimal("1"))
    key, _ = create_api_key(name="k", company=company, daily_limit="1", monthly_limit="1")
    record_usage(make_event(company, cost="1", api_key=key), company=company)
    status = quota_status(company, key=key)
    assert status.reason_codes == (
        "balance",
        "company_monthly_limit",
        "key_daily_limit",
        "key_monthly_limit",
    )
    with pytest.raises(BudgetExceeded) as refused:
        hold(company, key, cost="0.01")
    assert refused.value.reasons == list(status.reason_codes)


def test_a_hold_fits_exactly_up_to_the_line(company):
    give_credit(company, "1")
    hold(company, cost="0.4", ikey="a")
    hold(company, cost="0.6", ikey="b")  # exactly the balance
    with pytest.raises(BudgetExceeded):
        hold(company, cost="0.000000000001", ikey="c")
    assert not quota_status(company).allowed


def test_the_per_key_spend_follows_repricing_and_a_time_zone_change(price):
    company = make_company()
    give_credit(company, "100")
    key, _ = create_api_key(name="k", company=company, daily_limit="100")
    record_usage(make_event(company, model="later", api_key=key), company=company)  # unpriced
    record_usage(make_event(company, api_key=key), company=company)  # 0.0075
    bucket = KeyDailySpend.objects.get()
    assert (bucket.generations, bucket.cost, bucket.unpriced) == (2, Decimal("0.0075"), 1)
    make_price("later", output="20")
    reprice_usage(apply=True)
    bucket.refresh_from_db()
    assert (bucket.cost, bucket.unpriced) == (Decimal("0.0075") + Decimal("0.0125"), 0)
    change_company_timezone(company=company, timezone_name="Pacific/Kiritimati")
    assert check_ledger() == []
    assert sum(b.cost for b in KeyDailySpend.objects.all()) == Decimal("0.02")

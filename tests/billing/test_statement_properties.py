"""Property: whatever happens between closes (DST changes, zone changes, late usage), the
issued statements partition the ledger, add up to it, and never change once issued."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.credits import adjust_credits, refund_credits
from billing.invariants import check_ledger
from billing.ledger import post_entry
from billing.models import LedgerEntry, Statement
from tests.billing.statement_world import close, stored_hash
from tests.conftest import make_company, make_event
from usage.recording import record_usage
from usage.timezones import change_company_timezone

pytestmark = pytest.mark.django_db

_keys = itertools.count(1)
# Zones with DST at different dates and hours, half-hour and 45-minute offsets, and
# Lord Howe's half-hour DST.
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Pacific/Chatham",
    "Australia/Lord_Howe",
    "America/Santiago",
]
amounts = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(40), places=6)
operations = st.one_of(
    st.tuples(st.just("wait"), st.integers(min_value=1, max_value=24 * 40)),
    st.tuples(st.just("purchase"), amounts),
    st.tuples(st.just("usage"), amounts, st.integers(min_value=0, max_value=24 * 45)),
    st.tuples(st.just("refund"), amounts),
    st.tuples(st.just("adjustment"), amounts, st.booleans()),
    st.tuples(st.just("correction"), amounts, st.booleans()),
    st.tuples(st.just("zone"), st.sampled_from(ZONES)),
    st.tuples(st.just("close"), st.none()),
)


def _apply(company, clock, op, issued: dict) -> None:
    kind, *args = op
    key = f"p-{next(_keys)}"
    if kind == "wait":
        clock.set(clock.now + timedelta(hours=args[0], minutes=17))
    elif kind == "purchase":
        post_entry(company=company, kind="purchase", amount=args[0], idempotency_key=key)
    elif kind == "usage":  # occurred up to 45 days before it is recorded: often late
        occurred = clock.now - timedelta(hours=args[1])
        record_usage(make_event(company, cost=args[0], occurred_at=occurred), company=company)
    elif kind == "refund":
        refund_credits(company=company, amount=args[0], reason="r", idempotency_key=key)
    elif kind == "adjustment":
        adjust_credits(company=company, amount=args[0] if args[1] else -args[0], reason="r")
    elif kind == "correction":
        amount = args[0] if args[1] else -args[0]
        post_entry(company=company, kind="usage_correction", amount=amount, idempotency_key=key)
    elif kind == "zone":
        change_company_timezone(company=company, timezone_name=args[0])
        company.refresh_from_db()
    else:
        for statement in close(company, now=clock.now):
            issued[statement.pk] = statement.content_hash


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    start_zone=st.sampled_from(ZONES),
    # Around the spring and autumn DST changes of either hemisphere.
    start=st.sampled_from([datetime(2026, 3, 20, tzinfo=UTC), datetime(2026, 9, 20, tzinfo=UTC)]),
    ops=st.lists(operations, min_size=1, max_size=25),
)
def test_statements_partition_and_add_up_to_the_ledger(db, clock, start_zone, start, ops):
    clock.set(start)
    company = make_company(timezone=start_zone)
    post_entry(company=company, kind="grant", amount="5", idempotency_key=f"s-{next(_keys)}")
    issued: dict[int, str] = {}
    for op in ops:
        _apply(company, clock, op, issued)
    clock.set(clock.now + timedelta(days=33))  # every month with an entry has ended
    for statement in close(company, now=clock.now):
        issued[statement.pk] = statement.content_hash

    statements = list(Statement.objects.filter(company=company).order_by("month"))
    entries = LedgerEntry.objects.filter(company=company)
    # Every entry is on exactly one statement: the id ranges follow one another ...
    assert statements[0].entries_after == 0 and statements[0].opening == 0
    for before, after in itertools.pairwise(statements):
        assert after.entries_after == before.entries_through
        assert after.opening == before.closing
        assert after.period_start == before.period_end
    # ... and end with the last entry, so together they are the whole ledger.
    assert statements[-1].entries_through == max(e.pk for e in entries)
    assert sum((s.closing - s.opening for s in statements), Decimal(0)) == sum(
        (e.amount for e in entries), Decimal(0)
    )
    assert sum(s.entry_count for s in statements) == entries.count()
    assert statements[-1].closing == company.credit_balance.balance
    # An issued statement reads as it was issued, whatever was booked after it.
    assert {s.pk: stored_hash(s) for s in statements} == issued
    assert check_ledger(company_id=company.pk) == []

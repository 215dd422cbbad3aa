"""Property: any sequence of postings keeps every ledger invariant (verify_ledger's checker)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.credits import adjust_credits, due_lots, expire_lot, grant_credits, refund_credits
from billing.invariants import check_ledger
from billing.ledger import post_entry
from billing.models import CreditBalance, CreditLot, LedgerEntry
from tests.conftest import make_company, make_event
from usage.recording import record_usage

pytestmark = pytest.mark.django_db

_keys = itertools.count(1)
amounts = st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(50), places=6)
# Expiry in hours from now: None never expires; negative is credit already
# expired when posted (not yet written off), which must never be consumed.
expiry_hours = st.one_of(st.none(), st.integers(min_value=-48, max_value=-1), st.integers(1, 48))

operations = st.one_of(
    st.tuples(st.sampled_from(["purchase", "grant"]), amounts, expiry_hours),
    st.tuples(st.just("usage"), amounts, st.none()),
    st.tuples(st.just("refund"), amounts, st.none()),
    st.tuples(st.just("adjustment"), amounts, st.booleans()),
    st.tuples(st.just("correction"), amounts, st.booleans()),
    st.tuples(st.just("expire"), st.none(), st.none()),
)


def _apply(company, op) -> None:
    kind, amount, extra = op
    key = f"op-{next(_keys)}"
    if kind in ("purchase", "grant"):
        expires_at = None if extra is None else timezone.now() + timedelta(hours=extra)
        # post_entry (not grant_credits) so already-expired credit can be posted.
        post_entry(
            company=company, kind=kind, amount=amount, idempotency_key=key, expires_at=expires_at
        )
    elif kind == "usage":
        record_usage(make_event(company, cost=amount), company=company)
    elif kind == "refund":
        refund_credits(company=company, amount=amount, reason="r", idempotency_key=key)
    elif kind == "adjustment":
        adjust_credits(company=company, amount=amount if extra else -amount, reason="r")
    elif kind == "correction":  # re-pricing of no particular row: +/- credit
        post_entry(
            company=company,
            kind="usage_correction",
            amount=amount if extra else -amount,
            idempotency_key=key,
        )
    else:
        for lot_id in due_lots(now=timezone.now(), company=company).values_list("pk", flat=True):
            expire_lot(lot_id=lot_id)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(operations, min_size=1, max_size=14))
def test_any_sequence_of_postings_keeps_every_invariant(db, ops):
    company = make_company()
    grant_credits(company=company, amount="1", reason="seed")  # a balance row from the start
    for op in ops:
        _apply(company, op)
        assert check_ledger(company_id=company.pk) == [], op
    balance = CreditBalance.objects.get(company=company)
    lots = CreditLot.objects.filter(company=company)
    assert balance.balance == sum(e.amount for e in LedgerEntry.objects.filter(company=company))
    assert balance.balance == sum(lot.remaining for lot in lots) - balance.debt
    for lot in lots:
        assert lot.consumed + lot.expired <= lot.amount
        if lot.expires_at is not None and lot.last_consumed_at is not None:
            assert lot.last_consumed_at <= lot.expires_at

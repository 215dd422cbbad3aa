"""Each kind of posting, lots and their allocation order, debt, idempotency."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.credits import (
    adjust_credits,
    grant_credits,
    post_credit,
    refund_credits,
)
from billing.ledger import current_balance, post_entry
from billing.models import AuditEvent, CreditBalance, CreditLot, LedgerEntry
from billing.selectors import credit_summary
from core.errors import IdempotencyConflict, InvalidInput, ServiceError
from tests.billing.conftest import grant, lot_of, remaining
from tests.conftest import make_usage

pytestmark = pytest.mark.django_db
D = Decimal


def _debt(company) -> Decimal:
    return CreditBalance.objects.get(company=company).debt


def _spend(company, amount: str):
    return make_usage(company, cost=amount).balance


def test_purchase_opens_a_paid_never_expiring_lot_and_is_audited(company):
    entry = grant(company, "100")
    lot = lot_of(entry)
    assert (lot.funding, lot.amount, lot.remaining, lot.expires_at) == (
        "paid",
        D(100),
        D(100),
        None,
    )
    assert entry.balance_after == D(100) and current_balance(company) == D(100)
    audit = AuditEvent.objects.get(company=company, action="credit.purchase")
    assert audit.object_id == str(entry.pk) and audit.after["amount"] == "100.00"


def test_grant_is_promotional_and_reported_apart(company):
    soon = timezone.now() + timedelta(days=5)
    grant(company, "100")
    promo = grant(company, "30", kind="grant", expires_at=soon)
    summary = credit_summary(company)
    assert (summary.balance, summary.paid, summary.promotional) == (D(130), D(100), D(30))
    assert [(e.entry_id, e.kind, e.remaining) for e in summary.expiring] == [
        (promo.pk, "grant", D(30))
    ]


def test_usage_draws_from_soonest_expiring_credit_first_then_never_expiring(company):
    now = timezone.now()
    never = grant(company, "100")
    late = grant(company, "20", kind="grant", expires_at=now + timedelta(days=30))
    soon = grant(company, "10", expires_at=now + timedelta(days=3))
    _spend(company, "4")
    assert (remaining(soon), remaining(late), remaining(never)) == (D(6), D(20), D(100))
    _spend(company, "16.5")  # empties `soon`, then eats into `late`, one debit
    assert (remaining(soon), remaining(late), remaining(never)) == (D(0), D("9.5"), D(100))
    _spend(company, "19.5")
    assert (remaining(late), remaining(never)) == (D(0), D(90))
    assert lot_of(late).consumed == D(20)
    assert current_balance(company) == D(90)


def test_consumption_without_credit_becomes_debt_that_new_credit_pays_first(company):
    grant(company, "5")
    assert _spend(company, "8") == D(-3)
    assert _debt(company) == D(3)
    small = grant(company, "2", kind="grant", expires_at=timezone.now() + timedelta(days=1))
    assert (lot_of(small).consumed, lot_of(small).remaining, _debt(company)) == (D(2), 0, D(1))
    big = grant(company, "10")
    assert (lot_of(big).consumed, lot_of(big).remaining, _debt(company)) == (D(1), D(9), 0)
    assert current_balance(company) == D(9)


def test_expired_credit_is_never_consumed_even_before_the_write_off(company):
    past = post_entry(
        company=company,
        kind="grant",
        amount="50",
        idempotency_key="old-grant",
        expires_at=timezone.now() - timedelta(minutes=1),
    ).entry
    _spend(company, "7")
    assert remaining(past) == D(50) and _debt(company) == D(7)
    assert current_balance(company) == D(43)  # still in the balance until expire_credits runs


def test_refund_is_paid_credit_back(company):
    entry = refund_credits(company=company, amount="12.5", reason="Failed generations").entry
    assert (entry.kind, lot_of(entry).funding, entry.balance_after) == ("refund", "paid", D("12.5"))


def test_adjustments_move_both_ways_and_negative_ones_consume_credit(company):
    soon = grant(company, "10", expires_at=timezone.now() + timedelta(days=1))
    never = grant(company, "10")
    plus = adjust_credits(company=company, amount="2", reason="Goodwill").entry
    assert lot_of(plus).funding == "paid"
    minus = adjust_credits(company=company, amount="-11", reason="Correct a typo").entry
    assert minus.balance_after == D(11)
    assert (remaining(soon), remaining(never), remaining(plus)) == (0, D(9), D(2))
    assert not CreditLot.objects.filter(entry=minus).exists()


def test_usage_corrections_consume_or_give_back_paid_credit(company):
    grant(company, "10")
    up = post_entry(
        company=company, kind="usage_correction", amount="-1.5", idempotency_key="rp:1"
    ).entry
    down = post_entry(
        company=company, kind="usage_correction", amount="0.25", idempotency_key="rp:2"
    ).entry
    assert not CreditLot.objects.filter(entry=up).exists()
    assert (lot_of(down).funding, lot_of(down).expires_at, lot_of(down).amount) == (
        "paid",
        None,
        D("0.25"),
    )
    assert current_balance(company) == D("8.75")


def test_reason_is_required_and_amounts_are_checked(company):
    with pytest.raises(InvalidInput) as err:
        grant_credits(company=company, amount="5", reason="  ")
    assert err.value.fields == {"reason": "is required"}
    with pytest.raises(InvalidInput):
        grant_credits(company=company, amount="-5", reason="x")
    with pytest.raises(InvalidInput):
        adjust_credits(company=company, amount="0", reason="x")
    with pytest.raises(InvalidInput):
        grant_credits(
            company=company, amount="5", reason="x", expires_at=timezone.now() - timedelta(1)
        )
    with pytest.raises(InvalidInput):
        post_credit(
            company=company,
            kind="refund",
            amount="5",
            reason="x",
            expires_at=timezone.now() + timedelta(1),
        )
    assert not LedgerEntry.objects.filter(company=company).exists()


def test_expiry_entries_cannot_be_posted_directly(company):
    grant(company, "5")
    with pytest.raises(ServiceError):
        post_entry(company=company, kind="expiry", amount="-5", idempotency_key="x")


def test_replayed_posting_returns_the_first_and_conflicting_replay_is_refused(company):
    first = grant_credits(company=company, amount="5", reason="r", idempotency_key="k")
    again = grant_credits(company=company, amount="5", reason="r", idempotency_key="k")
    assert first.created and not again.created and again.entry.pk == first.entry.pk
    with pytest.raises(IdempotencyConflict):
        grant_credits(company=company, amount="6", reason="r", idempotency_key="k")
    with pytest.raises(IdempotencyConflict):
        grant_credits(company=company, amount="5", kind="grant", reason="r", idempotency_key="k")
    assert LedgerEntry.objects.filter(company=company).count() == 1
    assert CreditLot.objects.filter(company=company).count() == 1
    assert AuditEvent.objects.filter(company=company).count() == 1
    assert current_balance(company) == D(5)


def test_same_key_in_two_companies_is_two_postings(company, other_company):
    grant_credits(company=company, amount="5", reason="r", idempotency_key="k")
    grant_credits(company=other_company, amount="5", reason="r", idempotency_key="k")
    assert current_balance(company) == current_balance(other_company) == D(5)


def test_a_usage_debit_allocates_in_one_extra_statement(company):
    grant(company, "5", expires_at=timezone.now() + timedelta(days=1))
    grant(company, "5")
    with CaptureQueriesContext(connection) as queries:
        post_entry(company=company, kind="usage", amount="-7", idempotency_key="u:1")
    lot_sql = [q["sql"] for q in queries.captured_queries if "billing_creditlot" in q["sql"]]
    assert len(lot_sql) == 1
    assert _debt(company) == 0 and current_balance(company) == D(3)


def test_tenths_and_tiny_amounts_allocate_exactly(company):
    entry = grant(company, "0.3")
    make_usage(company, cost="0.1")
    make_usage(company, cost="0.000000000007")
    lot = lot_of(entry)
    assert (lot.consumed, lot.remaining) == (D("0.100000000007"), D("0.199999999993"))


def test_summary_counts_unwritten_expired_credit_but_does_not_list_it_as_expiring(company):
    post_entry(
        company=company,
        kind="grant",
        amount="4",
        idempotency_key="stale",
        expires_at=timezone.now() - timedelta(minutes=1),
    )
    live = grant(company, "6", kind="grant", expires_at=timezone.now() + timedelta(days=1))
    _spend(company, "1")
    summary = credit_summary(company)
    assert (summary.balance, summary.paid, summary.promotional, summary.debt) == (
        D(9),
        0,
        D(9),
        0,
    )
    assert [e.entry_id for e in summary.expiring] == [live.pk]
    assert summary.expiring[0].remaining == D(5)

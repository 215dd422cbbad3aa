"""A batch spanning several companies debits them together (set-based on PostgreSQL)
with exactly the ledger, lots, balances, rollup and alerts of recording one by one."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.ledger import post_entry
from billing.models import BillingAlert, CreditBalance, CreditLot, LedgerEntry
from tests.conftest import give_credit, make_company, make_event, make_price
from usage.models import UsageDailyRollup
from usage.recording import RecordResult, record_usage, record_usage_batch

pytestmark = pytest.mark.django_db

# One event costs 1000 x 2.50/M + 500 x 10/M = 0.0075 with make_price's defaults.


def _world(tag: str, soon, later):
    """Five companies: expiring lots, one going into debt, one with a monthly limit
    whose 80% line the batch crosses, one with no balance row, one only unpriced."""
    lots = make_company(name=f"lots {tag}")
    for amount, expires_at in (("0.004", later), ("0.003", soon), ("0.05", None)):
        post_entry(
            company=lots,
            kind=LedgerEntry.Kind.GRANT,
            amount=Decimal(amount),
            idempotency_key=f"grant-{tag}-{amount}",
            expires_at=expires_at,
        )
    debt = make_company(name=f"debt {tag}")
    give_credit(debt, "0.01")
    limited = make_company(
        name=f"limited {tag}",
        monthly_spend_limit=Decimal("0.025"),
        low_balance_threshold=Decimal("0.05"),
    )
    give_credit(limited, "0.06")
    fresh = make_company(name=f"fresh {tag}")
    unpriced = make_company(name=f"unpriced {tag}")
    give_credit(unpriced, "1")
    return [lots, debt, limited, fresh, unpriced]


def _events(companies):
    lots, debt, limited, fresh, unpriced = companies
    order = [limited, lots, debt, fresh, lots, debt, limited, unpriced, lots, limited, debt]
    events = [
        make_event(c, idempotency_key=f"k{i}", draft_job_id=f"d{i}") for i, c in enumerate(order)
    ]
    events.append(make_event(unpriced, idempotency_key="u", model="nobody-prices-me"))
    events.append(make_event(lots, idempotency_key="k0"))  # same key, other company: new
    events.append(
        make_event(debt, idempotency_key="k2", draft_job_id="d2")
    )  # replay within the batch
    return events


def _snapshot(company):
    ledger = list(
        LedgerEntry.objects.filter(company=company)
        .order_by("id")
        .values_list("kind", "amount", "balance_after", "reason")
    )
    lots = list(
        CreditLot.objects.filter(company=company)
        .order_by("id")
        .values_list("funding", "amount", "consumed", "remaining", "expires_at")
    )
    balance = CreditBalance.objects.filter(company=company).values_list("balance", "debt").first()
    rollup = sorted(
        UsageDailyRollup.objects.filter(company=company).values_list(
            "day", "model", "status", "generations", "questions", "cost", "unpriced"
        )
    )
    alerts = list(
        BillingAlert.objects.filter(company=company)
        .order_by("id")
        .values_list("kind", "period", "threshold")
    )
    usage_sum = sum((e[1] for e in ledger), Decimal(0))
    return ledger, lots, balance, rollup, alerts, usage_sum


def _outcome(o):
    assert isinstance(o, RecordResult)
    return (o.created, o.balance, o.usage.idempotency_key, o.usage.cost)


def test_multi_company_batch_equals_one_by_one():
    make_price()
    now = timezone.now()
    soon, later = now + timedelta(days=2), now + timedelta(days=5)
    singles, batched = _world("single", soon, later), _world("batch", soon, later)

    single = [record_usage(e, now=now) for e in _events(singles)]
    batch = record_usage_batch(_events(batched), now=now)

    assert [_outcome(o) for o in batch] == [_outcome(o) for o in single]
    for one, many in zip(singles, batched, strict=True):
        expected = _snapshot(one)
        assert _snapshot(many) == expected  # alerts: the same crossings (kind, period, line)
        ledger, _, balance, *_ = expected
        assert balance is None or balance[0] == sum(e[1] for e in ledger)  # balance = sum(ledger)
    lots, debt, limited, fresh, _ = (_snapshot(c) for c in batched)
    # what the scenario is meant to exercise, so that the equality above means something
    assert [lot[2] for lot in lots[1]] == [Decimal("0.004"), Decimal("0.003"), Decimal("0.023")]
    assert debt[2] == (Decimal("-0.0125"), Decimal("0.0125"))
    assert {a[0] for a in limited[4]} == {BillingAlert.Kind.SPEND_80, BillingAlert.Kind.LOW_BALANCE}
    # A batch evaluates alerts once per company (as before this change): they carry
    # the balance and spend after the whole batch, not after the crossing event.
    raised = BillingAlert.objects.filter(company=batched[2]).values_list(
        "balance", "month_to_date_spend"
    )
    assert set(raised) == {(Decimal("0.0375"), None), (Decimal("0.0375"), Decimal("0.0225"))}
    assert fresh[2] == (Decimal("-0.0075"), Decimal("0.0075"))


def _statements(n_companies: int) -> int:
    companies = [
        make_company(monthly_spend_limit=Decimal("1000"), low_balance_threshold=Decimal(0))
        for _ in range(n_companies)
    ]
    for company in companies:
        give_credit(company, "10")
    events = [make_event(c) for c in companies for _ in range(3)]
    with CaptureQueriesContext(connection) as captured:
        outcomes = record_usage_batch(events)
    assert all(isinstance(o, RecordResult) and o.created for o in outcomes)
    debited = LedgerEntry.objects.filter(usage_id__in=[o.usage.pk for o in outcomes])
    assert debited.count() == len(events)
    return len(captured)


def test_batch_statement_count_does_not_grow_with_companies():
    make_price()
    assert _statements(2) == _statements(12)

"""Real threads: concurrent multi-company batches (and top-ups) neither deadlock
nor lose an update, and every company's lots and ledger stay consistent."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.credits import grant_credits
from billing.invariants import check_ledger
from billing.models import CreditBalance, CreditLot, LedgerEntry
from tests.billing.test_concurrency import _in_threads
from tests.conftest import make_company, make_event
from usage.recording import RecordResult, record_usage_batch

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_multi_company_batches_keep_every_company_consistent():
    companies = [make_company() for _ in range(6)]
    soon = timezone.now() + timedelta(days=2)
    for n, company in enumerate(companies):
        grant_credits(company=company, amount="0.2", kind="grant", reason="r", expires_at=soon)
        if n:  # company 0 has only expiring credit and ends in debt; the others vary
            grant_credits(company=company, amount=str(n * Decimal("0.3")), reason="r")
    batches = []
    for i in range(8):  # each batch visits the companies in its own order
        order = random.Random(i).sample(companies * 3, k=len(companies) * 3)
        batches.append([make_event(c, cost=Decimal("0.05") + Decimal(i) / 1000) for c in order])

    def record(i: int) -> None:
        outcomes = record_usage_batch(batches[i])
        assert all(isinstance(o, RecordResult) and o.created for o in outcomes)
        if i % 3 == 0:  # credit arrives while the batches consume (and pays debt off)
            grant_credits(
                company=companies[i % 6], amount="0.1", reason="t", idempotency_key=f"t{i}"
            )

    assert _in_threads(8, record) == []
    assert CreditBalance.objects.get(company=companies[0]).debt > 0
    for company in companies:
        ledger = LedgerEntry.objects.filter(company=company)
        costs = [e.cost for batch in batches for e in batch if e.company == str(company.pk)]
        assert ledger.filter(kind="usage").count() == len(costs) == 24
        balance = CreditBalance.objects.get(company=company)
        assert balance.balance == sum(e.amount for e in ledger)
        lots = CreditLot.objects.filter(company=company)
        assert balance.balance == sum(lot.remaining for lot in lots) - balance.debt
        assert check_ledger(company_id=company.pk) == []

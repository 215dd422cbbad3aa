"""Real threads against PostgreSQL: no lost update, no double posting, lots consistent."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import close_old_connections, connection
from django.utils import timezone

from billing.credits import grant_credits
from billing.invariants import check_ledger
from billing.models import CreditBalance, CreditLot, LedgerEntry
from billing.services import post_entry
from tests.conftest import make_company, make_event, requires_postgres
from usage.models import QuestionGenerationUsage
from usage.services import record_usage

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("flushable_ledger"),
    requires_postgres,
]


def _in_threads(count: int, work) -> list[BaseException]:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            work(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    close_old_connections()
    return errors


def test_50_threads_recording_usage_lose_no_update_and_allocate_exactly():
    company = make_company()
    soon = timezone.now() + timedelta(days=2)
    grant_credits(company=company, amount="1", kind="grant", reason="r", expires_at=soon)
    grant_credits(company=company, amount="2.5", reason="r")
    events = [make_event(company, cost=Decimal("0.1") + Decimal(i) / 1000) for i in range(50)]

    def record(i: int) -> None:
        record_usage(events[i], company=company)
        if i % 10 == 0:  # credit arrives while others consume (and pays debt off)
            grant_credits(company=company, amount="0.3", reason="top-up", idempotency_key=f"t{i}")

    assert _in_threads(50, record) == []
    ledger = LedgerEntry.objects.filter(company=company)
    total_cost = sum(e.cost for e in events)
    assert QuestionGenerationUsage.objects.filter(company=company).count() == 50
    assert ledger.filter(kind="usage").count() == 50
    balance = CreditBalance.objects.get(company=company)
    assert balance.balance == sum(e.amount for e in ledger) == Decimal("5.0") - total_cost
    lots = CreditLot.objects.filter(company=company)
    assert balance.balance == sum(lot.remaining for lot in lots) - balance.debt
    assert check_ledger(company_id=company.pk) == []


def test_20_threads_replaying_one_posting_key_create_exactly_one_entry():
    company = make_company()
    results = []

    def replay(i: int) -> None:
        results.append(
            post_entry(company=company, kind="purchase", amount="7", idempotency_key="same").created
        )

    assert _in_threads(20, replay) == []
    assert results.count(True) == 1 and len(results) == 20
    assert LedgerEntry.objects.filter(company=company).count() == 1
    assert CreditLot.objects.filter(company=company).count() == 1
    assert CreditBalance.objects.get(company=company).balance == Decimal(7)


def test_expiry_racing_consumption_never_spends_credit_twice():
    company = make_company()
    entry = post_entry(
        company=company,
        kind="grant",
        amount="5",
        idempotency_key="g",
        expires_at=timezone.now() + timedelta(seconds=1),
    ).entry
    post_entry(company=company, kind="purchase", amount="5", idempotency_key="p")
    from billing.credits import expire_lot

    later = timezone.now() + timedelta(seconds=2)

    def work(i: int) -> None:
        if i < 5:
            expire_lot(lot_id=entry.lot.pk, now=later)
        else:
            record_usage(make_event(company, cost="0.5"), company=company)

    assert _in_threads(15, work) == []
    assert LedgerEntry.objects.filter(company=company, kind="expiry").count() <= 1
    assert check_ledger(company_id=company.pk) == []

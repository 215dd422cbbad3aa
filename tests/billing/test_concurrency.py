"""Real threads against PostgreSQL: no lost update, no double posting, lots consistent."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import close_old_connections, connection
from django.utils import timezone

from billing.credits import expire_lot, grant_credits
from billing.invariants import check_ledger
from billing.ledger import post_entry
from billing.models import BillingAlert, CreditBalance, CreditLot, LedgerEntry
from tests.conftest import make_company, make_event
from usage.models import QuestionGenerationUsage
from usage.recording import record_usage

pytestmark = [
    pytest.mark.django_db(transaction=True),
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
    later = timezone.now() + timedelta(seconds=2)

    def work(i: int) -> None:
        if i < 5:
            expire_lot(lot_id=entry.lot.pk, now=later)
        else:
            record_usage(make_event(company, cost="0.5"), company=company)

    assert _in_threads(15, work) == []
    assert LedgerEntry.objects.filter(company=company, kind="expiry").count() <= 1
    assert check_ledger(company_id=company.pk) == []


def test_expire_credits_on_several_hosts_at_once_writes_each_lot_off_once():
    companies = [make_company() for _ in range(3)]
    for n, company in enumerate(companies):
        for i in range(4):
            post_entry(
                company=company,
                kind="grant",
                amount=f"{i + 1}.25",
                idempotency_key=f"g{n}-{i}",
                expires_at=timezone.now() - timedelta(seconds=1),
            )

    def run(i: int) -> None:
        call_command("expire_credits", "--json", stdout=StringIO())

    assert _in_threads(6, run) == []
    assert LedgerEntry.objects.filter(kind="expiry").count() == 12
    assert not CreditLot.objects.filter(remaining__gt=0).exists()
    assert check_ledger() == []


def test_concurrent_debits_crossing_the_threshold_raise_one_alert():
    company = make_company(billing_emails="ap@example.com", low_balance_threshold=Decimal(10))
    grant_credits(company=company, amount="25", reason="r")

    def debit(i: int) -> None:
        record_usage(make_event(company, cost="1"), company=company)

    assert _in_threads(20, debit) == []
    assert BillingAlert.objects.filter(company=company, kind="low_balance").count() == 1
    alert = BillingAlert.objects.get(company=company)
    assert alert.balance == Decimal(9) and alert.emailed_at is not None

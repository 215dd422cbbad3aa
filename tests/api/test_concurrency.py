"""Two requests with the same idempotency key at the same moment record exactly one row."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from billing.models import LedgerEntry
from tests.api.conftest import api_client_for, usage_payload
from tests.conftest import give_credit, make_company, make_price
from usage.models import QuestionGenerationUsage, UsageDailyRollup


def _in_threads(count: int, work) -> list:
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.django_db(transaction=True)
def test_concurrent_same_key_records_exactly_once():
    company = make_company()
    make_price()
    give_credit(company, "10")
    api = api_client_for()
    payload = usage_payload(company, idempotency_key="same")

    responses = _in_threads(6, lambda i: api.post("/usage", payload))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert QuestionGenerationUsage.objects.count() == 1
    assert LedgerEntry.objects.filter(kind="usage").count() == 1
    assert UsageDailyRollup.objects.get().generations == 1
    company.credit_balance.refresh_from_db()
    assert str(company.credit_balance.balance) == "9.992500000000"


@pytest.mark.django_db(transaction=True)
def test_concurrent_overlapping_batches_record_each_event_once():
    company = make_company()
    make_price()
    give_credit(company, "10")
    api = api_client_for()
    events = [usage_payload(company, idempotency_key=f"k{i}") for i in range(50)]

    def send(i: int):
        # Each batch sends the keys in another order: the insert sorts them, so no deadlock.
        ordered = events if i % 2 else list(reversed(events))
        return api.post("/usage/batch", {"events": ordered})

    responses = _in_threads(4, send)

    assert all(r.status_code == 200 for r in responses)
    outcomes = [res["outcome"] for r in responses for res in r.json()["results"]]
    assert outcomes.count("created") == 50 and outcomes.count("replayed") == 150
    assert QuestionGenerationUsage.objects.count() == 50
    assert LedgerEntry.objects.filter(kind="usage").count() == 50
    assert UsageDailyRollup.objects.get().generations == 50
    company.credit_balance.refresh_from_db()
    assert str(company.credit_balance.balance) == "9.625000000000"


@pytest.mark.django_db
def test_the_ledger_truncate_guard_is_back_after_those_tests():
    with connection.cursor() as cursor:
        cursor.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = 'ledger_no_truncate'")
        assert cursor.fetchone() == ("O",)

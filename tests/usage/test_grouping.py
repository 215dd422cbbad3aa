"""Group commit of single posts: concurrent events of a process share one transaction,
and each still answers exactly as it would alone."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection

from billing.invariants import check_ledger
from billing.models import LedgerEntry
from core.errors import InvalidInput
from tests.api.conftest import api_client_for, usage_payload
from tests.conftest import give_credit, make_company, make_event, make_price
from usage.grouping import GroupCommit
from usage.models import QuestionGenerationUsage
from usage.recording import RecordResult, record_usage_batch

# 1000 prompt + 500 completion tokens at 2.50 / 10.00 per million.
COST = Decimal("0.007500000000")


class HeldFirstGroup:
    """record_many for a GroupCommit: holds the first group until `behind` events
    queue behind it, so they are written as one group (deterministic grouping)."""

    def __init__(self, behind: int, fail: bool = False) -> None:
        self.behind, self.fail = behind, fail
        self.sizes: list[int] = []
        self.group: GroupCommit | None = None

    def __call__(self, events, **kwargs):
        self.sizes.append(len(events))
        if len(self.sizes) == 1:
            deadline = time.monotonic() + 10
            while self.group.waiting() < self.behind and time.monotonic() < deadline:
                time.sleep(0.005)
        if self.fail:
            raise RuntimeError("the group's transaction failed")
        return record_usage_batch(events, **kwargs)


def _start(work, i: int, results: list) -> threading.Thread:
    """Run work(i) on a thread of its own (its own connection); its outcome goes to results[i]."""

    def run() -> None:
        try:
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - the test looks at each thread's outcome
            results[i] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _grouped(events, company, *, fail: bool = False, max_group: int = 64):
    """Record `events` from one thread each: the first alone, the rest in groups after it."""
    recorder = HeldFirstGroup(behind=len(events) - 1, fail=fail)
    group = recorder.group = GroupCommit(max_group=max_group, record_many=recorder)
    results: list = [None] * len(events)
    record = lambda i: group.record(events[i], company)  # noqa: E731
    threads = [_start(record, 0, results)]
    while not recorder.sizes:  # the first thread leads; the others queue behind it
        time.sleep(0.005)
    threads += [_start(record, i, results) for i in range(1, len(events))]
    for thread in threads:
        thread.join()
    return results, recorder.sizes


@pytest.mark.django_db(transaction=True)
def test_concurrent_events_share_a_transaction_and_each_is_debited_once():
    company = make_company()
    make_price()
    give_credit(company, "10")
    events = [make_event(company) for _ in range(8)]

    results, sizes = _grouped(events, company)

    assert sizes == [1, 7]
    assert all(isinstance(r, RecordResult) and r.created for r in results)
    assert QuestionGenerationUsage.objects.count() == 8
    assert LedgerEntry.objects.filter(kind="usage").count() == 8
    # Each event answers with the balance right after its own debit, as one by one.
    balances = sorted((r.balance for r in results), reverse=True)
    assert balances == [Decimal("10") - COST * n for n in range(1, 9)]
    company.credit_balance.refresh_from_db()
    assert company.credit_balance.balance == Decimal("10") - 8 * COST
    assert check_ledger(company_id=company.pk) == []


@pytest.mark.django_db(transaction=True)
def test_a_bad_event_fails_alone_in_its_group():
    company = make_company()
    make_price()
    events = [make_event(company) for _ in range(4)]
    events[2] = make_event(company, prompt_tokens=-1)

    results, sizes = _grouped(events, company)

    assert sizes == [1, 3]
    assert isinstance(results[2], InvalidInput)
    assert results[2].fields == {"prompt_tokens": "must not be negative"}
    assert [isinstance(r, RecordResult) and r.created for i, r in enumerate(results) if i != 2] == [True] * 3  # fmt: skip
    assert QuestionGenerationUsage.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_the_same_key_twice_in_a_group_is_recorded_once_and_replayed():
    company = make_company()
    make_price()
    first = make_event(company)
    events = [make_event(company), first, first]

    results, sizes = _grouped(events, company)

    assert sizes == [1, 2]
    assert sorted(r.created for r in results[1:]) == [False, True]
    assert results[1].usage.pk == results[2].usage.pk
    assert QuestionGenerationUsage.objects.filter(idempotency_key=first.idempotency_key).count() == 1  # fmt: skip
    assert LedgerEntry.objects.filter(kind="usage").count() == 2


@pytest.mark.django_db(transaction=True)
def test_when_the_group_fails_each_event_is_recorded_alone():
    company = make_company()
    make_price()
    give_credit(company, "10")
    events = [make_event(company) for _ in range(5)]

    results, sizes = _grouped(events, company, fail=True)

    assert sizes == [1, 4]
    assert all(isinstance(r, RecordResult) and r.created for r in results)
    assert QuestionGenerationUsage.objects.count() == 5
    assert LedgerEntry.objects.filter(kind="usage").count() == 5
    assert check_ledger(company_id=company.pk) == []


def _counting(calls: list):
    def record_many(events, **kwargs):
        calls.append(len(events))
        return record_usage_batch(events, **kwargs)

    return record_many


@pytest.mark.django_db(transaction=True)
def test_a_lone_event_is_a_group_of_one_and_waits_for_nothing():
    company = make_company()
    make_price()
    calls: list[int] = []

    result = GroupCommit(record_many=_counting(calls)).record(make_event(company), company)

    assert calls == [1] and result.created
    assert QuestionGenerationUsage.objects.get().pk == result.usage.pk


@pytest.mark.django_db(transaction=True)
def test_more_events_than_a_group_holds_are_each_recorded_in_their_turn():
    company = make_company()
    make_price()
    events = [make_event(company) for _ in range(7)]

    results, sizes = _grouped(events, company, max_group=2)

    assert sizes == [1, 2, 2, 2]
    assert all(r.created for r in results)
    assert QuestionGenerationUsage.objects.count() == 7


@pytest.mark.django_db
def test_inside_a_transaction_an_event_is_recorded_alone(company, price):
    # Its group's commit would wait for this transaction: the others could not answer.
    calls: list[int] = []

    result = GroupCommit(record_many=_counting(calls)).record(make_event(company), company)

    assert calls == [] and result.created


@pytest.mark.django_db
@pytest.mark.parametrize("grouped", [True, False])
def test_the_single_post_answers_the_same_grouped_or_not(settings, company, price, grouped):
    settings.USAGE_GROUP_COMMIT = grouped
    api = api_client_for(company)
    payload = usage_payload(company, idempotency_key="k")

    created, replayed = api.post("/usage", payload), api.post("/usage", payload)

    assert (created.status_code, replayed.status_code) == (201, 200)
    assert created.json() == replayed.json()
    assert QuestionGenerationUsage.objects.count() == 1

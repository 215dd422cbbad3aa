"""record_usage_batch: the same rows, rollup and ledger as record_usage one by one."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.errors import CompanyNotFound
from billing.models import LedgerEntry
from core.errors import ServiceError
from tests.conftest import (
    give_credit,
    make_company,
    make_event,
    make_job,
    make_price,
)
from usage.errors import CrossTenantJob
from usage.models import QuestionGenerationUsage, UsageDailyRollup
from usage.recording import RecordResult, record_usage, record_usage_batch

pytestmark = pytest.mark.django_db

ROW_FIELDS = [
    "draft_job_id",
    "status",
    "model",
    "prompt_tokens",
    "cached_prompt_tokens",
    "completion_tokens",
    "question_count",
    "cost",
    "cost_source",
    "price_id",
    "idempotency_key",
    "occurred_at",
    "occurred_on",
    "metadata",
    "processing_time_ms",
]


def _events(company, job, boundary, foreign):
    at = boundary - timedelta(days=1)
    return [
        make_event(company, idempotency_key="draft", draft_job_id="tmp-1", occurred_at=at),
        make_event(company, idempotency_key="linked", job_id=str(job.pk), occurred_at=at),
        make_event(company, idempotency_key="saved-draft", draft_job_id="d-saved"),
        make_event(company, idempotency_key="job-id-draft", job_id="not-saved-yet"),
        make_event(company, idempotency_key="reported", cost="0.1234567", draft_job_id="x"),
        make_event(company, idempotency_key="unpriced", model="nobody-prices-me", job_id="y"),
        make_event(
            company,
            idempotency_key="before",
            occurred_at=boundary - timedelta(microseconds=1),
            draft_job_id="z",
            cached_prompt_tokens=300,
            metadata={"a": [1, 2]},
        ),
        make_event(
            company,
            idempotency_key="at",
            occurred_at=boundary,
            draft_job_id="z",
            processing_time_ms=1234,
        ),
        make_event(
            company, idempotency_key="draft", draft_job_id="tmp-1", occurred_at=at
        ),  # replay
        make_event(
            company, idempotency_key="linked", job_id=str(job.pk), prompt_tokens=1
        ),  # conflict
        make_event(company, idempotency_key="bad", prompt_tokens=-1),
        make_event(company, idempotency_key="reported", cost="0.2", draft_job_id="x"),  # conflict
        make_event(company, idempotency_key="rep", job_id=str(foreign.pk)),  # cross-tenant
        make_event(company, idempotency_key="rep", draft_job_id="ok"),  # then fine on its own
    ]


def _world(boundary):
    company = make_company(timezone="America/New_York")
    give_credit(company, "3")
    job = make_job(company, draft_job_id="d-saved")
    foreign = make_job(make_company())
    return company, job, foreign


def _snapshot(company):
    rows = [
        tuple(str(getattr(u, f)) for f in ROW_FIELDS)
        + (u.job is not None, u.reconciled_at is not None)
        for u in QuestionGenerationUsage.objects.filter(company=company).order_by("idempotency_key")
    ]
    rollup = sorted(
        UsageDailyRollup.objects.filter(company=company).values_list(
            "day",
            "model",
            "status",
            "generations",
            "questions",
            "prompt_tokens",
            "cached_prompt_tokens",
            "completion_tokens",
            "cost",
            "unpriced",
        )
    )
    ledger = sorted(
        LedgerEntry.objects.filter(company=company, kind="usage").values_list(
            "amount", "balance_after", "reason"
        )
    )
    return rows, rollup, ledger, company.credit_balance.balance


def _outcome(o):
    if isinstance(o, RecordResult):
        return ("ok", o.created, o.balance, o.usage.idempotency_key)
    return ("error", o.code, tuple(sorted(o.fields)))


def _one_by_one(events, company, now):
    outcomes = []
    for event in events:
        try:
            outcomes.append(record_usage(event, company=company, now=now))
        except ServiceError as exc:
            outcomes.append(exc)
    return outcomes


def test_batch_equals_one_by_one():
    boundary = timezone.now() - timedelta(days=10)
    make_price(
        "gpt-test", output="10", effective_from=boundary - timedelta(days=99), effective_to=boundary
    )
    make_price("gpt-test", output="20", effective_from=boundary)
    now = timezone.now()
    single_company, single_job, single_foreign = _world(boundary)
    batch_company, batch_job, batch_foreign = _world(boundary)

    single_events = _events(single_company, single_job, boundary, single_foreign)
    single = _one_by_one(single_events, single_company, now)
    batch = record_usage_batch(_events(batch_company, batch_job, boundary, batch_foreign), now=now)

    assert [_outcome(o) for o in batch] == [_outcome(o) for o in single]
    single_snapshot, batch_snapshot = _snapshot(single_company), _snapshot(batch_company)
    assert batch_snapshot == single_snapshot
    assert len(single_snapshot[0]) == 9 and single_snapshot[3] < Decimal("3")


def test_batch_refuses_unknown_companies_and_foreign_jobs_per_event(company, other_company, price):
    foreign = make_job(other_company)
    events = [
        make_event(company),
        make_event(company, job_id=str(foreign.pk)),
        make_event(company, idempotency_key="k"),
    ]
    events.insert(1, dataclasses.replace(make_event(company), company="nope"))
    outcomes = record_usage_batch(events)
    assert isinstance(outcomes[0], RecordResult) and isinstance(outcomes[3], RecordResult)
    assert isinstance(outcomes[1], CompanyNotFound) and isinstance(outcomes[2], CrossTenantJob)
    assert QuestionGenerationUsage.objects.count() == 2


def test_batch_without_debit_leaves_the_balance(company, price):
    give_credit(company, "5")
    outcomes = record_usage_batch([make_event(company), make_event(company)], debit=False)
    assert [o.balance for o in outcomes] == [Decimal("5"), Decimal("5")]
    assert not LedgerEntry.objects.filter(kind="usage").exists()


def test_single_recording_query_count(company, price, django_assert_max_num_queries):
    give_credit(company, "5")
    job = make_job(company)
    # price, draft lock, jobs, usage insert, rollup, balance, credit allocation, ledger;
    # + SAVEPOINT/RELEASE in the test transaction
    with django_assert_max_num_queries(10):
        record_usage(make_event(company, job_id=str(job.pk)), company=company)

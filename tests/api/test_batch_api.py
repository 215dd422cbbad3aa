"""POST /api/v1/usage/batch: results in order, mixed good and bad events, limits."""

from __future__ import annotations

import pytest

from billing.models import LedgerEntry
from tests.api.conftest import assert_error, usage_payload
from tests.conftest import give_credit, make_job
from usage.models import QuestionGenerationUsage, RejectedEvent

pytestmark = pytest.mark.django_db


def test_mixed_batch_answers_each_event_in_order(api, company, other_company, price):
    give_credit(company, "10")
    api.post("/usage", usage_payload(company, idempotency_key="old"))
    foreign = make_job(other_company)
    events = [
        usage_payload(company, idempotency_key="a"),
        usage_payload(company, idempotency_key="b", prompt_tokens=-5),
        usage_payload(company, idempotency_key="old"),  # replay of an earlier request
        usage_payload(company, idempotency_key="old", prompt_tokens=1),  # conflict
        usage_payload(company, company="org-missing", idempotency_key="c"),
        usage_payload(company, idempotency_key="d", draft_job_id=None, job_id=str(foreign.pk)),
        "not an object",
        usage_payload(company, idempotency_key="e", model="unknown-model"),
        usage_payload(company, idempotency_key="a"),  # repeat within the batch: a replay
        usage_payload(company, company=None, idempotency_key="f"),  # no company, platform key
    ]
    response = api.post("/usage/batch", {"events": events})
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(len(events)))
    assert [(r["outcome"], r["status"]) for r in results] == [
        ("created", 201),
        ("error", 422),
        ("replayed", 200),
        ("error", 409),
        ("error", 404),
        ("error", 403),
        ("error", 422),
        ("created", 201),
        ("replayed", 200),
        ("error", 422),
    ]
    assert results[9]["error"]["fields"] == {"company": "is required"}
    assert results[1]["error"]["fields"] == {"prompt_tokens": "must not be negative"}
    assert results[4]["error"]["code"] == "company_not_found"
    assert results[6]["error"]["fields"] == {"event": "must be a JSON object"}
    assert results[8]["usage"] == results[0]["usage"]
    assert results[7]["usage"]["cost_source"] == "unpriced"
    keys = set(QuestionGenerationUsage.objects.values_list("idempotency_key", flat=True))
    assert keys == {"old", "a", "e"}
    assert LedgerEntry.objects.filter(kind="usage").count() == 2  # "e" is unpriced
    assert RejectedEvent.objects.get().idempotency_key == "c"


def test_balances_in_a_batch_follow_each_debit(api, company, price):
    give_credit(company, "1")
    events = [usage_payload(company, idempotency_key=f"k{i}") for i in range(3)]
    results = api.post("/usage/batch", {"events": events}).json()["results"]
    assert [r["usage"]["balance"] for r in results] == ["0.9925", "0.985", "0.9775"]
    entries = LedgerEntry.objects.filter(kind="usage").order_by("balance_after")
    assert [str(e.balance_after) for e in entries] == [
        "0.977500000000",
        "0.985000000000",
        "0.992500000000",
    ]
    assert str(company.credit_balance.balance) == "0.977500000000"


def test_company_key_batch_refuses_other_companies_per_event(
    company_api, company, other_company, price
):
    events = [
        usage_payload(company, idempotency_key="mine"),
        usage_payload(other_company, idempotency_key="theirs"),
        usage_payload(company, company=None, idempotency_key="default"),
    ]
    results = company_api.post("/usage/batch", {"events": events}).json()["results"]
    assert [r["status"] for r in results] == [201, 403, 201]
    assert not QuestionGenerationUsage.objects.filter(company=other_company).exists()
    assert not RejectedEvent.objects.exists()


def test_batch_over_the_event_limit_is_413(api, company, settings):
    settings.API_MAX_BATCH_EVENTS = 3
    events = [usage_payload(company, idempotency_key=f"k{i}") for i in range(4)]
    assert_error(api.post("/usage/batch", {"events": events}), 413, "batch_too_large")
    assert not QuestionGenerationUsage.objects.exists()


def test_batch_without_events_is_422(api):
    error = assert_error(api.post("/usage/batch", {"rows": []}), 422, "validation_error")
    assert error["fields"] == {"events": "is required"}


def test_batch_of_a_thousand_events_has_a_fixed_query_count(
    api, company, price, django_assert_max_num_queries
):
    give_credit(company, "1000")
    job = make_job(company)
    events = [
        usage_payload(
            company,
            idempotency_key=f"k{i}",
            **({"job_id": str(job.pk), "draft_job_id": None} if i % 2 else {}),
        )
        for i in range(1000)
    ]
    # key, its last_used_at (once a minute), companies, draft locks, jobs, prices, usage insert,
    # rollup, balance, credit allocation (soonest-expiring lots first), ledger; + SAVEPOINT and
    # RELEASE because the test runs inside a transaction.
    with django_assert_max_num_queries(13):
        response = api.post("/usage/batch", {"events": events})
    assert {r["status"] for r in response.json()["results"]} == {201}
    assert QuestionGenerationUsage.objects.count() == 1000

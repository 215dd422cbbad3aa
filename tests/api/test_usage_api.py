"""POST /api/v1/usage: recording, replay, conflict, drafts, tenants, bad input."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import LedgerEntry
from tests.api.conftest import ApiClient, assert_error, usage_payload
from tests.conftest import give_credit, make_company, make_job
from usage.models import QuestionGenerationUsage, RejectedEvent

pytestmark = pytest.mark.django_db


def test_records_prices_and_debits(api, company, price):
    give_credit(company, "100")
    response = api.post("/usage", usage_payload(company, cached_prompt_tokens=400))
    assert response.status_code == 201, response.content
    body = response.json()
    usage = QuestionGenerationUsage.objects.get()
    assert body["id"] == str(usage.pk)
    assert (body["status"], body["job_id"], body["draft_job_id"]) == ("draft", None, "draft-1")
    # 600 x 2.50 + 400 x 1.25 + 500 x 10.00 per million = 0.007
    assert (body["cost"], body["cost_source"], body["balance"]) == ("0.007", "priced", "99.993")
    assert LedgerEntry.objects.get(usage_id=usage.pk).amount == Decimal("-0.007")


def test_replay_answers_200_with_the_same_body(api, company, price):
    give_credit(company, "10")
    first = api.post("/usage", usage_payload(company, occurred_at="2026-11-01T12:00:00+02:00"))
    give_credit(company, "5")  # the balance moves on; the replay still tells the first answer
    again = api.post("/usage", usage_payload(company, occurred_at="2026-11-01T12:00:00+02:00"))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert QuestionGenerationUsage.objects.count() == 1
    assert LedgerEntry.objects.filter(kind="usage").count() == 1


def test_same_key_with_another_payload_is_a_conflict(api, company, price):
    api.post("/usage", usage_payload(company))
    response = api.post("/usage", usage_payload(company, prompt_tokens=999))
    error = assert_error(response, 409, "idempotency_conflict")
    assert "idempotency_key" in error["fields"]


def test_reported_cost_is_stored_as_reported(api, company, price):
    body = api.post("/usage", usage_payload(company, cost="0.0125")).json()
    assert (body["cost"], body["cost_source"]) == ("0.0125", "reported")


def test_unknown_model_is_accepted_unpriced(api, company, price):
    give_credit(company, "10")
    response = api.post("/usage", usage_payload(company, model="brand-new"))
    assert response.status_code == 201
    body = response.json()
    assert (body["cost"], body["cost_source"], body["balance"]) == (None, "unpriced", "10.00")


def test_usage_for_a_saved_job_links(api, company, price):
    job = make_job(company)
    body = api.post("/usage", usage_payload(company, draft_job_id=None, job_id=str(job.pk))).json()
    assert (body["status"], body["job_id"]) == ("linked", str(job.pk))


def test_draft_usage_arriving_after_its_job_was_saved_links_directly(api, company, price):
    saved = api.post(
        "/jobs", {"company": company.external_id, "title": "QA", "draft_job_id": "d-7"}
    )
    assert saved.status_code == 201
    body = api.post("/usage", usage_payload(company, draft_job_id="d-7")).json()
    assert (body["status"], body["job_id"], body["draft_job_id"]) == (
        "linked",
        saved.json()["id"],
        "d-7",
    )


def test_company_may_be_named_by_external_id(api, company, price):
    response = api.post("/usage", usage_payload(company, company=company.external_id))
    assert response.status_code == 201
    assert response.json()["company"] == str(company.pk)


# --- Tenants --------------------------------------------------------------------------


def test_company_key_is_refused_for_another_company(company_api, other_company, price):
    response = company_api.post("/usage", usage_payload(other_company))
    assert_error(response, 403, "forbidden")
    assert not QuestionGenerationUsage.objects.exists()


def test_company_key_gets_403_for_unknown_companies_too(company_api, price):
    # Same answer as for an existing other company: a key learns nothing about other tenants.
    response = company_api.post("/usage", usage_payload(make_company(), company="org-nope"))
    assert_error(response, 403, "forbidden")
    assert not RejectedEvent.objects.exists()


def test_company_key_may_omit_the_company(company_api, company, price):
    response = company_api.post("/usage", usage_payload(company, company=None))
    assert response.status_code == 201 and response.json()["company"] == str(company.pk)


def test_job_of_another_company_is_refused(api, company, other_company, price):
    foreign = make_job(other_company)
    payload = usage_payload(company, draft_job_id=None, job_id=str(foreign.pk))
    assert_error(api.post("/usage", payload), 403, "job_of_another_company")
    assert not QuestionGenerationUsage.objects.exists()


# --- Unknown company: refused and kept in the inbox ---------------------------------


def test_unknown_company_is_refused_and_kept_for_replay(api, price):
    payload = usage_payload(make_company(), company="org-unmapped", idempotency_key="k-9")
    error = assert_error(api.post("/usage", payload), 404, "company_not_found")
    assert error["fields"] == {"company": "unknown company"}
    rejected = RejectedEvent.objects.get()
    assert (rejected.company_ref, rejected.idempotency_key) == ("org-unmapped", "k-9")
    assert rejected.error_code == "company_not_found" and rejected.payload == payload
    assert rejected.state == "open"


# --- Bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"prompt_tokens": -1}, "prompt_tokens", "must not be negative"),
        ({"prompt_tokens": 1.5}, "prompt_tokens", "must be a whole number"),
        ({"prompt_tokens": "12"}, "prompt_tokens", "must be a whole number"),
        ({"completion_tokens": 2**31}, "completion_tokens", "must be at most 2147483647"),
        ({"question_count": 10**30}, "question_count", "must be at most 2147483647"),
        ({"cached_prompt_tokens": 2000}, "cached_prompt_tokens", "must not exceed prompt_tokens"),
        ({"occurred_at": "2026-11-01T12:00:00"}, "occurred_at", "must carry a UTC offset"),
        ({"occurred_at": "yesterday"}, "occurred_at", "must be an ISO 8601 timestamp"),
        ({"cost": "1e40"}, "cost", "larger than"),
        ({"cost": "abc"}, "cost", "is not a decimal number"),
        ({"cost": 0.5}, "cost", "must be a string"),
        ({"cost": "-1"}, "cost", "must not be negative"),
        ({"idempotency_key": None}, "idempotency_key", "is required"),
        ({"idempotency_key": "x" * 300}, "idempotency_key", "at most 255"),
        ({"draft_job_id": None}, "job_id", "job_id or draft_job_id is required"),
        ({"metadata": [1]}, "metadata", "must be an object"),
    ],
)
def test_bad_fields_are_422_naming_the_field(api, company, price, change, field, reason):
    response = api.post("/usage", usage_payload(company, **change))
    error = assert_error(response, 422, "validation_error")
    assert reason in error["fields"][field], error
    assert not QuestionGenerationUsage.objects.exists()


def test_timestamp_too_far_in_the_future_is_refused(api, company, price):
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    error = assert_error(
        api.post("/usage", usage_payload(company, occurred_at=later)), 422, "validation_error"
    )
    assert "future" in error["fields"]["occurred_at"]


def test_malformed_json_is_400(api):
    assert_error(api.post("/usage", raw=b'{"company": '), 400, "malformed_json")


def test_body_that_is_not_an_object_is_422(api):
    error = assert_error(api.post("/usage", [1, 2]), 422, "validation_error")
    assert error["fields"] == {"body": "must be a JSON object"}


def test_wrong_content_type_is_415(api, company):
    body = json.dumps(usage_payload(company))
    assert_error(
        api.post("/usage", raw=body, content_type="text/plain"), 415, "unsupported_media_type"
    )
    assert_error(
        api.post("/usage", raw="company=x", content_type="application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    )


def test_megabyte_body_is_413_before_parsing(api, company, settings):
    settings.API_MAX_BODY_BYTES = 1024 * 1024
    payload = usage_payload(company, metadata={"blob": "x" * (3 * 1024 * 1024)})
    assert_error(api.post("/usage", payload), 413, "payload_too_large")
    assert not QuestionGenerationUsage.objects.exists()


def test_missing_revoked_and_wrong_keys_are_401(api, company, client):
    response = client.post("/api/v1/usage", data="{}", content_type="application/json")
    assert_error(response, 401, "unauthorized")
    assert_error(ApiClient("qg_nope_secret").post("/usage", {}), 401, "unauthorized")
    tampered = ApiClient(api.secret[:-2] + ("AA" if not api.secret.endswith("AA") else "BB"))
    assert_error(tampered.post("/usage", {}), 401, "unauthorized")
    call_command("revoke_api_key", api.secret.split("_")[1])
    assert_error(api.post("/usage", usage_payload(company)), 401, "unauthorized")


def test_wrong_method_is_json_405(api):
    response = api.get("/usage")
    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "POST"


def test_unknown_endpoint_is_json_404(api):
    response = api.get("/nothing-here")
    assert_error(response, 404, "not_found")


def test_single_post_query_count(api, company, price, django_assert_max_num_queries):
    give_credit(company, "5")
    api.post("/usage", usage_payload(company, idempotency_key="warm-up"))  # sets last_used_at
    # key, company, price, draft lock, jobs, usage insert, rollup, balance, credit allocation,
    # ledger;
    # + SAVEPOINT/RELEASE because the test runs inside a transaction.
    with django_assert_max_num_queries(12):
        response = api.post("/usage", usage_payload(company))
    assert response.status_code == 201


def test_a_reported_cost_above_the_per_generation_ceiling_is_refused_naming_cost(
    api, company, price, settings
):
    # Before the ceiling such figures were recorded as reported: a second 9e15
    # for the same company overflowed its NUMERIC(28,12) rollup sum (a 500).
    settings.USAGE_MAX_EVENT_COST = Decimal("100000")
    at_limit = api.post("/usage", usage_payload(company, cost="100000", idempotency_key="a"))
    assert at_limit.status_code == 201, at_limit.content

    response = api.post(
        "/usage", usage_payload(company, cost="1000000000000000", idempotency_key="b")
    )
    error = assert_error(response, 422, "validation_error")
    assert error["fields"] == {"cost": "must be at most 100000 for one generation"}

    batch = api.post(
        "/usage/batch",
        {"events": [usage_payload(company, cost="100000.000000000001", idempotency_key="c")]},
    )
    assert batch.json()["results"][0]["error"]["fields"] == {
        "cost": "must be at most 100000 for one generation"
    }
    assert QuestionGenerationUsage.objects.filter(company=company).count() == 1

"""Every string the API receives follows core.text's rule: a lone surrogate or a NUL
anywhere (a body at any depth, a path or query parameter) is a 422 naming the field,
never a 500, and in a batch only that event fails; decimals are in ASCII digits."""

from __future__ import annotations

import json

import pytest

from billing.models import Company
from tests.api.conftest import api_client_for, assert_error, usage_payload
from tests.conftest import make_company
from usage.models import Job, QuestionGenerationUsage, RejectedEvent

pytestmark = pytest.mark.django_db

SURROGATE = "\ud800"


def post_raw(api, path: str, body) -> object:
    # json.dumps writes the lone surrogate as the escape "\ud800", as a producer would.
    return api.post(path, raw=json.dumps(body))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("company", SURROGATE),
        ("job_id", f"job-{SURROGATE}"),
        ("draft_job_id", SURROGATE),
        ("model", f"gpt-{SURROGATE}"),
        ("idempotency_key", SURROGATE),
        ("cost", f"0.1{SURROGATE}"),
        ("metadata", {"note": SURROGATE}),
        ("metadata", {"nested": [{"deep": f"x{SURROGATE}"}]}),
        ("metadata", {SURROGATE: "key"}),
    ],
)
def test_a_lone_surrogate_in_any_usage_field_is_422_naming_it(price, field, value):
    company = make_company()
    response = post_raw(api_client_for(), "/usage", usage_payload(company, **{field: value}))
    error = assert_error(response, 422, "validation_error")
    (name,) = error["fields"]
    assert name.split(".")[0] == field
    assert "surrogate" in error["fields"][name]
    assert not QuestionGenerationUsage.objects.exists()


def test_a_lone_surrogate_fails_only_its_own_event_in_a_batch(price):
    company = make_company()
    events = [
        usage_payload(company, idempotency_key="good-1"),
        usage_payload(company, idempotency_key="bad", model=f"m{SURROGATE}"),
        usage_payload(company, idempotency_key="good-2", metadata={"k": "\udfff"}),
        usage_payload(company, idempotency_key="good-3"),
    ]
    response = post_raw(api_client_for(), "/usage/batch", {"events": events})
    assert response.status_code == 200, response.content
    outcomes = [r["outcome"] for r in response.json()["results"]]
    assert outcomes == ["created", "error", "error", "created"]
    assert response.json()["results"][1]["error"]["fields"] == {
        "model": "must not contain lone UTF-16 surrogates (\\ud800-\\udfff)"
    }
    assert "metadata.k" in response.json()["results"][2]["error"]["fields"]
    assert QuestionGenerationUsage.objects.count() == 2


def test_a_batch_with_a_surrogate_resent_records_the_good_events_once(price):
    # A producer that retries the whole batch is not stuck: the good events replay.
    company = make_company()
    events = [usage_payload(company, idempotency_key="g"), usage_payload(company, model=SURROGATE)]
    api = api_client_for()
    first = post_raw(api, "/usage/batch", {"events": events}).json()["results"]
    again = post_raw(api, "/usage/batch", {"events": events}).json()["results"]
    assert [r["outcome"] for r in first] == ["created", "error"]
    assert [r["outcome"] for r in again] == ["replayed", "error"]


@pytest.mark.parametrize(
    "body",
    [
        {"external_id": SURROGATE, "name": "A"},
        {"external_id": "org-x", "name": f"Acme {SURROGATE}"},
        {"external_id": "org-x", "name": "A", "timezone": SURROGATE},
    ],
)
def test_a_lone_surrogate_in_a_company_is_422(body):
    response = post_raw(api_client_for(), "/companies", body)
    error = assert_error(response, 422, "validation_error")
    assert set(error["fields"]) <= {"external_id", "name", "timezone"}
    assert not Company.objects.exists()


@pytest.mark.parametrize("field", ["title", "job_id", "draft_job_id"])
def test_a_lone_surrogate_in_a_job_is_422(company, field):
    body = {"title": "Backend", field: f"x{SURROGATE}"}
    error = assert_error(post_raw(api_client_for(company), "/jobs", body), 422, "validation_error")
    assert list(error["fields"]) == [field]
    assert not Job.objects.exists()


def test_nul_in_a_path_parameter_is_422_naming_it():
    response = api_client_for().get("/companies/a%00b/balance")
    error = assert_error(response, 422, "validation_error")
    assert error["fields"] == {"company": "must not contain NUL (\\u0000) characters"}


def test_nul_in_a_query_parameter_is_422_naming_it(company):
    response = api_client_for().get(f"/companies/{company.pk}/balance?x=%00")
    assert assert_error(response, 422, "validation_error")["fields"] == {
        "x": "must not contain NUL (\\u0000) characters"
    }


@pytest.mark.parametrize("cost", ["١٢", "１２", "1_0", "12\u00a0", "²"])
def test_cost_in_other_than_ascii_digits_is_refused(price, company, cost):
    response = api_client_for().post("/usage", usage_payload(company, cost=cost))
    error = assert_error(response, 422, "validation_error")
    assert "ASCII digits" in error["fields"]["cost"]
    assert not QuestionGenerationUsage.objects.exists()


def test_a_company_unknown_for_now_still_reaches_the_inbox_after_the_text_rule(price):
    response = api_client_for().post("/usage", usage_payload(make_company(), company="org-later"))
    assert_error(response, 404, "company_not_found")
    assert RejectedEvent.objects.get().company_ref == "org-later"

"""Requests at the edges of the rules get a clean answer (never a 500, never a lost event):
company references that look like UUIDs, NUL characters, year-one and non-finite numbers,
negative zero, not-yet-saved job ids, a Host that is not allowed."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.api.conftest import api_client_for, assert_error, usage_payload
from tests.conftest import make_company, make_price
from usage import inbox
from usage.models import QuestionGenerationUsage, RejectedEvent

pytestmark = pytest.mark.django_db

UUID_SHAPED = "6f9619ff-8b86-d011-b42d-00c04fc964ff"


def test_company_key_may_name_its_company_by_a_uuid_shaped_external_id(price):
    # Main products often use UUIDs as tenant ids; such an external id is still the company's.
    company = make_company(external_id=UUID_SHAPED)
    api = api_client_for(company)
    single = api.post("/usage", usage_payload(company, company=UUID_SHAPED))
    batch = api.post(
        "/usage/batch",
        {"events": [usage_payload(company, company=UUID_SHAPED, idempotency_key="b")]},
    )
    assert single.status_code == 201, single.content
    assert batch.json()["results"][0]["outcome"] == "created", batch.content
    assert QuestionGenerationUsage.objects.filter(company=company).count() == 2


def test_company_key_still_refused_for_another_company_by_uuid_shaped_external_id(price):
    mine = make_company(external_id=UUID_SHAPED)
    theirs = make_company(external_id="00000000-0000-4000-8000-000000000001")
    response = api_client_for(mine).post(
        "/usage", usage_payload(theirs, company=theirs.external_id)
    )
    assert_error(response, 403, "forbidden")
    assert not QuestionGenerationUsage.objects.exists()


def test_saving_a_job_with_a_draft_id_another_job_holds_is_409_not_500(company):
    api = api_client_for(company)
    assert api.post("/jobs", {"title": "first", "draft_job_id": "D"}).status_code == 201
    second = api.post("/jobs", {"title": "second"}).json()["id"]
    response = api.post("/jobs", {"title": "second", "job_id": second, "draft_job_id": "D"})
    assert_error(response, 409, "idempotency_conflict")


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00Z", "0001-01-01T03:00:00+05:00"])
def test_timestamp_in_year_one_is_422_and_loses_no_other_batch_event(price, occurred_at):
    # The company's local day of such an instant overflowed Python's dates: a 500,
    # and in a batch the 500 took every other event down with it.
    company = make_company(timezone="America/New_York")
    api = api_client_for(company)
    single = api.post("/usage", usage_payload(company, occurred_at=occurred_at))
    error = assert_error(single, 422, "validation_error")
    assert "occurred_at" in error["fields"]
    bad = usage_payload(company, occurred_at=occurred_at, idempotency_key="bad")
    good = usage_payload(company, idempotency_key="good")
    results = api.post("/usage/batch", {"events": [bad, good]}).json()["results"]
    assert [r["status"] for r in results] == [422, 201]


@pytest.mark.parametrize(
    "field, value",
    [
        ("model", "gpt\u0000"),
        ("idempotency_key", "k\u0000"),
        ("draft_job_id", "d\u0000"),
        ("job_id", "j\u0000"),
        ("company", "org\u0000"),
        ("metadata", {"nested": ["x\u0000"]}),
        ("metadata", {"k\u0000": 1}),
    ],
)
def test_nul_character_is_422_not_500(price, field, value):
    # PostgreSQL text and jsonb cannot hold NUL: the query failed with a 500, and in a
    # batch that 500 lost every other event.
    company = make_company()
    api = api_client_for()  # a platform key, so that `company` is looked up
    single = api.post("/usage", usage_payload(company, **{field: value}))
    assert_error(single, 422, "validation_error")
    bad = {**usage_payload(company, idempotency_key="bad"), field: value}
    good = usage_payload(company, idempotency_key="good")
    response = api.post("/usage/batch", {"events": [bad, good]})
    assert [r["status"] for r in response.json()["results"]] == [422, 201], response.content


def test_nul_character_in_a_job_or_company_is_422_not_500(company):
    api = api_client_for()
    job = api.post("/jobs", {"company": str(company.pk), "title": "t\u0000"})
    assert_error(job, 422, "validation_error")
    tenant = api.post("/companies", {"external_id": "x\u0000", "name": "n"})
    assert_error(tenant, 422, "validation_error")


def test_negative_zero_cost_answers_a_replay_with_the_same_body(company):
    # "-0" was stored as 0 but answered "-0.00" the first time and "0.00" on replay,
    # and "0" then "-0.0" under one key was a 409 although the amounts are equal.
    api = api_client_for(company)
    first = api.post("/usage", usage_payload(company, cost="-0"))
    replay = api.post("/usage", usage_payload(company, cost="-0"))
    assert (first.status_code, replay.status_code) == (201, 200)
    assert first.json() == replay.json()
    assert first.json()["cost"] == "0.00"
    assert api.post("/usage", usage_payload(company, cost="-0.0")).status_code == 200


@pytest.mark.parametrize(
    "spelling",
    [UUID_SHAPED.upper(), UUID_SHAPED.replace("-", ""), "{" + UUID_SHAPED + "}"],
)
def test_usage_under_a_not_yet_saved_job_id_links_when_the_job_is_saved(company, price, spelling):
    # The draft was kept under the id's text as sent, but saving the job looks drafts up
    # under its canonical UUID: the usage stayed a draft for ever (and was later abandoned).
    api = api_client_for(company)
    usage = api.post("/usage", usage_payload(company, job_id=spelling, draft_job_id=None)).json()
    assert usage["status"] == "draft"
    saved = api.post("/jobs", {"title": "t", "job_id": spelling}).json()
    assert saved["linked_usage_rows"] == 1
    row = QuestionGenerationUsage.objects.get(pk=usage["id"])
    assert (row.status, str(row.job_id)) == ("linked", UUID_SHAPED)


def test_inbox_replay_dates_an_event_without_occurred_at_when_it_was_received(db):
    # occurred_at defaults to "now"; replayed from the inbox days later, "now" became the
    # replay time: the usage moved to another day (or month) and was priced at that day's price.
    received = timezone.now() - timedelta(days=40)
    make_price(input="1.00", output="1.00", effective_to=received + timedelta(days=1))
    make_price(input="9.00", output="9.00", effective_from=received + timedelta(days=1))
    body = {**usage_payload(make_company(), company="org_late"), "idempotency_key": "late"}
    assert api_client_for().post("/usage", body).status_code == 404
    RejectedEvent.objects.update(received_at=received)
    company = make_company(external_id="org_late")

    assert inbox.replay(RejectedEvent.objects.all()).replayed == 1
    usage = QuestionGenerationUsage.objects.get(company=company)
    assert usage.occurred_at == received
    assert usage.price.input_per_million == 1
    # a later retry of the very same request by its sender is a replay, not a conflict
    assert api_client_for(company).post("/usage", body).status_code == 200


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_json_number_is_400_not_500(price, number):
    # Python's JSON parser accepts NaN/Infinity (and reads 1e400 as inf); PostgreSQL's
    # jsonb refuses them: the metadata insert (or the inbox's payload) failed with a 500.
    company = make_company()
    api = api_client_for()
    body = json.dumps(usage_payload(company, metadata={"x": "NUMBER"})).replace('"NUMBER"', number)
    assert_error(api.post("/usage", raw=body), 400, "malformed_json")
    unknown = body.replace(str(company.pk), "org_unknown")
    assert_error(api.post("/usage", raw=unknown), 400, "malformed_json")
    assert not QuestionGenerationUsage.objects.exists()


@pytest.mark.django_db
def test_a_host_not_allowed_gets_the_api_error_shape_under_api_and_django_page_elsewhere(
    client, settings
):
    # A Host outside ALLOWED_HOSTS used to reach API callers as Django's HTML 400.
    settings.ALLOWED_HOSTS = ["billing.example.com"]
    response = client.post(
        "/api/v1/usage", data="{}", content_type="application/json", HTTP_HOST="evil.example"
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "bad_request"
    assert response.json()["error"]["fields"] == {"Host": "not an allowed host"}

    page = client.get("/billing/", HTTP_HOST="evil.example")
    assert page.status_code == 400
    assert page["Content-Type"].startswith("text/html")

"""The rejected-events inbox and its admin replay; rate limits; the OpenAPI schema; keys."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from billing.api_keys import authenticate_api_key
from billing.models import APIKey, AuditEvent
from core.errors import AuthenticationFailed
from tests.api.conftest import ApiClient, assert_error, usage_payload
from tests.conftest import make_company
from usage.models import QuestionGenerationUsage, RejectedEvent

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/usage/rejectedevent/"


def _replay_in_admin(staff_client, events) -> None:
    response = staff_client.post(
        CHANGELIST,
        {"action": "replay_selected", "_selected_action": [e.pk for e in events]},
    )
    assert response.status_code == 302  # back to the changelist, with a message


def test_admin_replays_an_event_after_the_mapping_is_fixed(api, staff_client, price):
    company = make_company(external_id=None)
    payload = usage_payload(company, company="org-late", idempotency_key="k1")
    api.post("/usage", payload)
    rejected = RejectedEvent.objects.get()

    _replay_in_admin(staff_client, [rejected])  # still unknown: stays open
    rejected.refresh_from_db()
    assert rejected.state == "open" and rejected.error_code == "company_not_found"

    company.external_id = "org-late"  # the admin fixes the mapping
    company.save()
    _replay_in_admin(staff_client, [rejected])
    rejected.refresh_from_db()
    usage = QuestionGenerationUsage.objects.get()
    assert (rejected.state, rejected.usage) == ("replayed", usage)
    assert rejected.resolved_at is not None and usage.company == company
    assert AuditEvent.objects.filter(action="rejected_event.replay").count() == 1

    _replay_in_admin(staff_client, [rejected])  # replaying again records nothing new
    assert QuestionGenerationUsage.objects.count() == 1


def test_replay_failure_keeps_the_new_reason(api, staff_client, price):
    company = make_company(external_id=None)
    api.post("/usage", usage_payload(company, company="org-x", prompt_tokens=-1))
    # An unknown company is reported first; after the mapping the payload's own fault shows.
    rejected = RejectedEvent.objects.get()
    company.external_id = "org-x"
    company.save()
    _replay_in_admin(staff_client, [rejected])
    rejected.refresh_from_db()
    assert rejected.state == "open" and rejected.error_code == "validation_error"
    assert "prompt_tokens" in rejected.reason


def test_rate_limit_answers_429_with_retry_after(api, company, settings, monkeypatch):
    settings.API_RATE_LIMIT_PER_MINUTE = 3
    monkeypatch.setattr("billing.api.time.time", lambda: 1_800_000_010.0)
    statuses = [api.get(f"/companies/{company.pk}/balance").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = api.get(f"/companies/{company.pk}/balance")
    assert_error(response, 429, "rate_limited")
    assert response["Retry-After"] == "50"
    monkeypatch.setattr("billing.api.time.time", lambda: 1_800_000_070.0)  # the next minute
    assert api.get(f"/companies/{company.pk}/balance").status_code == 200


def test_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/v1/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {
        "/api/v1/usage",
        "/api/v1/usage/batch",
        "/api/v1/jobs",
        "/api/v1/companies",
        "/api/v1/companies/{company}/balance",
    } <= set(paths)
    assert client.get("/api/v1/docs").status_code == 200


def test_authenticate_api_key_checks_hash_and_revocation(api):
    key = authenticate_api_key(api.secret)
    assert key.last_used_at is not None
    for wrong in ("", "qg_", "nope", api.secret + "x", f"qg_{key.prefix}_guess"):
        with pytest.raises(AuthenticationFailed):
            authenticate_api_key(wrong)
    call_command("revoke_api_key", key.prefix)
    with pytest.raises(AuthenticationFailed):
        authenticate_api_key(api.secret)


def test_last_used_at_is_written_at_most_once_a_minute(api, django_assert_num_queries):
    authenticate_api_key(api.secret)
    with django_assert_num_queries(1):  # the look-up only
        authenticate_api_key(api.secret)


def test_create_api_key_prints_the_secret_last(company, capsys):
    call_command("create_api_key", "main product", "--company", company.external_id)
    secret = capsys.readouterr().out.strip().splitlines()[-1]
    key = authenticate_api_key(secret)
    assert (key.name, key.company) == ("main product", company)
    assert ApiClient(secret).get(f"/companies/{company.pk}/balance").status_code == 200
    assert APIKey.objects.get().key_hash != secret

"""The OpenAPI schema tells the truth: every operation documents its errors with the
one error schema, required-ness is as enforced for platform keys, and the rules the
services enforce are in the schema (Schemathesis checks both directions in CI)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def _no_duplicate_keys(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys: {keys}"  # Swagger UI refuses them
    return dict(pairs)


@pytest.fixture
def schema() -> dict:
    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    return json.loads(response.content, object_pairs_hook=_no_duplicate_keys)


def operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_every_operation_documents_its_errors_with_the_error_schema(schema):
    error = schema["components"]["schemas"]["ErrorOut"]
    assert error["required"] == ["error"]
    for name, operation in operations(schema):
        statuses = {int(s) for s in operation["responses"]}
        assert {401, 403, 422, 429, 500} <= statuses, name
        if "requestBody" in operation:
            assert {400, 411, 413, 415} <= statuses, name
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorOut"), (name, status)


def test_company_is_required_as_platform_keys_must_send_it(schema):
    for model in ("UsageIn", "JobIn"):
        component = schema["components"]["schemas"][model]
        assert "company" in component["required"]
        assert component["properties"]["company"]["type"] == "string"
        assert "company key may leave it out" in component["properties"]["company"]["description"]


def test_the_services_rules_are_in_the_schema(schema):
    usage = schema["components"]["schemas"]["UsageIn"]["properties"]
    assert usage["model"]["maxLength"] == 100 and usage["prompt_tokens"]["minimum"] == 0
    assert usage["cost"]["pattern"].startswith("^$|")
    company = schema["components"]["schemas"]["CompanyIn"]["properties"]
    assert company["external_id"]["pattern"] and "Europe/Berlin" in company["timezone"]["enum"]
    usage_in = schema["components"]["schemas"]["UsageIn"]
    job, tokens = usage_in["allOf"]
    assert [alt["required"] for alt in job["anyOf"]] == [["job_id"], ["draft_job_id"]]
    assert [alt["required"] for alt in tokens["anyOf"]] == [
        ["prompt_tokens", "completion_tokens"],
        ["provider", "usage"],
    ]
    # Present but null is absent: a null completion_tokens is not the flat form.
    assert tokens["anyOf"][0]["properties"]["completion_tokens"] == {"type": "integer"}
    assert usage["provider"]["enum"] == ["openai", "anthropic", "gemini"]


def test_a_new_company_links_to_its_balance(schema):
    created = schema["paths"]["/api/v1/companies"]["post"]["responses"]["201"]
    assert created["content"]["application/json"]["schema"]["$ref"].endswith("/CompanyOut")
    link = created["links"]["CompanyBalance"]
    assert link["parameters"] == {"company": "$response.body#/id"}
    balance = schema["paths"]["/api/v1/companies/{company}/balance"]["get"]
    assert balance["operationId"] == link["operationId"]


def test_an_integral_json_number_is_a_whole_number_and_a_unix_time_is_not_a_timestamp(price):
    from tests.api.conftest import api_client_for, assert_error, usage_payload
    from tests.conftest import make_company

    company = make_company()
    api = api_client_for()
    ok = api.post("/usage", usage_payload(company, prompt_tokens=1000.0))
    assert ok.status_code == 201 and ok.json()["prompt_tokens"] == 1000
    refused = api.post("/usage", usage_payload(company, occurred_at=0, idempotency_key="t"))
    assert assert_error(refused, 422, "validation_error")["fields"] == {
        "occurred_at": "must be an ISO 8601 timestamp with an offset (e.g. 2026-11-01T12:00:00Z)"
    }


def test_the_schemas_blank_is_the_services_blank():
    # The services strip with str.strip(); ECMA-262's \s differs from it, so a
    # lone U+001C passed the schema's non-blank pattern and got "is required".
    import re
    import sys

    from core.openapi import NON_BLANK

    pattern = re.compile(NON_BLANK)
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF or code == 0:
            continue
        text = f" {chr(code)} "
        assert bool(pattern.match(text)) == bool(text.strip()), hex(code)

"""The odd-character set, fed into every string field of every API operation (read from
the OpenAPI schema, so a new field is covered the day it is added), every path and query
parameter, every billing page parameter, every admin changelist search, the admin's
company form and both login forms: never a 500, and under /api/ always the error shape."""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from billing.models import Company
from config.api import api
from tests.api.conftest import ApiClient, api_client_for
from tests.conftest import make_company, make_price, make_usage

pytestmark = pytest.mark.django_db

ODD = {
    "nul": "a\x00b",
    "lone-high-surrogate": "\ud800",
    "lone-low-surrogate": "x\udfff",
    "unicode": "\ufeffa\u200bb\u202e🙂e\u0301",
    "control": "\x1b[0m\x7f\r\n\t",
    "syntax": "'\"`\\%00%<script>alert(1)</script>' OR 1=1 --",
    "non-ascii-digits": "١٢１２",
    "superscript-digit": "²",
    "blank": " ",
    "empty": "",
    "long": "x" * 5000,
}
VALUES = pytest.mark.parametrize("odd", list(ODD.values()), ids=list(ODD))


def qs(query: dict) -> str:
    """A query string as a client sends it: a lone surrogate as its (invalid) UTF-8 bytes."""
    return urlencode(query, encoding="utf-8", errors="surrogatepass")


def form_post(client: Client, path: str, data: dict):
    return client.post(path, qs(data), content_type="application/x-www-form-urlencoded")


SCHEMA = api.get_openapi_schema()
# The GET parameters each page reads (usage/views.py, usage/forms.py).
PAGE_PARAMS = {
    "": ["q", "sort", "dir", "page"],
    "usage": ["from", "to", "preset", "group", "model", "status", "job"],
    "credits": ["from", "to", "preset", "kind", "page"],
}


def _resolve(schema: dict) -> dict:
    if "$ref" in schema:
        return SCHEMA["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _is_string(prop: dict) -> bool:
    options = prop.get("anyOf", [prop])
    return any(option.get("type") == "string" for option in options)


def body_string_fields(path: str, method: str) -> list[str]:
    operation = SCHEMA["paths"][path][method]
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if not content:
        return []
    properties = _resolve(content["schema"]).get("properties", {})
    return [name for name, prop in properties.items() if _is_string(prop)]


def usage_fields() -> list[str]:
    return [n for n, p in SCHEMA["components"]["schemas"]["UsageIn"]["properties"].items() if _is_string(p)]  # fmt: skip


def valid_bodies(company: Company) -> dict[str, dict]:
    usage = {
        "company": str(company.pk),
        "draft_job_id": "draft-odd",
        "model": "gpt-test",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "idempotency_key": "odd-key",
        "metadata": {"source": "odd"},
    }
    return {
        "/api/v1/usage": usage,
        "/api/v1/jobs": {"company": str(company.pk), "title": "Odd job"},
        "/api/v1/companies": {"external_id": "org-odd", "name": "Odd Co"},
        "/api/v1/usage/batch": {"events": [usage]},
        "/api/v1/reservations": {
            "company": str(company.pk),
            "estimate": {"cost": "0.01"},
            "idempotency_key": "odd-hold",
        },
    }


def assert_api_answer(response, where: str) -> None:
    assert response.status_code < 500, (where, response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), where
    body = response.json()
    if response.status_code >= 400:
        # A refused hold names the budget lines too (docs/api.md, Reservations).
        extra = {"reasons"} if body["error"]["code"] == "budget_exceeded" else set()
        assert set(body["error"]) == {"code", "message", "fields", *extra}, where


@pytest.fixture
def world(db):
    make_price()
    company = make_company()
    make_usage(company)
    return company


@VALUES
def test_every_string_field_of_every_api_operation(world, odd):
    client = api_client_for()
    bodies = valid_bodies(world)
    posted = [(p, m) for p, ops in SCHEMA["paths"].items() for m in ops if m == "post"]
    assert {p for p, _ in posted} == set(bodies), "a new operation needs a valid body here"
    for path, method in posted:
        for field in body_string_fields(path, method):
            body = {**bodies[path], field: odd}
            response = client.client.post(
                path, json.dumps(body), content_type="application/json", **client._headers(None)
            )
            assert_api_answer(response, f"{path} {field}")


@VALUES
def test_every_usage_field_in_a_batch_fails_only_its_own_event(world, odd):
    client = api_client_for()
    good = valid_bodies(world)["/api/v1/usage"]
    events = [{**good, "idempotency_key": f"k-{field}", field: odd} for field in usage_fields()]
    events.append({**good, "idempotency_key": "always-good"})
    response = client.post("/usage/batch", {"events": events})
    assert_api_answer(response, "batch")
    results = response.json()["results"]
    assert len(results) == len(events)
    assert results[-1]["outcome"] in ("created", "replayed")
    for result in results:
        assert result["status"] < 500, result


@VALUES
def test_every_path_and_query_parameter_of_the_api(world, odd):
    client: ApiClient = api_client_for()
    for path, operations in SCHEMA["paths"].items():
        for method, operation in operations.items():
            params = {p["name"]: p["in"] for p in operation.get("parameters", [])}
            url = path
            for name, where in params.items():
                if where == "path":
                    segment = quote(odd, safe="", errors="surrogatepass") or "%20"
                    url = url.replace("{" + name + "}", segment)
            url += "?" + qs({"q": odd, odd: "v"})
            response = getattr(client.client, method)(url, **client._headers(None))
            assert_api_answer(response, f"{method} {url[:80]}")


@VALUES
def test_every_billing_page_parameter(staff_client, world, odd):
    base = reverse("billing:company", args=[world.pk])
    for tab, names in PAGE_PARAMS.items():
        page = base if tab else "/billing/"
        for name in names:
            query = {"tab": tab, name: odd} if tab else {name: odd}
            response = staff_client.get(f"{page}?{qs(query)}")
            assert response.status_code < 500, (page, query, response.status_code)
    for query in ({"tab": odd}, {odd: "v"}, {"tab": "usage", "format": odd}):
        assert staff_client.get(f"{base}?{qs(query)}").status_code < 500, query


@VALUES
def test_every_admin_changelist_search_and_custom_page(staff_client, world, odd):
    for model in admin.site._registry:
        opts = model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        response = staff_client.get(f"{changelist}?{qs({'q': odd})}")
        assert response.status_code < 500, (changelist, response.status_code)
    companies = reverse("admin:billing_company_changelist")
    for query in ({"o": odd}, {"p": odd}, {"low_balance": odd}, {odd: "v"}):
        assert staff_client.get(f"{companies}?{qs(query)}").status_code < 500, query
    credits = reverse("admin:billing_company_credits", args=[world.pk])
    assert staff_client.get(f"{credits}?{qs({'before': odd})}").status_code < 500
    drafts = reverse("admin:usage_pending_drafts")
    assert staff_client.get(f"{drafts}?{qs({'q': odd})}").status_code < 500


@VALUES
def test_every_field_of_the_admin_company_form(staff_client, world, odd):
    change = reverse("admin:billing_company_change", args=[world.pk])
    valid = {
        "name": world.name,
        "external_id": world.external_id,
        "timezone": "UTC",
        "currency": "USD",
        "is_active": "on",
        "low_balance_threshold": "10",
        "overdraft_allowance": "0",
        "monthly_spend_limit": "",
        "billing_emails": "",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
    }
    for field in [k for k in valid if not k.startswith("memberships")]:
        response = form_post(staff_client, change, {**valid, field: odd})
        assert response.status_code < 500, (field, response.status_code)
    world.refresh_from_db()
    assert world.low_balance_threshold == 10 or odd.strip() == ""


@VALUES
def test_both_login_forms(db, odd):
    for page in (reverse("login"), reverse("admin:login")):
        response = form_post(Client(), page, {"username": odd, "password": odd})
        assert response.status_code < 500, (page, response.status_code)

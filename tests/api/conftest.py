"""An API client with bearer keys: `api` (platform key) and `company_api` (company key)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from billing.api_keys import create_api_key


class ApiClient:
    """Django's test client speaking JSON with a bearer key."""

    def __init__(self, secret: str) -> None:
        self.client = Client()
        self.secret = secret

    def _headers(self, extra: dict | None) -> dict:
        return {"HTTP_AUTHORIZATION": f"Bearer {self.secret}", **(extra or {})}

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        raw: bytes | str | None = None,
        content_type: str = "application/json",
        **extra,
    ):
        data = raw if raw is not None else json.dumps(body)
        return self.client.post(
            f"/api/v1{path}", data=data, content_type=content_type, **self._headers(extra)
        )

    def get(self, path: str, **extra):
        return self.client.get(f"/api/v1{path}", **self._headers(extra))

    def delete(self, path: str, **extra):
        return self.client.delete(f"/api/v1{path}", **self._headers(extra))


def api_client_for(company=None, name: str = "test key", **limits) -> ApiClient:
    key, secret = create_api_key(name=name, company=company, **limits)
    client = ApiClient(secret)
    client.key = key
    return client


@pytest.fixture
def api(db) -> ApiClient:
    return api_client_for()


@pytest.fixture
def company_api(company) -> ApiClient:
    return api_client_for(company, name="company key")


def usage_payload(company, /, **kwargs) -> dict:
    body = {
        "company": str(company.pk),
        "draft_job_id": "draft-1",
        "model": "gpt-test",
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "question_count": 5,
        "idempotency_key": "key-1",
    }
    body.update(kwargs)
    return {k: v for k, v in body.items() if v is not None}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert isinstance(error["fields"], dict)
    return error

"""API authentication, the request gate, tenant scoping, and the companies endpoint.

Every API request passes :class:`APIKeyAuth` first: the bearer key is checked
(billing.api_keys.authenticate_api_key), then its rate limit (one cache
increment), then the body's size and content type, all before the body is
read or parsed. Views then ask :func:`company_for` which company they may act
for: a company-scoped key only for its own, a platform key for any.
"""

from __future__ import annotations

import math
import time
from typing import Any
from zoneinfo import available_timezones

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from ninja import Field, Router, Schema, Status
from ninja.security import HttpBearer
from pydantic import ConfigDict

from billing.api_keys import authenticate_api_key
from billing.companies import reference_uuid, resolve_company, upsert_company
from billing.models import APIKey, Company
from core.errors import AuthenticationFailed, InvalidInput, NotPermitted, ServiceError
from core.openapi import NON_BLANK, document


class ApiError(Exception):
    """An HTTP-level refusal (413, 415, 429, ...) in the API's one error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields = fields or {}
        self.headers = headers or {}


# HTTP status of each service error code; any other ServiceError is a 422.
STATUS_BY_CODE = {
    "malformed_json": 400,
    "bad_request": 400,
    "unauthorized": 401,
    "budget_exceeded": 402,
    "forbidden": 403,
    "job_of_another_company": 403,
    "company_not_found": 404,
    "not_found": 404,
    "price_not_found": 404,
    "idempotency_conflict": 409,
    "conflict": 409,
    "validation_error": 422,
}


class ErrorDetail(Schema):
    code: str = Field(..., description="Stable, e.g. validation_error, company_not_found.")
    message: str
    fields: dict[str, str] = Field(..., description="The inputs at fault: {field: reason}.")
    reasons: list[str] | None = Field(
        None,
        description="Only with budget_exceeded (a refused reservation): every budget line "
        "the hold would cross: balance, company_monthly_limit, key_daily_limit, "
        "key_monthly_limit, company_inactive.",
    )


class ErrorOut(Schema):
    """Every error of the API, whatever its status (config.api)."""

    error: ErrorDetail


# What any operation may answer besides its success, in the one error shape.
READ_ERRORS = (401, 403, 404, 422, 429, 500)
WRITE_ERRORS = (400, 401, 403, 404, 409, 411, 413, 415, 422, 429, 500)
RESERVE_ERRORS = (*WRITE_ERRORS, 402)


def responses(ok: dict[int, Any], errors: tuple[int, ...] = WRITE_ERRORS) -> dict[int, Any]:
    """An operation's `response=`: its successes, and its errors with the error schema."""
    return {**ok, **dict.fromkeys(errors, ErrorOut)}


def status_of(error: ServiceError | ApiError) -> int:
    if isinstance(error, ApiError):
        return error.status
    return STATUS_BY_CODE.get(error.code, 422)


class APIKeyAuth(HttpBearer):
    """`Authorization: Bearer <key>`, then the rate limit and the body checks."""

    def __call__(self, request: HttpRequest) -> APIKey:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed("Send the API key as 'Authorization: Bearer <key>'.")
        return self.authenticate(request, token)

    def authenticate(self, request: HttpRequest, token: str) -> APIKey:
        key = authenticate_api_key(token)
        request.api_key_prefix = key.prefix  # read by the request log
        if key.company_id:
            request.company_id = key.company_id
        check_rate_limit(key.prefix)
        check_body(request)
        return key


def check_rate_limit(prefix: str) -> None:
    """Fixed one-minute windows per key: one cache increment per request.

    The cache is Redis when REDIS_URL is set (shared by every web process);
    otherwise local memory, which counts per process (development only).
    """
    limit = settings.API_RATE_LIMIT_PER_MINUTE
    if limit <= 0:
        return
    now = time.time()
    cache_key = f"api-rate:{prefix}:{int(now // 60)}"
    try:
        count = cache.incr(cache_key)
    except ValueError:  # first request of this window
        count = 1 if cache.add(cache_key, 1, timeout=120) else cache.incr(cache_key)
    if count > limit:
        retry_after = max(1, math.ceil(60 - now % 60))
        raise ApiError(
            429,
            "rate_limited",
            f"Rate limit of {limit} requests a minute exceeded; retry in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )


def check_body(request: HttpRequest) -> None:
    """Refuse an oversized body or a non-JSON one before it is read."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        # config.request_body reads chunked bodies the server de-chunked; this one was not.
        raise ApiError(411, "length_required", "Send the body with a Content-Length (not chunked).")
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise ApiError(400, "bad_request", "Content-Length is not a number.")
    limit = settings.API_MAX_BODY_BYTES
    if length > limit:
        raise ApiError(
            413, "payload_too_large", f"The request body is over the limit of {limit} bytes."
        )
    if request.method == "DELETE" and not length:
        return  # a DELETE carries no body: nothing to type
    if request.content_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Send JSON with 'Content-Type: application/json' (got {request.content_type!r}).",
        )


def company_for(request: HttpRequest, ref: str | None) -> Company:
    """The company this request may act for, named by UUID or external id.

    A company key acts only for its own company: anything else is 403, whether
    or not that other company exists, so a key learns nothing about other tenants.
    """
    key: APIKey = request.auth
    ref = (ref or "").strip()
    if key.company_id:
        company = key.company
        if ref and not is_same_company(company, ref):
            raise NotPermitted(
                "This API key may act only for its own company.",
                fields={"company": "not the company of this API key"},
            )
    else:
        if not ref:
            raise InvalidInput("company is required.", fields={"company": "is required"})
        company = resolve_company(ref)
    request.company_id = company.pk
    return company


def is_same_company(company: Company, ref: str) -> bool:
    """Whether `ref` names `company` by its UUID or by its external id (which may look like a UUID)."""
    if company.external_id is not None and ref == company.external_id:
        return True
    return reference_uuid(ref) == company.pk


def require_platform_key(request: HttpRequest) -> None:
    if request.auth.company_id:
        raise NotPermitted("Only a platform API key may do this.")


# --- POST /companies ----------------------------------------------------------

router = Router(tags=["companies"])
# Stateful clients (and Schemathesis) follow a new company to its balance.
BALANCE_LINK = {
    "operationId": "usage_api_balance_view",
    "parameters": {"company": "$response.body#/id"},
}


def _company_rules(schema: dict[str, Any]) -> None:
    """billing.companies' rules (the model checks types only), in the OpenAPI schema."""
    document(
        schema,
        {
            "external_id": {"maxLength": 200, "pattern": NON_BLANK},
            "name": {"maxLength": 200, "pattern": NON_BLANK},
            "timezone": {"enum": sorted(available_timezones())},
        },
    )


class CompanyIn(Schema):
    model_config = ConfigDict(json_schema_extra=_company_rules)

    external_id: str = Field(
        ...,
        description="The tenant's id in the main product. Not the id of another company "
        "(an external id that reads as one is refused).",
    )
    name: str
    timezone: str = Field("UTC", description="IANA time zone, e.g. Europe/Berlin.")


class CompanyOut(Schema):
    id: str
    external_id: str | None
    name: str
    timezone: str
    created: bool


@router.post(
    "/companies",
    response=responses({200: CompanyOut, 201: CompanyOut}),
    openapi_extra={"responses": {201: {"links": {"CompanyBalance": BALANCE_LINK}}}},
)
def upsert_company_view(request: HttpRequest, payload: CompanyIn):
    """Create or update a company from the main product's tenant (platform keys only)."""
    require_platform_key(request)
    company, created = upsert_company(
        external_id=payload.external_id,
        name=payload.name,
        timezone_name=payload.timezone,
        actor_label=f"api key {request.auth.prefix}",
    )
    request.company_id = company.pk
    body = {
        "id": str(company.pk),
        "external_id": company.external_id,
        "name": company.name,
        "timezone": company.timezone,
        "created": created,
    }
    return Status(201 if created else 200, body)

"""API endpoints for usage, jobs and the quota check. Thin: parse, authorize, call a service.

Bodies: usage rows as :func:`usage_body` (amounts are decimal strings from
billing.money.plain); errors in the one shape of config.api.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja import Field, Router, Schema, Status
from pydantic import ConfigDict

from billing.api import (
    BALANCE_LINK,
    READ_ERRORS,
    ApiError,
    company_for,
    is_same_company,
    responses,
    status_of,
)
from billing.companies import resolve_companies
from billing.errors import CompanyNotFound
from billing.money import plain
from core.errors import NotPermitted, ServiceError
from core.openapi import CANONICAL_UUID, NON_BLANK, STORABLE, document
from usage import inbox
from usage.charges import explain_usage
from usage.events import UsageEvent
from usage.grouping import record_one
from usage.jobs import save_job
from usage.quota import quota_status
from usage.recording import RecordResult, record_usage_batch
from usage.schemas import UsageIn, event_from_payload

router = Router(tags=["usage"])


class UsageRowOut(Schema):
    id: str
    company: str
    status: str = Field(..., description="linked or draft")
    job_id: str | None
    draft_job_id: str | None
    model: str
    prompt_tokens: int
    cached_prompt_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    service_tier: str
    provider: str = Field(..., description="openai, anthropic, gemini; empty for flat fields.")
    question_count: int
    cost: str | None = Field(..., description="Decimal string, exact; null while unpriced.")
    cost_source: str = Field(..., description="reported, priced or unpriced")
    occurred_at: str
    idempotency_key: str


class UsageOut(UsageRowOut):
    balance: str = Field(..., description="The company's balance after this debit.")


def usage_body(result: RecordResult) -> dict[str, Any]:
    return row_body(result.usage) | {"balance": plain(result.balance)}


def row_body(u) -> dict[str, Any]:
    """A usage row as the API answers it (without the balance)."""
    return {
        "id": str(u.pk),
        "company": str(u.company_id),
        "status": u.status,
        "job_id": str(u.job_id) if u.job_id else None,
        "draft_job_id": u.draft_job_id,
        "model": u.model,
        "prompt_tokens": u.prompt_tokens,
        "cached_prompt_tokens": u.cached_prompt_tokens,
        "cache_write_5m_tokens": u.cache_write_5m_tokens,
        "cache_write_1h_tokens": u.cache_write_1h_tokens,
        "completion_tokens": u.completion_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "service_tier": u.service_tier,
        "provider": u.provider,
        "question_count": u.question_count,
        "cost": plain(u.cost),
        "cost_source": u.cost_source,
        # In UTC, so a replay (read back from the database) answers the same text.
        "occurred_at": u.occurred_at.astimezone(UTC).isoformat(),
        "idempotency_key": u.idempotency_key,
    }


def error_body(error: ServiceError | ApiError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "fields": error.fields}


USAGE_LINKS = {
    "links": {
        "CompanyBalance": {**BALANCE_LINK, "parameters": {"company": "$response.body#/company"}}
    }
}


@router.post(
    "/usage",
    response=responses({200: UsageOut, 201: UsageOut}),
    openapi_extra={"responses": {201: USAGE_LINKS}},
)
def record_usage_view(request: HttpRequest, payload: UsageIn):
    """Record one generation. 201 when recorded, 200 (same body) for a replay."""
    try:
        company = company_for(request, payload.company)
    except CompanyNotFound as exc:
        inbox.reject(payload=json.loads(request.body), error=exc, source="api")
        raise
    event = replace(payload.to_event(str(company.pk)), api_key=request.auth)
    result = record_one(event, company)
    return Status(201 if result.created else 200, usage_body(result))


class BatchIn(Schema):
    events: list[Any] = Field(
        ...,
        description="Up to API_MAX_BATCH_EVENTS (1000) usage events, each a UsageIn; "
        "each is answered on its own, so any item is accepted here.",
        json_schema_extra={"maxItems": settings.API_MAX_BATCH_EVENTS},
    )


class BatchOut(Schema):
    results: list[dict[str, Any]] = Field(
        ...,
        description="One per event, in order: {index, outcome: created|replayed|error, "
        "status, usage} or {index, outcome: 'error', status, error}.",
    )


@router.post("/usage/batch", response=responses({200: BatchOut}))
def record_usage_batch_view(request: HttpRequest, payload: BatchIn):
    """Record up to API_MAX_BATCH_EVENTS generations; one bad event loses no other."""
    limit = settings.API_MAX_BATCH_EVENTS
    if len(payload.events) > limit:
        raise ApiError(
            413,
            "batch_too_large",
            f"A batch holds at most {limit} events; this one has {len(payload.events)}.",
            fields={"events": f"at most {limit} events"},
        )
    outcomes: list[RecordResult | ServiceError | None] = [None] * len(payload.events)
    parsed = _parse_events(request, payload.events, outcomes)
    companies = _authorized_companies(request, parsed, outcomes)
    todo = [(i, e) for i, e in parsed if outcomes[i] is None]
    recorded = record_usage_batch([e for _, e in todo], companies=companies)
    for (index, _), outcome in zip(todo, recorded, strict=True):
        outcomes[index] = outcome
    _keep_unknown_companies(payload.events, outcomes)
    return {"results": [_result_entry(i, o) for i, o in enumerate(outcomes)]}


def _parse_events(
    request: HttpRequest, raw: list[Any], outcomes: list
) -> list[tuple[int, UsageEvent]]:
    key = request.auth
    default = str(key.company_id) if key.company_id else None
    parsed = []
    for index, item in enumerate(raw):
        try:
            event = event_from_payload(item, default_company=default)
            parsed.append((index, replace(event, api_key=key)))
        except ServiceError as exc:
            outcomes[index] = exc
    return parsed


def _authorized_companies(request: HttpRequest, parsed: list, outcomes: list) -> dict:
    """The companies the events name; for a company key, only its own (403 otherwise)."""
    key = request.auth
    if not key.company_id:
        return resolve_companies([e.company for _, e in parsed])
    refused = NotPermitted(
        "This API key may act only for its own company.",
        fields={"company": "not the company of this API key"},
    )
    companies = {}
    for index, event in parsed:
        ref = event.company.strip()
        if is_same_company(key.company, ref):
            companies[ref] = key.company
        else:
            outcomes[index] = refused
    return companies


def _keep_unknown_companies(raw: list[Any], outcomes: list) -> None:
    unknown = [(raw[i], o) for i, o in enumerate(outcomes) if isinstance(o, CompanyNotFound)]
    if unknown:
        inbox.reject_many(unknown, source="batch")


def _result_entry(index: int, outcome: RecordResult | ServiceError | None) -> dict[str, Any]:
    if isinstance(outcome, RecordResult):
        return {
            "index": index,
            "outcome": "created" if outcome.created else "replayed",
            "status": 201 if outcome.created else 200,
            "usage": usage_body(outcome),
        }
    return {
        "index": index,
        "outcome": "error",
        "status": status_of(outcome),
        "error": error_body(outcome),
    }


# --- Explaining a charge ---------------------------------------------------------------
# After the batch route: `/usage/{usage_id}` would otherwise answer `/usage/batch` (405).


class LedgerEntryOut(Schema):
    id: int
    kind: str
    amount: str
    balance_after: str
    created_at: str
    idempotency_key: str


class ChargeLineOut(Schema):
    dimension: str = Field(
        ..., description="input, cache_read, cache_write_5m, cache_write_1h, output, reasoning"
    )
    tokens: int
    rate_per_million: str
    amount: str = Field(..., description="tokens x rate_per_million / 1,000,000, exact")


class ChargePriceOut(Schema):
    id: int
    model: str
    service_tier: str
    currency: str
    effective_from: str
    effective_to: str | None
    long_context_threshold: int | None


class ChargeOut(Schema):
    price: ChargePriceOut
    service_tier: str
    long_context: bool = Field(..., description="The prompt exceeded the threshold.")
    lines: list[ChargeLineOut]
    total: str = Field(..., description="The lines' exact sum: the row's cost.")


class UsageDetailOut(Schema):
    usage: UsageRowOut
    provider_usage: dict[str, Any] | None = Field(
        ..., description="The provider's usage object as it was sent."
    )
    charge: ChargeOut | None = Field(..., description="Null for reported and unpriced costs.")
    debit: LedgerEntryOut | None = Field(..., description="The ledger entry that debited it.")
    corrections: list[LedgerEntryOut]


def _entry_body(entry) -> dict[str, Any]:
    return {
        "id": entry.pk,
        "kind": entry.kind,
        "amount": plain(entry.amount),
        "balance_after": plain(entry.balance_after),
        "created_at": entry.created_at.astimezone(UTC).isoformat(),
        "idempotency_key": entry.idempotency_key,
    }


@router.get("/usage/{usage_id}", response=responses({200: UsageDetailOut}, READ_ERRORS))
def usage_detail_view(request: HttpRequest, usage_id: str):
    """One recorded generation, its charge line by line, and the ledger entries that
    debited it. A company key sees only its own company's rows."""
    key = request.auth
    explained = explain_usage(usage_id=usage_id, company_id=key.company_id or None)
    if explained is None:
        raise ApiError(
            404, "not_found", f"No usage row {usage_id}.", fields={"usage_id": "not found"}
        )
    debit = explained.debit
    return {
        "usage": row_body(explained.usage),
        "provider_usage": explained.usage.provider_usage,
        "charge": explained.charge.as_json() if explained.charge else None,
        "debit": _entry_body(debit) if debit is not None else None,
        "corrections": [_entry_body(e) for e in explained.corrections],
    }


# --- Jobs and the quota check --------------------------------------------------------


def _job_rules(schema: dict[str, Any]) -> None:
    """usage.jobs.save_job's rules (the model checks types only), in the OpenAPI schema."""
    document(
        schema,
        {
            "company": {"pattern": NON_BLANK},
            "job_id": {"pattern": f"^({CANONICAL_UUID})?$"},
            "title": {"pattern": STORABLE},
            "draft_job_id": {"pattern": STORABLE},
        },
        required=("company",),
    )


class JobIn(Schema):
    model_config = ConfigDict(json_schema_extra=_job_rules)

    company: str | None = Field(
        None,
        description="Company UUID or external id. Required with a platform key; "
        "a company key may leave it out: its own company.",
    )
    job_id: str | None = Field(None, description="UUID; generated when absent.")
    title: str = Field(..., min_length=1, max_length=300)
    draft_job_id: str | None = Field(None, max_length=255)


class JobOut(Schema):
    id: str
    company: str
    title: str
    draft_job_id: str | None
    created: bool
    linked_usage_rows: int


@router.post("/jobs", response=responses({200: JobOut, 201: JobOut}), tags=["jobs"])
def save_job_view(request: HttpRequest, payload: JobIn):
    """The main product saved a job: create it and link its draft usage (idempotent on id)."""
    company = company_for(request, payload.company)
    result = save_job(
        company=company,
        title=payload.title,
        job_id=payload.job_id,
        draft_job_id=payload.draft_job_id or None,
    )
    job = result.job
    body = {
        "id": str(job.pk),
        "company": str(company.pk),
        "title": job.title,
        "draft_job_id": job.draft_id,
        "created": result.created,
        "linked_usage_rows": result.linked_usage_rows,
    }
    return Status(201 if result.created else 200, body)


class LimitsOut(Schema):
    overdraft_allowance: str
    monthly_spend_limit: str | None
    low_balance_threshold: str


class KeyQuotaOut(Schema):
    name: str = Field(..., description="The calling key's name (never its secret).")
    daily_limit: str | None
    monthly_limit: str | None
    day_spend: str = Field(..., description="Today's spend of this key, the company's day.")
    month_spend: str = Field(..., description="This month's spend of this key.")
    held: str = Field(..., description="This key's open holds (reservations).")


class BalanceOut(Schema):
    company: str
    currency: str
    balance: str
    month_to_date_spend: str = Field(..., description="This month in the company's time zone.")
    unpriced_generations_this_month: int = Field(
        ...,
        description="Generations of a model without a price yet: not in month_to_date_spend "
        "until `manage.py reprice_usage` prices them (and debits them).",
    )
    limits: LimitsOut
    low_balance: bool
    allowed: bool = Field(..., description="Whether a new generation may start now.")
    reasons: list[str]
    reason_codes: list[str] = Field(
        ...,
        description="The reasons as stable codes: company_inactive, balance, "
        "company_monthly_limit, key_daily_limit, key_monthly_limit.",
    )
    held: str = Field(
        ..., description="The company's open holds: they count against balance and limits."
    )
    key: KeyQuotaOut | None = Field(
        ..., description="The calling key's limits and spend; null for a platform key."
    )


@router.get(
    "/companies/{company}/balance",
    response=responses({200: BalanceOut}, READ_ERRORS),
    tags=["companies"],
)
def balance_view(request: HttpRequest, company: str):
    """Balance, month-to-date spend, limits and the quota check before a generation."""
    target = company_for(request, company)
    status = quota_status(target, key=request.auth)
    return {
        "company": str(target.pk),
        "currency": target.currency,
        "balance": plain(status.balance),
        "month_to_date_spend": plain(status.month_to_date_spend),
        "unpriced_generations_this_month": status.unpriced_generations,
        "limits": {
            "overdraft_allowance": plain(status.overdraft_allowance),
            "monthly_spend_limit": plain(status.monthly_spend_limit),
            "low_balance_threshold": plain(status.low_balance_threshold),
        },
        "low_balance": status.low_balance,
        "allowed": status.allowed,
        "reasons": list(status.reasons),
        "reason_codes": list(status.reason_codes),
        "held": plain(status.held),
        "key": _key_quota(status.key),
    }


def _key_quota(key) -> dict[str, Any] | None:
    if key is None:
        return None
    return {
        "name": key.key.name,
        "daily_limit": plain(key.daily_limit),
        "monthly_limit": plain(key.monthly_limit),
        "day_spend": plain(key.day_spend),
        "month_spend": plain(key.month_spend),
        "held": plain(key.held),
    }

"""API endpoints for holds on budget (usage.reservations). Thin: parse, authorize, call it."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Router, Schema, Status
from pydantic import BaseModel, ConfigDict

from billing.api import READ_ERRORS, RESERVE_ERRORS, company_for, responses
from billing.models import Reservation, ServiceTier
from billing.money import plain
from core.openapi import NON_BLANK, STORABLE, document
from usage.models import INT32_MAX
from usage.reservations import (
    Estimate,
    get_reservation,
    release,
    reserve,
)
from usage.schemas import WholeNumber, cost_pattern

router = Router(tags=["reservations"])

_TOKENS = ("prompt_tokens", "completion_tokens", "cached_prompt_tokens")


def _estimate_rules(schema: dict[str, Any]) -> None:
    """usage.reservations.estimate_cost's rules: a cost, or a model with its tokens."""
    count = {"type": "integer", "minimum": 0, "maximum": INT32_MAX}
    document(
        schema,
        {
            "cost": {"pattern": cost_pattern(settings.USAGE_MAX_EVENT_COST), "minLength": 1},
            "model": {"maxLength": 100, "pattern": NON_BLANK},
            **dict.fromkeys(_TOKENS, count),
            "service_tier": {"enum": ServiceTier.values},
        },
    )
    for name in ("cost", "model", "service_tier", *_TOKENS):  # absent, never null
        prop = schema["properties"][name]
        prop.pop("default", None)
        if "anyOf" in prop:
            prop["type"] = next(t["type"] for t in prop.pop("anyOf") if t["type"] != "null")
    by_tokens = [{"required": [name]} for name in ("model", *_TOKENS, "service_tier")]
    schema["oneOf"] = [
        {"required": ["cost"], "not": {"anyOf": by_tokens}},
        {
            "required": ["model", "prompt_tokens", "completion_tokens"],
            "not": {"required": ["cost"]},
        },
    ]


class EstimateIn(BaseModel):
    """What the generation is expected to cost: `cost`, or `model` with its expected tokens
    (priced at the price in effect now; cached_prompt_tokens must not exceed prompt_tokens)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_estimate_rules)

    cost: str | None = Field(None, description="A decimal string, e.g. '0.05'.")
    model: str | None = None
    prompt_tokens: WholeNumber | None = None
    completion_tokens: WholeNumber | None = None
    cached_prompt_tokens: WholeNumber | None = Field(None, description="Default 0.")
    service_tier: str | None = Field(None, description="standard (default), batch, flex, priority.")


def _reservation_rules(schema: dict[str, Any]) -> None:
    document(
        schema,
        {
            "company": {"pattern": NON_BLANK},
            "idempotency_key": {"maxLength": 255, "pattern": NON_BLANK},
            "job_id": {"maxLength": 255, "pattern": STORABLE},
            "draft_job_id": {"maxLength": 255, "pattern": STORABLE},
            "ttl_seconds": {"minimum": 1, "maximum": settings.RESERVATION_MAX_TTL_SECONDS},
        },
        required=("company",),
    )


class ReservationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_reservation_rules)

    company: str | None = Field(
        None,
        description="Company UUID or external id. Required with a platform key; a company "
        "key may leave it out: its own company.",
    )
    estimate: EstimateIn
    job_id: str | None = None
    draft_job_id: str | None = None
    idempotency_key: str = Field(
        ..., description="The same key answers the same hold; another body with it is a 409."
    )
    ttl_seconds: WholeNumber | None = Field(
        None,
        description="How long the hold counts (default RESERVATION_DEFAULT_TTL_SECONDS, 900; "
        "at most RESERVATION_MAX_TTL_SECONDS, 86400). Past it the hold counts as released; "
        "a usage event may still settle it.",
    )


class ReservationOut(Schema):
    id: str
    company: str
    status: str = Field(..., description="open, settled, released or expired")
    holding: bool = Field(..., description="Open and not past expires_at: it counts now.")
    amount: str = Field(..., description="The estimate held, exact decimal string.")
    expires_at: str
    created_at: str
    job_id: str | None
    draft_job_id: str | None
    idempotency_key: str
    api_key: str | None = Field(..., description="The name of the key that asked for it.")
    settled_usage_id: str | None
    settled_cost: str | None


def reservation_body(hold: Reservation, *, now=None) -> dict[str, Any]:
    return {
        "id": str(hold.pk),
        "company": str(hold.company_id),
        "status": hold.status,
        "holding": hold.is_holding(now or timezone.now()),
        "amount": plain(hold.amount),
        "expires_at": hold.expires_at.astimezone(UTC).isoformat(),
        "created_at": hold.created_at.astimezone(UTC).isoformat(),
        "job_id": hold.job_id,
        "draft_job_id": hold.draft_job_id,
        "idempotency_key": hold.idempotency_key,
        "api_key": hold.api_key.name if hold.api_key_id else None,
        "settled_usage_id": str(hold.settled_usage_id) if hold.settled_usage_id else None,
        "settled_cost": plain(hold.settled_cost),
    }


RESERVATION_LINK = {
    "links": {
        "ReservationDetail": {
            "operationId": "usage_reservations_api_reservation_view",
            "parameters": {"reservation_id": "$response.body#/id"},
        },
        "ReleaseReservation": {
            "operationId": "usage_reservations_api_release_view",
            "parameters": {"reservation_id": "$response.body#/id"},
        },
    }
}


@router.post(
    "/reservations",
    response=responses({200: ReservationOut, 201: ReservationOut}, RESERVE_ERRORS),
    openapi_extra={"responses": {201: RESERVATION_LINK}},
)
def reserve_view(request: HttpRequest, payload: ReservationIn):
    """Hold the estimate's cost before a generation starts: 201 with the hold (200 for a
    replay), or 402 `budget_exceeded` naming every line it would cross."""
    company = company_for(request, payload.company)
    estimate = Estimate(**payload.estimate.model_dump())
    result = reserve(
        company=company,
        api_key=request.auth,
        estimate=estimate,
        idempotency_key=payload.idempotency_key,
        job_id=payload.job_id,
        draft_job_id=payload.draft_job_id,
        ttl_seconds=payload.ttl_seconds,
    )
    return Status(201 if result.created else 200, reservation_body(result.reservation))


@router.get(
    "/reservations/{reservation_id}",
    response=responses({200: ReservationOut}, READ_ERRORS),
)
def reservation_view(request: HttpRequest, reservation_id: str):
    """One hold as it is now. A company key sees only its own company's holds."""
    hold = get_reservation(
        reservation_id=reservation_id, company_id=request.auth.company_id or None
    )
    return reservation_body(hold)


@router.delete(
    "/reservations/{reservation_id}",
    response=responses({200: ReservationOut}, READ_ERRORS),
)
def release_view(request: HttpRequest, reservation_id: str):
    """Release a hold; idempotent: a hold already closed (released, settled, expired)
    answers as it is."""
    hold = release(reservation_id=reservation_id, company_id=request.auth.company_id or None)
    return reservation_body(hold)

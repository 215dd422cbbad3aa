"""The JSON shape of a usage event, and how a payload becomes a UsageEvent.

Used by the API (single and batch endpoints) and by the rejected-events inbox,
so a payload is read the same way wherever it comes from. The schema only
checks *types*; the rules (non-negative, int32, cached <= prompt, offsets on
timestamps, the future-skew limit) are the recording service's, in
usage.events.validate_event, so their messages reach the caller unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import pydantic
from django.conf import settings
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict
from pydantic_core import PydanticCustomError

from billing.models import ServiceTier
from core.errors import InvalidInput
from core.openapi import CANONICAL_UUID, NON_BLANK, STORABLE, document
from core.text import unstorable_path
from usage.events import UsageEvent
from usage.models import INT32_MAX
from usage.providers import FLAT_TOKEN_FIELDS, PROVIDERS, SERVICE_TIER_ALIASES, event_fields

# Readable reasons for pydantic's error types (the rest keep pydantic's message).
_REASONS = {
    "missing": "is required",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "string_type": "must be a string",
    "datetime_type": "must be an ISO 8601 timestamp with an offset (e.g. 2026-11-01T12:00:00Z)",
    "datetime_parsing": "must be an ISO 8601 timestamp with an offset (e.g. 2026-11-01T12:00:00Z)",
    "datetime_from_date_parsing": "must be an ISO 8601 timestamp with an offset (e.g. 2026-11-01T12:00:00Z)",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "list_type": "must be a list",
    "string_too_long": "is too long",
    "string_too_short": "must not be empty",
    "too_long": "has too many items",
    "extra_forbidden": "is not a field of a usage event",
}


def _integral_float_as_int(value: Any) -> Any:
    # JSON has one number type: 12.0 is the integer 12 (JSON Schema says so too).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _timestamp_text_only(value: Any) -> Any:
    # pydantic reads a number as Unix seconds: 0 would be 1970, not a typo refused.
    if value is not None and not isinstance(value, str | datetime):
        raise PydanticCustomError("datetime_type", "Input should be a valid datetime")
    return value


WholeNumber = Annotated[int, BeforeValidator(_integral_float_as_int), Strict()]
Timestamp = Annotated[datetime | None, BeforeValidator(_timestamp_text_only)]


def cost_pattern(limit: Decimal) -> str:
    """Plain decimals from 0 to `limit` (an integer), or empty: a subset of what
    usage.events accepts (it also reads exponents and negative zero)."""
    digits = len(str(int(limit)))
    return rf"^$|^0*([0-9]{{1,{digits - 1}}}(\.[0-9]*)?|\.[0-9]+|{int(limit)}(\.0*)?)$"


def _usage_rules(schema: dict[str, Any]) -> None:
    """usage.events.validate_event's rules, written into the OpenAPI schema."""
    text = {"pattern": STORABLE}
    count = {"minimum": 0, "maximum": INT32_MAX}
    document(
        schema,
        {
            "company": {"pattern": NON_BLANK},
            "job_id": {"maxLength": 255, **text},
            "draft_job_id": {"maxLength": 255, **text},
            "model": {"maxLength": 100, "pattern": NON_BLANK},
            "idempotency_key": {"maxLength": 255, "pattern": NON_BLANK},
            "cost": {"pattern": cost_pattern(settings.USAGE_MAX_EVENT_COST)},
            **dict.fromkeys(FLAT_TOKEN_FIELDS, count),
            "question_count": count,
            "processing_time_ms": count,
            "provider": {"enum": list(PROVIDERS)},
            "service_tier": {"enum": [*ServiceTier.values, *SERVICE_TIER_ALIASES]},
            "metadata": {"propertyNames": text},
            "reservation_id": {"pattern": f"^{CANONICAL_UUID}$"},
        },
        required=("company",),
        one_of_required=("job_id", "draft_job_id"),
    )
    # The tokens come as the flat fields or as the provider's own usage object.
    # Present and not null: a null count, or a null provider object, is no tokens.
    tokens = [
        {
            "required": ["prompt_tokens", "completion_tokens"],
            "properties": {
                name: {"type": "integer"} for name in ("prompt_tokens", "completion_tokens")
            },
        },
        {
            "required": ["provider", "usage"],
            "properties": {"provider": {"type": "string"}, "usage": {"type": "object"}},
        },
    ]
    schema["allOf"] = [{"anyOf": schema.pop("anyOf")}, {"anyOf": tokens}]


class UsageIn(BaseModel):
    """One generation, as the main product reports it.

    A plain pydantic model (not ninja.Schema, whose attribute-getter wrapper
    tripled the validation time of a 1,000-event batch). The tokens come as
    the flat fields or as `provider` + `usage` (the provider's own object,
    usage.providers); an unknown field is refused, never dropped.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_usage_rules)

    company: str | None = Field(
        None,
        description="Company UUID or external id. Required with a platform key (422 "
        "without); a company key may leave it out: its own company.",
    )
    job_id: str | None = Field(None, description="Saved job id, or a not-yet-saved job's id.")
    draft_job_id: str | None = Field(None, description="Temporary id of a draft job.")
    model: str
    prompt_tokens: WholeNumber | None = Field(
        None, description="Every input token: uncached, cache reads and cache writes."
    )
    cached_prompt_tokens: WholeNumber | None = Field(
        None, description="Cache reads (inside prompt_tokens); default 0."
    )
    cache_write_5m_tokens: WholeNumber | None = Field(
        None, description="Cache writes at the default lifetime (5 minutes); default 0."
    )
    cache_write_1h_tokens: WholeNumber | None = Field(
        None, description="1-hour cache writes; default 0."
    )
    completion_tokens: WholeNumber | None = Field(
        None, description="Every output token, reasoning included."
    )
    reasoning_tokens: WholeNumber | None = Field(
        None, description="Reasoning tokens (inside completion_tokens); default 0."
    )
    provider: str | None = Field(None, description="openai, anthropic or gemini, with usage.")
    usage: dict[str, Any] | None = Field(
        None, description="The provider's usage object as its SDK serialises it."
    )
    service_tier: str | None = Field(
        None, description="standard (default), batch, flex or priority."
    )
    question_count: WholeNumber = 0
    cost: str | None = Field(None, description="Reported cost, a decimal string (e.g. '0.0125').")
    occurred_at: Timestamp = Field(
        None,
        description="ISO 8601 with offset, from 1970 to at most USAGE_MAX_FUTURE_SKEW_SECONDS "
        "(300) ahead of the server's clock; default now.",
    )
    idempotency_key: str
    metadata: dict[str, Any] | None = None
    processing_time_ms: WholeNumber | None = None
    reservation_id: str | None = Field(
        None,
        description="The hold (POST /reservations) this generation settles: its cost is "
        "debited and the hold closed in the same transaction.",
    )

    def to_event(self, default_company: str | None = None) -> UsageEvent:
        """The event; InvalidInput when its tokens are missing or contradict themselves."""
        tokens = event_fields(
            provider=self.provider,
            usage=self.usage,
            service_tier=self.service_tier,
            flat={name: getattr(self, name) for name in FLAT_TOKEN_FIELDS},
        )
        return UsageEvent(
            company=self.company or default_company or "",
            idempotency_key=self.idempotency_key,
            model=self.model,
            question_count=self.question_count or 0,
            job_id=self.job_id,
            draft_job_id=self.draft_job_id,
            cost=self.cost,
            occurred_at=self.occurred_at,
            metadata=self.metadata or {},
            processing_time_ms=self.processing_time_ms,
            reservation_id=self.reservation_id,
            **tokens,
        )


def readable_errors(errors: Iterable[dict], *, skip: int = 0) -> dict[str, str]:
    """pydantic errors as {field: reason}; `skip` drops leading location parts."""
    fields: dict[str, str] = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())][skip:]
        name = ".".join(loc) or "body"
        reason = _REASONS.get(error.get("type", ""), error.get("msg", "is invalid"))
        if name == "body" and error.get("type") in ("model_type", "dict_type"):
            reason = "must be a JSON object"
        fields.setdefault(name, reason)
    return fields


def validation_error(fields: dict[str, str], what: str = "usage event") -> InvalidInput:
    detail = "; ".join(f"{name} {reason}" for name, reason in fields.items())
    return InvalidInput(f"Invalid {what}: {detail}", fields=fields)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of range")
    return value


def strict_json_loads(data: str | bytes) -> Any:
    """json.loads without NaN, Infinity or numbers that overflow to infinity.

    Python reads them; PostgreSQL's jsonb refuses them, so they would fail at
    the insert (a 500, or an import ended mid-file). ValueError instead.
    """
    return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)


def event_from_payload(payload: Any, *, default_company: str | None = None) -> UsageEvent:
    """Read one JSON event; InvalidInput naming the fields if its types are wrong."""
    if not isinstance(payload, dict):
        raise validation_error({"event": "must be a JSON object"})
    if (bad := unstorable_path(payload)) is not None:
        raise validation_error(dict([bad]))
    try:
        parsed = UsageIn.model_validate(payload)
    except pydantic.ValidationError as exc:
        raise validation_error(readable_errors(exc.errors()))
    event = parsed.to_event(default_company)
    if not event.company.strip():
        raise validation_error({"company": "is required"})
    return event

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
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from core.errors import InvalidInput
from usage.events import UsageEvent
from usage.providers import FLAT_TOKEN_FIELDS, event_fields

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


class UsageIn(BaseModel):
    """One generation, as the main product reports it.

    A plain pydantic model (not ninja.Schema, whose attribute-getter wrapper
    tripled the validation time of a 1,000-event batch). The tokens come as
    the flat fields or as `provider` + `usage` (the provider's own object);
    an unknown field is refused, never dropped.
    """

    model_config = ConfigDict(extra="forbid")

    company: str | None = Field(
        None,
        description="Company UUID or external id (defaults to the key's company for company keys).",
    )
    job_id: str | None = Field(None, description="Saved job id, or a not-yet-saved job's id.")
    draft_job_id: str | None = Field(None, description="Temporary id of a draft job.")
    model: str
    prompt_tokens: StrictInt | None = Field(
        None, description="Every input token: uncached, cache reads and cache writes."
    )
    cached_prompt_tokens: StrictInt | None = Field(None, description="Cache reads; default 0.")
    cache_write_5m_tokens: StrictInt | None = Field(
        None, description="Cache writes at the default lifetime (5 minutes); default 0."
    )
    cache_write_1h_tokens: StrictInt | None = Field(
        None, description="1-hour cache writes; default 0."
    )
    completion_tokens: StrictInt | None = Field(
        None, description="Every output token, reasoning included."
    )
    reasoning_tokens: StrictInt | None = Field(None, description="Reasoning tokens; default 0.")
    provider: str | None = Field(None, description="openai, anthropic or gemini, with usage.")
    usage: dict[str, Any] | None = Field(
        None, description="The provider's usage object as its SDK serialises it."
    )
    service_tier: str | None = Field(
        None, description="standard (default), batch, flex or priority."
    )
    question_count: StrictInt = 0
    cost: str | None = Field(None, description="Reported cost, a decimal string (e.g. '0.0125').")
    occurred_at: datetime | None = Field(None, description="ISO 8601 with offset; default now.")
    idempotency_key: str
    metadata: dict[str, Any] | None = None
    processing_time_ms: StrictInt | None = None

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


def nul_path(value: Any, skip_keys: frozenset[str] = frozenset()) -> str | None:
    """The dotted path of the first string (or key) holding a NUL character, if any.

    PostgreSQL text and jsonb cannot store NUL, so such a value would fail in
    the database (a 500); it is refused as a validation error instead.
    Iterative, so deep nesting cannot exhaust the stack. `skip_keys` are
    top-level keys checked elsewhere (the batch checks each event itself).
    """
    stack: list[tuple[str, Any]] = (
        [(str(k), v) for k, v in value.items() if k not in skip_keys]
        if isinstance(value, dict)
        else [("", value)]
    )
    while stack:
        path, item = stack.pop()
        if "\x00" in path or (isinstance(item, str) and "\x00" in item):
            return path.replace("\x00", "\\u0000") or "body"
        if isinstance(item, dict):
            stack.extend((f"{path}.{k}" if path else str(k), v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{path}.{i}" if path else str(i), v) for i, v in enumerate(item))
    return None


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


NUL_REASON = "must not contain NUL (\\u0000) characters"


def event_from_payload(payload: Any, *, default_company: str | None = None) -> UsageEvent:
    """Read one JSON event; InvalidInput naming the fields if its types are wrong."""
    if not isinstance(payload, dict):
        raise validation_error({"event": "must be a JSON object"})
    if (where := nul_path(payload)) is not None:
        raise validation_error({where: NUL_REASON})
    try:
        parsed = UsageIn.model_validate(payload)
    except pydantic.ValidationError as exc:
        raise validation_error(readable_errors(exc.errors()))
    event = parsed.to_event(default_company)
    if not event.company.strip():
        raise validation_error({"company": "is required"})
    return event

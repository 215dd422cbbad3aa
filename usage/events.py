"""A usage event as a caller describes it, its checks, and its fingerprint.

Every entry point (the API, the batch endpoint, the importer, the rejected-
events inbox, the demo) builds a :class:`UsageEvent` and hands it to
usage.recording; the rules here are the only ones, so their messages reach
every caller unchanged.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from billing.models import APIKey, Company, ServiceTier
from billing.money import AmountError, quantize_amount
from billing.prices import Tokens
from core.errors import InvalidInput
from usage.models import INT32_MAX
from usage.providers import NOT_PRICED


@dataclass(frozen=True)
class UsageEvent:
    """One generation as a caller describes it (already parsed, not yet checked).

    The token counts are the canonical breakdown (docs/api.md): a provider's
    own usage object is read into them (usage.providers) and kept verbatim
    in `provider_usage`; `unpriced_fields` names what it reported that no
    price covers (refused unless the event reports its cost).
    """

    company: str
    idempotency_key: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0
    question_count: int = 0
    job_id: str | None = None
    draft_job_id: str | None = None
    cost: Decimal | str | None = None
    occurred_at: datetime | None = None
    metadata: dict = field(default_factory=dict)
    processing_time_ms: int | None = None
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    service_tier: str = ServiceTier.STANDARD
    provider: str = ""
    provider_usage: dict | None = None
    unpriced_fields: tuple[str, ...] = ()
    # The hold this generation settles (usage.reservations), and the key that
    # sent it (set by the API from the authenticated key; None for imports).
    reservation_id: str | None = None
    api_key: APIKey | None = None

    def tokens(self) -> Tokens:
        return Tokens(
            prompt=self.prompt_tokens,
            completion=self.completion_tokens,
            cached=self.cached_prompt_tokens,
            cache_write_5m=self.cache_write_5m_tokens,
            cache_write_1h=self.cache_write_1h_tokens,
            reasoning=self.reasoning_tokens,
        )


COUNT_FIELDS = (
    "prompt_tokens",
    "cached_prompt_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "question_count",
)

# A set once: `ServiceTier.values` builds a new list at every access.
SERVICE_TIERS = frozenset(ServiceTier.values)
_FINGERPRINT_DEFAULTS = (0, 0, 0, "standard", "", None)

EARLIEST_OCCURRED_AT = datetime(1970, 1, 1, tzinfo=UTC)


def _check_count(name: str, value: object, errors: dict[str, str]) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        errors[name] = "must be a whole number"
    elif value < 0:
        errors[name] = "must not be negative"
    elif value > INT32_MAX:
        errors[name] = f"must be at most {INT32_MAX}"


def validate_event(event: UsageEvent, *, now: datetime) -> Decimal | None:
    """Raise InvalidInput naming every bad field; return the reported cost."""
    errors: dict[str, str] = {}
    for name in COUNT_FIELDS:
        _check_count(name, getattr(event, name), errors)
    if event.processing_time_ms is not None:
        _check_count("processing_time_ms", event.processing_time_ms, errors)
    if not errors:
        _check_breakdown(event, errors)
    if event.service_tier not in SERVICE_TIERS:
        errors["service_tier"] = f"must be one of {', '.join(ServiceTier.values)}"
    if not (event.idempotency_key or "").strip():
        errors["idempotency_key"] = "is required"
    elif len(event.idempotency_key) > 255:
        errors["idempotency_key"] = "must be at most 255 characters"
    if not (event.model or "").strip():
        errors["model"] = "is required"
    elif len(event.model) > 100:
        errors["model"] = "must be at most 100 characters"
    if not event.job_id and not event.draft_job_id:
        errors["job_id"] = "job_id or draft_job_id is required"
    for name in ("job_id", "draft_job_id"):
        value = getattr(event, name)
        if value is not None and len(str(value)) > 255:
            errors[name] = "must be at most 255 characters"
    cost = _check_occurred_and_cost(event, now, errors)
    if cost is None and "cost" not in errors:
        for path in event.unpriced_fields:
            errors[path] = NOT_PRICED
    if not isinstance(event.metadata, dict):
        errors["metadata"] = "must be an object"
    if event.reservation_id is not None and not is_canonical_uuid(event.reservation_id):
        errors["reservation_id"] = "must be a reservation's id (a UUID)"
    if errors:
        raise InvalidInput(
            "Invalid usage event: " + "; ".join(f"{k} {v}" for k, v in errors.items()),
            fields=errors,
        )
    return cost


def is_canonical_uuid(value: object) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _check_breakdown(event: UsageEvent, errors: dict[str, str]) -> None:
    """Parts never exceed their whole: cache reads and writes are part of the prompt,
    reasoning part of the completion."""
    writes = event.cache_write_5m_tokens + event.cache_write_1h_tokens
    if event.cached_prompt_tokens > event.prompt_tokens:
        errors["cached_prompt_tokens"] = "must not exceed prompt_tokens"
    elif event.cached_prompt_tokens + writes > event.prompt_tokens:
        name = "cache_write_5m_tokens" if event.cache_write_5m_tokens else "cache_write_1h_tokens"
        errors[name] = "cached_prompt_tokens and the cache writes must not exceed prompt_tokens"
    if event.reasoning_tokens > event.completion_tokens:
        errors["reasoning_tokens"] = "must not exceed completion_tokens"


def _check_occurred_and_cost(
    event: UsageEvent, now: datetime, errors: dict[str, str]
) -> Decimal | None:
    if event.occurred_at is not None:
        if timezone.is_naive(event.occurred_at):
            errors["occurred_at"] = "must carry a UTC offset (e.g. 2026-11-01T12:00:00Z)"
        else:
            skew = timedelta(seconds=settings.USAGE_MAX_FUTURE_SKEW_SECONDS)
            if event.occurred_at > now + skew:
                errors["occurred_at"] = f"must not be more than {skew} in the future"
            elif event.occurred_at < EARLIEST_OCCURRED_AT:
                # Year 1 and the like overflow the company's local day (a 500).
                errors["occurred_at"] = f"must not be before {EARLIEST_OCCURRED_AT.isoformat()}"
    if event.cost is None or event.cost == "":
        return None
    try:
        cost = quantize_amount(event.cost)
    except AmountError as exc:
        errors["cost"] = str(exc)
        return None
    if cost < 0:
        errors["cost"] = "must not be negative"
    elif cost > settings.USAGE_MAX_EVENT_COST:
        errors["cost"] = f"must be at most {settings.USAGE_MAX_EVENT_COST} for one generation"
    return cost


def fingerprint(event: UsageEvent, company: Company, cost: Decimal | None) -> str:
    """A stable hash of what was asked, to tell a replay from a conflicting reuse."""
    payload = {
        "company": str(company.pk),
        "job_id": event.job_id,
        "draft_job_id": event.draft_job_id,
        "model": event.model,
        "prompt_tokens": event.prompt_tokens,
        "cached_prompt_tokens": event.cached_prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "question_count": event.question_count,
        "cost": None if cost is None else str(cost),
        # The instant, not its notation: 13:00+01:00 and 12:00Z are the same event.
        "occurred_at": (
            event.occurred_at.astimezone(UTC).isoformat() if event.occurred_at else None
        ),
        "metadata": event.metadata,
        "processing_time_ms": event.processing_time_ms,
    }
    # Only what differs from a flat standard event, so that a retry of an event
    # recorded before these fields existed still matches its fingerprint.
    extra = (
        event.cache_write_5m_tokens,
        event.cache_write_1h_tokens,
        event.reasoning_tokens,
        event.service_tier,
        event.provider,
        event.provider_usage,
    )
    if extra != _FINGERPRINT_DEFAULTS:
        names = ("cache_write_5m_tokens", "cache_write_1h_tokens", "reasoning_tokens",
                 "service_tier", "provider", "provider_usage")  # fmt: skip
        payload.update(
            {n: v for n, v, d in zip(names, extra, _FINGERPRINT_DEFAULTS, strict=True) if v != d}
        )
    if event.reservation_id is not None:
        payload["reservation_id"] = event.reservation_id.lower()
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()

"""Schemathesis hooks for the API contract run (.ci/api_contract).

The OpenAPI schema states every rule JSON Schema can (types, lengths, ranges,
patterns, required properties). Three it cannot: the token breakdown's
relations between fields (cache reads and writes within prompt_tokens,
reasoning within completion_tokens), occurred_at between 1970 and a few
minutes after the server's clock (a bound that moves), a reservation
estimate's cache reads within its prompt, and the shape of a
provider's own usage object, which depends on `provider` (usage.providers
reads each shape strictly; the schema names the field, not the four shapes).
Generated *positive* cases are brought, just before they are sent, within them here (the provider object
replaced by the flat fields), so that "a request the schema admits is
accepted" is checked for everything else; negative cases are left as
generated. tests/api cover the refusals of all three.
"""

from __future__ import annotations

from datetime import UTC, datetime

import schemathesis

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(event: dict, name: str) -> int:
    value = event.get(name)
    return value if _is_count(value) else 0


COUNTS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_prompt_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)


def _whole_numbers(event: dict) -> None:
    """JSON's 12.0 is the integer 12 (the API reads it so): compare them as integers."""
    for name in COUNTS:
        value = event.get(name)
        if isinstance(value, float) and value.is_integer():
            event[name] = int(value)


def _within_token_rules(event: dict) -> None:
    _whole_numbers(event)
    if "provider" in event or "usage" in event:
        event.pop("provider", None)
        event.pop("usage", None)
    for name in ("prompt_tokens", "completion_tokens"):
        if event.get(name) is None:
            event[name] = 0
    room = _count(event, "prompt_tokens")
    for name in ("cached_prompt_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens"):
        if _is_count(event.get(name)):
            event[name] = min(_count(event, name), room)
            room -= event[name]
    if _is_count(event.get("reasoning_tokens")):
        event["reasoning_tokens"] = min(
            event["reasoning_tokens"], _count(event, "completion_tokens")
        )


def _within_rules(event: dict) -> None:
    _within_token_rules(event)
    moment = event.get("occurred_at")
    if isinstance(moment, str):
        try:
            parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return
        if parsed.tzinfo is None or not EARLIEST <= parsed <= datetime.now(UTC):
            event["occurred_at"] = datetime.now(UTC).isoformat()


def _estimate_within_rules(body: dict) -> None:
    """A reservation's estimate: cache reads within its prompt (usage.reservations)."""
    estimate = body.get("estimate")
    if isinstance(estimate, dict):
        _whole_numbers(estimate)
    if isinstance(estimate, dict) and isinstance(estimate.get("cached_prompt_tokens"), int):
        estimate["cached_prompt_tokens"] = min(
            estimate["cached_prompt_tokens"], _count(estimate, "prompt_tokens")
        )


@schemathesis.hook
def before_call(context, case, kwargs):
    # before_call, not map_case: the stateful phase fills a case from an earlier
    # response (its links) after generation, and only this hook sees what is sent.
    meta = case.meta
    if meta is not None and meta.generation.mode.is_positive and isinstance(case.body, dict):
        if case.operation.path.startswith("/api/v1/reservations"):
            _estimate_within_rules(case.body)
        else:
            _within_rules(case.body)

"""Schemathesis hooks for the API contract run (.ci/api_contract).

The OpenAPI schema states every rule JSON Schema can (types, lengths, ranges,
patterns, required properties). Two rules it cannot: cached_prompt_tokens <=
prompt_tokens (a relation between fields) and occurred_at between 1970 and a
few minutes after the server's clock (a bound that moves). Generated
*positive* cases are brought within them here, so that "a request the schema
admits is accepted" is checked for everything else; negative cases are left
as generated. tests/api cover the refusals of both rules.
"""

from __future__ import annotations

from datetime import UTC, datetime

import schemathesis

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def _within_rules(event: dict) -> None:
    prompt, cached = event.get("prompt_tokens"), event.get("cached_prompt_tokens")
    if isinstance(prompt, int) and isinstance(cached, int) and cached > prompt:
        event["cached_prompt_tokens"] = prompt
    moment = event.get("occurred_at")
    if isinstance(moment, str):
        try:
            parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return
        if parsed.tzinfo is None or not EARLIEST <= parsed <= datetime.now(UTC):
            event["occurred_at"] = datetime.now(UTC).isoformat()


@schemathesis.hook
def map_case(context, case):
    meta = case.meta
    if meta is not None and meta.generation.mode.is_positive and isinstance(case.body, dict):
        _within_rules(case.body)
    return case

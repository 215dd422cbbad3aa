"""The providers' own usage objects, read into the one canonical token breakdown.

A caller may send `"provider"` with `"usage"`, the provider's usage object as
its SDK serialises it, instead of the flat token fields. Each shape is read
strictly: every field it may carry is known, an unknown one is refused (a new
billed dimension must never be dropped silently), counts must be whole and
non-negative, and numbers that contradict each other are refused, each error
naming its path (`usage.prompt_tokens_details.cached_tokens`).

The inclusion rules (docs/api.md, "The token breakdown"):

- OpenAI Chat Completions and Responses: cache reads and cache writes are
  inside `prompt_tokens` / `input_tokens`, reasoning inside
  `completion_tokens` / `output_tokens`.
- Anthropic Messages: cache reads and cache writes are *beside*
  `input_tokens`, so the prompt is their sum; thinking is billed inside
  `output_tokens` (output_tokens_details is informational).
- Gemini: `cachedContentTokenCount` is inside `promptTokenCount`, tool-use
  prompt tokens beside it; `thoughtsTokenCount` is beside
  `candidatesTokenCount`, so the completion is their sum.

Audio, 12-hour cache writes, server tools and other dimensions this service
does not price are refused when non-zero unless the event reports its cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.errors import InvalidInput
from usage.models import INT32_MAX

PROVIDERS = ("openai", "anthropic", "gemini")
# OpenAI answers `service_tier: "default"` for the standard tier.
SERVICE_TIER_ALIASES = {"default": "standard"}
FLAT_TOKEN_FIELDS = (
    "prompt_tokens",
    "cached_prompt_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "completion_tokens",
    "reasoning_tokens",
)
NOT_PRICED = "is not priced by this service; send the event's cost with it"


@dataclass(frozen=True)
class Breakdown:
    """What a provider's usage object says, in the canonical breakdown."""

    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    service_tier: str | None = None  # when the object names it
    unpriced: tuple[str, ...] = ()  # paths of non-zero dimensions nobody prices


class _Reader:
    """Reads one object strictly, gathering errors by their dotted path."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors

    def obj(self, value: Any, path: str, known: set[str], what: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.errors[path] = "must be an object"
            return {}
        for key in value:
            if key not in known:
                self.errors[f"{path}.{key}"] = f"is not a field of {what}"
        return value

    def count(self, obj: dict, key: str, path: str, *, required: bool = False) -> int:
        value = obj.get(key)
        where = f"{path}.{key}"
        if value is None:
            if required:
                self.errors[where] = "is required"
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            self.errors[where] = "must be a whole number"
        elif value < 0:
            self.errors[where] = "must not be negative"
        elif value > INT32_MAX:
            self.errors[where] = f"must be at most {INT32_MAX}"
        else:
            return value
        return 0

    def at_most(self, part: int, part_path: str, whole: int, whole_path: str) -> None:
        if part > whole and part_path not in self.errors:
            self.errors[part_path] = f"must not exceed {whole_path}"

    def total(self, obj: dict, key: str, path: str, expected: int, rule: str) -> None:
        given = self.count(obj, key, path)
        if key in obj and obj[key] is not None and given != expected and not self.errors:
            self.errors[f"{path}.{key}"] = f"must equal {rule} ({expected})"


def read_usage(provider: Any, usage: Any) -> Breakdown:
    """The canonical breakdown of `usage` as `provider` reports it; InvalidInput naming
    every field at fault."""
    if provider not in PROVIDERS:
        raise InvalidInput(
            f"Invalid usage event: provider must be one of {', '.join(PROVIDERS)}",
            fields={"provider": f"must be one of {', '.join(PROVIDERS)}"},
        )
    if not isinstance(usage, dict):
        raise InvalidInput(
            "Invalid usage event: usage must be an object", fields={"usage": "must be an object"}
        )
    errors: dict[str, str] = {}
    breakdown = _READERS[provider](_Reader(errors), usage)
    if errors:
        detail = "; ".join(f"{k} {v}" for k, v in errors.items())
        raise InvalidInput(f"Invalid usage event: {detail}", fields=errors)
    return breakdown


def event_fields(
    *, provider: Any, usage: Any, service_tier: Any, flat: dict[str, Any]
) -> dict[str, Any]:
    """The UsageEvent fields of an event's tokens and tier, from the flat fields or
    from `provider` + `usage` (never both); InvalidInput naming what is wrong.

    `flat` holds the flat token fields the caller gave (absent ones left out).
    """
    tier = SERVICE_TIER_ALIASES.get(service_tier, service_tier)
    if provider is None and usage is None:
        for name in ("prompt_tokens", "completion_tokens"):
            if flat.get(name) is None:
                raise InvalidInput(
                    f"Invalid usage event: {name} is required (or provider and usage)",
                    fields={name: "is required (or provider and usage)"},
                )
        fields = {name: flat.get(name) or 0 for name in FLAT_TOKEN_FIELDS}
        return fields | {"service_tier": tier or "standard"}
    given = {name: "must not be given with usage" for name in flat if flat[name] is not None}
    if provider is None or usage is None:
        given["provider" if provider is None else "usage"] = "is required with " + (
            "usage" if provider is None else "provider"
        )
    if given:
        detail = "; ".join(f"{k} {v}" for k, v in given.items())
        raise InvalidInput(f"Invalid usage event: {detail}", fields=given)
    b = read_usage(provider, usage)
    if tier is not None and b.service_tier is not None and tier != b.service_tier:
        raise InvalidInput(
            f"Invalid usage event: service_tier {tier} contradicts the usage object's {b.service_tier}",
            fields={"service_tier": f"contradicts the usage object's {b.service_tier}"},
        )
    return {
        "prompt_tokens": b.prompt_tokens,
        "cached_prompt_tokens": b.cached_prompt_tokens,
        "cache_write_5m_tokens": b.cache_write_5m_tokens,
        "cache_write_1h_tokens": b.cache_write_1h_tokens,
        "completion_tokens": b.completion_tokens,
        "reasoning_tokens": b.reasoning_tokens,
        "service_tier": tier or b.service_tier or "standard",
        "provider": provider,
        "provider_usage": usage,
        "unpriced_fields": b.unpriced,
    }


# --- OpenAI ----------------------------------------------------------------------------

_CHAT = {
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
}
_CHAT_PROMPT_DETAILS = {"cached_tokens", "cache_write_tokens", "audio_tokens", "image_tokens", "text_tokens"}  # fmt: skip
_CHAT_COMPLETION_DETAILS = {
    "reasoning_tokens",
    "audio_tokens",
    "accepted_prediction_tokens",
    "rejected_prediction_tokens",
    "text_tokens",
}
_RESPONSES = {
    "input_tokens",
    "input_tokens_details",
    "output_tokens",
    "output_tokens_details",
    "total_tokens",
}
_RESPONSES_INPUT_DETAILS = {"cached_tokens", "cache_write_tokens", "cache_write_tokens_details"}
_RESPONSES_WRITE_DETAILS = {"ttl_30m_tokens", "ttl_12h_tokens"}


def _openai(r: _Reader, usage: dict) -> Breakdown:
    """Chat Completions (`prompt_tokens`) or Responses (`input_tokens`), told apart by
    their fields."""
    chat = bool((_CHAT - {"total_tokens"}) & usage.keys())
    responses = bool((_RESPONSES - {"total_tokens"}) & usage.keys())
    if chat and responses:
        r.errors["usage"] = (
            "mixes the Chat Completions fields (prompt_tokens, ...) with the Responses "
            "fields (input_tokens, ...)"
        )
        return Breakdown(0, 0)
    if responses:
        return _openai_responses(r, usage)
    return _openai_chat(r, usage)


def _openai_chat(r: _Reader, usage: dict) -> Breakdown:
    what = "an OpenAI Chat Completions usage object"
    u = r.obj(usage, "usage", _CHAT, what)
    prompt = r.count(u, "prompt_tokens", "usage", required=True)
    completion = r.count(u, "completion_tokens", "usage", required=True)
    pd_path, cd_path = "usage.prompt_tokens_details", "usage.completion_tokens_details"
    pd = r.obj(u.get("prompt_tokens_details"), pd_path, _CHAT_PROMPT_DETAILS, what)
    cd = r.obj(u.get("completion_tokens_details"), cd_path, _CHAT_COMPLETION_DETAILS, what)
    cached = r.count(pd, "cached_tokens", pd_path)
    writes = r.count(pd, "cache_write_tokens", pd_path)
    reasoning = r.count(cd, "reasoning_tokens", cd_path)
    for obj, path in ((pd, pd_path), (cd, cd_path)):
        for key in sorted(obj.keys() - {"cached_tokens", "cache_write_tokens", "reasoning_tokens"}):
            r.count(obj, key, path)
    r.at_most(cached + writes, f"{pd_path}.cached_tokens", prompt, "usage.prompt_tokens")
    r.at_most(reasoning, f"{cd_path}.reasoning_tokens", completion, "usage.completion_tokens")
    r.total(u, "total_tokens", "usage", prompt + completion, "prompt_tokens + completion_tokens")
    unpriced = _nonzero(r, [(pd, pd_path, "audio_tokens"), (cd, cd_path, "audio_tokens")])
    return Breakdown(prompt, completion, cached, writes, 0, reasoning, unpriced=unpriced)


def _openai_responses(r: _Reader, usage: dict) -> Breakdown:
    what = "an OpenAI Responses usage object"
    u = r.obj(usage, "usage", _RESPONSES, what)
    prompt = r.count(u, "input_tokens", "usage", required=True)
    completion = r.count(u, "output_tokens", "usage", required=True)
    id_path, od_path = "usage.input_tokens_details", "usage.output_tokens_details"
    idet = r.obj(u.get("input_tokens_details"), id_path, _RESPONSES_INPUT_DETAILS, what)
    odet = r.obj(u.get("output_tokens_details"), od_path, {"reasoning_tokens"}, what)
    cached = r.count(idet, "cached_tokens", id_path)
    writes = r.count(idet, "cache_write_tokens", id_path)
    wd_path = f"{id_path}.cache_write_tokens_details"
    wd = r.obj(idet.get("cache_write_tokens_details"), wd_path, _RESPONSES_WRITE_DETAILS, what)
    long_writes = r.count(wd, "ttl_12h_tokens", wd_path)
    if wd and "ttl_30m_tokens" in wd:
        r.total(wd, "ttl_30m_tokens", wd_path, writes - long_writes, "cache_write_tokens - ttl_12h_tokens")  # fmt: skip
    reasoning = r.count(odet, "reasoning_tokens", od_path)
    r.at_most(cached + writes, f"{id_path}.cached_tokens", prompt, "usage.input_tokens")
    r.at_most(long_writes, f"{wd_path}.ttl_12h_tokens", writes, f"{id_path}.cache_write_tokens")
    r.at_most(reasoning, f"{od_path}.reasoning_tokens", completion, "usage.output_tokens")
    r.total(u, "total_tokens", "usage", prompt + completion, "input_tokens + output_tokens")
    unpriced = (f"{wd_path}.ttl_12h_tokens",) if long_writes else ()
    return Breakdown(prompt, completion, cached, writes - long_writes, 0, reasoning, unpriced=unpriced)  # fmt: skip


# --- Anthropic ---------------------------------------------------------------------------

_ANTHROPIC = {
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation",
    "output_tokens_details",
    "server_tool_use",
    "service_tier",
    "inference_geo",
    "speed",
}
_ANTHROPIC_TIERS = {"standard": "standard", "priority": "priority", "batch": "batch"}


def _anthropic(r: _Reader, usage: dict) -> Breakdown:
    what = "an Anthropic Messages usage object"
    u = r.obj(usage, "usage", _ANTHROPIC, what)
    uncached = r.count(u, "input_tokens", "usage", required=True)
    output = r.count(u, "output_tokens", "usage", required=True)
    read = r.count(u, "cache_read_input_tokens", "usage")
    created = r.count(u, "cache_creation_input_tokens", "usage")
    cc_path = "usage.cache_creation"
    cc = r.obj(u.get("cache_creation"), cc_path, {"ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"}, what)  # fmt: skip
    if cc:
        write_5m = r.count(cc, "ephemeral_5m_input_tokens", cc_path)
        write_1h = r.count(cc, "ephemeral_1h_input_tokens", cc_path)
        if u.get("cache_creation_input_tokens") is not None and not r.errors:
            r.total(u, "cache_creation_input_tokens", "usage", write_5m + write_1h,
                    "cache_creation.ephemeral_5m_input_tokens + ephemeral_1h_input_tokens")  # fmt: skip
    else:  # no breakdown by lifetime: the default, 5 minutes
        write_5m, write_1h = created, 0
    od_path = "usage.output_tokens_details"
    od = r.obj(u.get("output_tokens_details"), od_path, {"thinking_tokens"}, what)
    r.at_most(r.count(od, "thinking_tokens", od_path), f"{od_path}.thinking_tokens", output, "usage.output_tokens")  # fmt: skip
    st_path = "usage.server_tool_use"
    st = r.obj(u.get("server_tool_use"), st_path, {"web_search_requests", "web_fetch_requests"}, what)  # fmt: skip
    unpriced = _nonzero(r, [(st, st_path, "web_search_requests"), (st, st_path, "web_fetch_requests")])  # fmt: skip
    tier = _named(r, u, "service_tier", "usage", _ANTHROPIC_TIERS)
    if u.get("speed") not in (None, "standard"):
        unpriced += ("usage.speed",)
    if u.get("inference_geo") is not None and not isinstance(u["inference_geo"], str):
        r.errors["usage.inference_geo"] = "must be a string"
    prompt = uncached + read + write_5m + write_1h
    return Breakdown(prompt, output, read, write_5m, write_1h, 0, tier, unpriced)


# --- Gemini --------------------------------------------------------------------------------

# camelCase as the REST API and the SDK's JSON serialise it; snake_case as
# google-genai's model_dump() does. Either spelling, never both for one field.
_GEMINI_COUNTS = {
    "promptTokenCount": "prompt_token_count",
    "cachedContentTokenCount": "cached_content_token_count",
    "candidatesTokenCount": "candidates_token_count",
    "thoughtsTokenCount": "thoughts_token_count",
    "toolUsePromptTokenCount": "tool_use_prompt_token_count",
    "totalTokenCount": "total_token_count",
}
_GEMINI_DETAILS = {
    "promptTokensDetails": "prompt_tokens_details",
    "cacheTokensDetails": "cache_tokens_details",
    "candidatesTokensDetails": "candidates_tokens_details",
    "toolUsePromptTokensDetails": "tool_use_prompt_tokens_details",
}
_GEMINI_TRAFFIC = {
    "TRAFFIC_TYPE_UNSPECIFIED": None,
    "ON_DEMAND": "standard",
    "ON_DEMAND_PRIORITY": "priority",
    "ON_DEMAND_FLEX": "flex",
}
_GEMINI_UNPRICED_TRAFFIC = {"ON_DEMAND_OFFPEAK", "PROVISIONED_THROUGHPUT"}
_MODALITIES = {"MODALITY_UNSPECIFIED", "TEXT", "IMAGE", "VIDEO", "AUDIO", "DOCUMENT"}


def _gemini(r: _Reader, usage: dict) -> Breakdown:
    names = {**_GEMINI_COUNTS, **_GEMINI_DETAILS, "trafficType": "traffic_type"}
    known = set(names) | set(names.values())
    u = r.obj(usage, "usage", known, "a Gemini usageMetadata object")
    for camel, snake in names.items():
        if camel in u and snake in u:
            r.errors[f"usage.{snake}"] = f"must not be given beside usage.{camel}"
    v = {camel: u.get(camel, u.get(snake)) for camel, snake in names.items()}
    if v["promptTokenCount"] is None and v["candidatesTokenCount"] is None:
        r.errors["usage.promptTokenCount"] = "is required"
    c = {camel: r.count(v, camel, "usage") for camel in _GEMINI_COUNTS}
    prompt = c["promptTokenCount"] + c["toolUsePromptTokenCount"]
    completion = c["candidatesTokenCount"] + c["thoughtsTokenCount"]
    cached = c["cachedContentTokenCount"]
    r.at_most(cached, "usage.cachedContentTokenCount", c["promptTokenCount"], "usage.promptTokenCount")  # fmt: skip
    r.total(v, "totalTokenCount", "usage", prompt + completion,
            "promptTokenCount + toolUsePromptTokenCount + candidatesTokenCount + thoughtsTokenCount")  # fmt: skip
    unpriced = tuple(p for camel in _GEMINI_DETAILS if (p := _audio(r, v[camel], f"usage.{camel}")))
    tier = None
    traffic = v["trafficType"]
    if traffic in _GEMINI_UNPRICED_TRAFFIC:
        unpriced += ("usage.trafficType",)
    elif traffic is not None:
        tier = _named(r, {"trafficType": traffic}, "trafficType", "usage", _GEMINI_TRAFFIC)
    return Breakdown(prompt, completion, cached, 0, 0, c["thoughtsTokenCount"], tier, unpriced)


def _audio(r: _Reader, details: Any, path: str) -> str | None:
    """The path of a modality list's non-zero AUDIO count (audio is not priced)."""
    if details is None:
        return None
    if not isinstance(details, list):
        r.errors[path] = "must be a list"
        return None
    found = None
    for i, item in enumerate(details):
        where = f"{path}.{i}"
        entry = r.obj(item, where, {"modality", "tokenCount", "token_count"}, "a modality count")
        modality = entry.get("modality")
        if modality is not None and modality not in _MODALITIES:
            r.errors[f"{where}.modality"] = f"must be one of {', '.join(sorted(_MODALITIES))}"
        count_key = "tokenCount" if "tokenCount" in entry else "token_count"
        if r.count(entry, count_key, where) and modality == "AUDIO":
            found = found or f"{where}.{count_key}"
    return found


# --- Shared --------------------------------------------------------------------------------


def _nonzero(r: _Reader, places: list[tuple[dict, str, str]]) -> tuple[str, ...]:
    return tuple(f"{path}.{key}" for obj, path, key in places if r.count(obj, key, path))


def _named(r: _Reader, obj: dict, key: str, path: str, names: dict[str, str | None]) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if value not in names:
        r.errors[f"{path}.{key}"] = f"must be one of {', '.join(sorted(names))}"
        return None
    return names[value]


_READERS: dict[str, Callable[[_Reader, dict], Breakdown]] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "gemini": _gemini,
}

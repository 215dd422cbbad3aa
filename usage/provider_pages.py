"""Reading saved pages of the providers' admin APIs, exactly in their documented shapes.

Four reports, each a page `{"data": [bucket, ...], "has_more": ..., "next_page": ...}`
whose buckets hold `results`:

- OpenAI Usage API, `GET /v1/organization/usage/completions`: a bucket has
  `start_time`/`end_time` (Unix seconds) and results
  `organization.usage.completions.result` with `input_tokens` (cached tokens
  included), `input_cached_tokens`, `output_tokens`, `input_audio_tokens`,
  `output_audio_tokens`, `num_model_requests` and the group-by fields `model`,
  `project_id`, `api_key_id`, `user_id`, `batch`, `service_tier`.
- OpenAI Costs API, `GET /v1/organization/costs`: results
  `organization.costs.result` with `amount {value, currency}` (a JSON number,
  dollars), `line_item`, `project_id`.
- Anthropic Usage and Cost Admin API, `GET /v1/organizations/usage_report/messages`:
  a bucket has `starting_at`/`ending_at` (RFC 3339) and results with
  `uncached_input_tokens`, `cache_read_input_tokens`, `cache_creation
  {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}`, `output_tokens`,
  `server_tool_use {web_search_requests}` and the group-by fields `model`,
  `service_tier`, `context_window`, `api_key_id`, `workspace_id`.
- Anthropic `GET /v1/organizations/cost_report`: results with `amount`, a
  decimal string in the currency's lowest unit (cents: "123.45" is $1.2345),
  `currency`, `description`, `cost_type`, `token_type`, `model`,
  `service_tier`, `context_window`, `workspace_id`.

A file holds one page, or one page per line (JSON Lines). Numbers are parsed
from the JSON text as Decimal (never through float). Only daily buckets
(`bucket_width=1d`) are taken: a day is what both providers bill and what we
compare. Anything else in the shape is refused with the file, the place and
the field, before anything is stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from billing.money import AmountError, quantize_amount
from core.errors import InvalidInput

OPENAI = "openai"
ANTHROPIC = "anthropic"
USAGE = "usage"
COST = "cost"
OPENAI_USAGE_OBJECT = "organization.usage.completions.result"
OPENAI_COST_OBJECT = "organization.costs.result"
CENTS = Decimal(100)


class RawJSONEncoder(json.JSONEncoder):
    """Stores a result's raw copy (audit only) with its numbers as JSON numbers again.

    The figures we compute with are the Decimals parsed from the text; the
    copy's numbers are written back as the shortest float that reads the same,
    which is the provider's own JSON number for every figure it can send.
    """

    def default(self, o: Any) -> Any:
        if isinstance(o, Decimal):
            return int(o) if o == o.to_integral_value() else float(o)
        return super().default(o)


class ExportError(InvalidInput):
    """A saved page that is not in the documented shape; names the file and the place."""


@dataclass(frozen=True)
class UsageResult:
    """One usage result in the dimensions we compare (see ProviderUsageLine)."""

    model: str
    service_tier: str
    context_window: str
    project_id: str
    api_key_id: str
    batch: bool | None
    input_tokens: int
    cached_input_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    input_audio_tokens: int
    output_audio_tokens: int
    requests: int | None
    web_search_requests: int
    raw: dict = field(compare=False, hash=False)


@dataclass(frozen=True)
class CostResult:
    """One cost result: an exact USD amount and what it is for."""

    line_item: str
    model: str
    cost_type: str
    token_type: str
    service_tier: str
    context_window: str
    project_id: str
    amount: Decimal
    currency: str
    raw: dict = field(compare=False, hash=False)


@dataclass
class Bucket:
    """One UTC day of one report, with every result the provider gave for it."""

    provider: str
    report: str
    day: date
    results: list[UsageResult] | list[CostResult]
    source: str


def read_buckets(path: Path, *, provider: str, report: str | None = None) -> list[Bucket]:
    """Every daily bucket of every page in the file at `path`, in file order.

    Which report a page is (usage or cost) is told by its results. A page
    whose every day is empty takes the report of the file's other pages, or
    `report` (which, when given, every page must agree with).
    """
    pages = [_page_days(page, provider=provider, where=label) for label, page in _pages(path)]
    known = set().union(*(kinds for kinds, _ in pages)) if pages else set()
    if report and known - {report}:
        raise ExportError(f"{path}: holds {', '.join(sorted(known))} pages, not {report}")
    buckets = []
    for kinds, days in pages:
        kind = _page_report(kinds, known, report=report, where=str(path), empty=not days)
        buckets += [Bucket(provider, kind, day, results, place) for day, results, place in days]
    return buckets


def _pages(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: cannot be read: {exc}") from exc
    try:
        yield str(path), json.loads(text, parse_float=Decimal)
        return
    except json.JSONDecodeError as whole:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if len(lines) < 2:
            raise ExportError(f"{path}: not JSON: {whole}") from whole
    for number, line in lines:
        try:
            yield f"{path}:{number}", json.loads(line, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise ExportError(f"{path}: line {number} is not JSON: {exc}") from exc


def _page_days(page: Any, *, provider: str, where: str) -> tuple[set[str], list[tuple]]:
    """The reports a page's results belong to, and its (day, results, place) buckets."""
    if not isinstance(page, dict) or not isinstance(page.get("data"), list):
        raise ExportError(f"{where}: not a page of the {provider} admin API (no `data` list)")
    days, kinds = [], set()
    for i, raw_bucket in enumerate(page["data"]):
        place = f"{where}: data[{i}]"
        if not isinstance(raw_bucket, dict):
            raise ExportError(f"{place}: a bucket must be an object")
        day = _bucket_day(raw_bucket, provider=provider, place=place)
        # The Costs API reference names the list `result`; the API answers `results`.
        results = raw_bucket.get("results", raw_bucket.get("result"))
        if not isinstance(results, list):
            raise ExportError(f"{place}: `results` must be a list")
        bucket_kinds, parsed = _results(results, provider=provider, place=place)
        kinds |= bucket_kinds
        days.append((day, parsed, place))
    return kinds, days


def _page_report(
    kinds: set[str], in_file: set[str], *, report: str | None, where: str, empty: bool
) -> str:
    """Usage or cost: a page holds one report (an empty day says nothing of which)."""
    if len(kinds) > 1:
        raise ExportError(f"{where}: usage and cost results mixed in one page")
    if kinds:
        return kinds.pop()
    if report or empty:
        return report or USAGE
    if len(in_file) == 1:
        return next(iter(in_file))
    raise ExportError(
        f"{where}: every day of a page is empty and nothing else in the file says whether it "
        "is usage or cost; import it with --report usage or --report cost"
    )


def _bucket_day(bucket: dict, *, provider: str, place: str) -> date:
    if provider == OPENAI:
        start, end = _unix(bucket, "start_time", place), _unix(bucket, "end_time", place)
    else:
        start, end = _rfc3339(bucket, "starting_at", place), _rfc3339(bucket, "ending_at", place)
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    if start != midnight or end - start != timedelta(days=1):
        raise ExportError(
            f"{place}: the bucket runs from {start.isoformat()} to {end.isoformat()}; only "
            "daily buckets from UTC midnight are imported (export with bucket_width=1d)"
        )
    return start.date()


def _unix(bucket: dict, name: str, place: str) -> datetime:
    value = bucket.get(name)
    if not _is_int(value):
        raise ExportError(f"{place}: `{name}` must be Unix seconds (an integer)")
    return datetime.fromtimestamp(value, tz=UTC)


def _rfc3339(bucket: dict, name: str, place: str) -> datetime:
    value = bucket.get(name)
    try:
        instant = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        instant = None
    if not isinstance(value, str) or instant is None or instant.tzinfo is None:
        raise ExportError(f"{place}: `{name}` must be an RFC 3339 timestamp with an offset")
    return instant.astimezone(UTC)


def _results(results: list, *, provider: str, place: str) -> tuple[set[str], list]:
    """The reports the results belong to (usage, cost) and the parsed results."""
    kinds, parsed = set(), []
    for j, raw in enumerate(results):
        where = f"{place}.results[{j}]"
        if not isinstance(raw, dict):
            raise ExportError(f"{where}: a result must be an object")
        kind = _result_kind(raw, provider=provider, where=where)
        kinds.add(kind)
        parsed.append(_PARSERS[(provider, kind)](raw, where))
    return kinds, parsed


def _result_kind(raw: dict, *, provider: str, where: str) -> str:
    if provider == OPENAI:
        kind = {OPENAI_USAGE_OBJECT: USAGE, OPENAI_COST_OBJECT: COST}.get(raw.get("object"))
        if kind is None:
            raise ExportError(
                f"{where}: object {raw.get('object')!r} is not {OPENAI_USAGE_OBJECT!r} or "
                f"{OPENAI_COST_OBJECT!r} (only completions usage and costs are compared)"
            )
        return kind
    if "amount" in raw:
        return COST
    if "uncached_input_tokens" in raw:
        return USAGE
    if "object" in raw or "input_tokens" in raw:
        raise ExportError(f"{where}: not an Anthropic usage_report/messages or cost_report result")
    raise ExportError(f"{where}: neither `uncached_input_tokens` (usage) nor `amount` (cost)")


def _openai_usage(raw: dict, where: str) -> UsageResult:
    cached = _count(raw, "input_cached_tokens", where, required=False)
    input_tokens = _count(raw, "input_tokens", where)
    if cached > input_tokens:
        raise ExportError(f"{where}: input_cached_tokens exceeds input_tokens, which includes it")
    return UsageResult(
        model=_model(raw, where),
        service_tier=_text(raw, "service_tier", where),
        context_window="",
        project_id=_text(raw, "project_id", where),
        api_key_id=_text(raw, "api_key_id", where),
        batch=_flag(raw, "batch", where),
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        cache_write_5m_tokens=0,
        cache_write_1h_tokens=0,
        output_tokens=_count(raw, "output_tokens", where),
        input_audio_tokens=_count(raw, "input_audio_tokens", where, required=False),
        output_audio_tokens=_count(raw, "output_audio_tokens", where, required=False),
        requests=_count(raw, "num_model_requests", where),
        web_search_requests=0,
        raw=raw,
    )


def _anthropic_usage(raw: dict, where: str) -> UsageResult:
    creation = _object(raw, "cache_creation", where)
    tools = _object(raw, "server_tool_use", where)
    uncached = _count(raw, "uncached_input_tokens", where)
    cache_read = _count(raw, "cache_read_input_tokens", where, required=False)
    write_5m = _count(creation, "ephemeral_5m_input_tokens", f"{where}.cache_creation", False)
    write_1h = _count(creation, "ephemeral_1h_input_tokens", f"{where}.cache_creation", False)
    return UsageResult(
        model=_model(raw, where),
        service_tier=_text(raw, "service_tier", where),
        context_window=_text(raw, "context_window", where),
        project_id=_text(raw, "workspace_id", where),
        api_key_id=_text(raw, "api_key_id", where),
        batch=None,
        # Anthropic reports cache reads and writes beside the uncached input;
        # our prompt_tokens holds all three.
        input_tokens=uncached + cache_read + write_5m + write_1h,
        cached_input_tokens=cache_read,
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=_count(raw, "output_tokens", where),
        input_audio_tokens=0,
        output_audio_tokens=0,
        requests=None,
        web_search_requests=_count(tools, "web_search_requests", f"{where}.server_tool_use", False),
        raw=raw,
    )


def _openai_cost(raw: dict, where: str) -> CostResult:
    amount = _object(raw, "amount", where)
    if not amount:
        raise ExportError(f"{where}: `amount` {{value, currency}} is required")
    value = _decimal(amount.get("value"))
    if value is None:
        raise ExportError(f"{where}.amount: `value` must be a number")
    line_item = _text(raw, "line_item", where)
    model, _, kind = line_item.rpartition(", ")
    return CostResult(
        line_item=line_item,
        # "gpt-4o-2024-08-06, input": the model and what of it; whether the
        # name is a model at all is decided against the usage report.
        model=model or line_item,
        cost_type="",
        token_type=kind if model else "",
        service_tier="",
        context_window="",
        project_id=_text(raw, "project_id", where),
        amount=_amount(value, where),
        currency=_currency(amount, where),
        raw=raw,
    )


def _anthropic_cost(raw: dict, where: str) -> CostResult:
    cents = raw.get("amount")
    value = _decimal(cents) if isinstance(cents, str) else None
    if value is None:
        raise ExportError(f"{where}: `amount` must be a decimal string (in cents)")
    return CostResult(
        line_item=_text(raw, "description", where),
        model=_text(raw, "model", where),
        cost_type=_text(raw, "cost_type", where),
        token_type=_text(raw, "token_type", where),
        service_tier=_text(raw, "service_tier", where),
        context_window=_text(raw, "context_window", where),
        project_id=_text(raw, "workspace_id", where),
        # The documented unit is the currency's lowest one: "123.45" USD is $1.2345.
        amount=_amount(value / CENTS, where),
        currency=_currency(raw, where),
        raw=raw,
    )


_PARSERS = {
    (OPENAI, USAGE): _openai_usage,
    (OPENAI, COST): _openai_cost,
    (ANTHROPIC, USAGE): _anthropic_usage,
    (ANTHROPIC, COST): _anthropic_cost,
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(raw: dict, name: str, where: str, required: bool = True) -> int:
    value = raw.get(name)
    if value is None and not required:
        return 0
    if not _is_int(value) or value < 0:
        raise ExportError(f"{where}: `{name}` must be a whole number >= 0, not {value!r}")
    return value


def _model(raw: dict, where: str) -> str:
    model = raw.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ExportError(
            f"{where}: `model` is missing; export the usage grouped by model (group_by=model)"
        )
    return model.strip()


def _text(raw: dict, name: str, where: str) -> str:
    value = raw.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ExportError(f"{where}: `{name}` must be a string or null")
    return value.strip()


def _flag(raw: dict, name: str, where: str) -> bool | None:
    value = raw.get(name)
    if value is not None and not isinstance(value, bool):
        raise ExportError(f"{where}: `{name}` must be true, false or null")
    return value


def _object(raw: dict, name: str, where: str) -> dict:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ExportError(f"{where}: `{name}` must be an object")
    return value


def _decimal(value: Any) -> Decimal | None:
    """A JSON number (already a Decimal or int) or a decimal string; None otherwise.

    OpenAI documents `amount.value` as a number; a string of digits says the
    same amount, so it is taken too.
    """
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        return None
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except ArithmeticError:
        return None
    return number if number.is_finite() else None


def _currency(raw: dict, where: str) -> str:
    currency = str(raw.get("currency") or "").upper()
    if currency != "USD":
        raise ExportError(f"{where}: currency {raw.get('currency')!r}; only USD is compared")
    return currency


def _amount(value: Decimal, where: str) -> Decimal:
    try:
        return quantize_amount(value)
    except AmountError as exc:
        raise ExportError(f"{where}: amount {exc}") from exc

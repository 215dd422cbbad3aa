"""LiteLLM's model price table (model_prices_and_context_window.json), read into price periods.

Each entry maps to one price period per service tier it prices (standard,
and batch, flex, priority where the table has their rates), with every
dimension it states; docs/operations.md ("import_prices") has the mapping
and the reasons an entry or a key is skipped. Nothing here writes:
:func:`read_table` answers what the table says, and `manage.py
import_prices` compares it with the database and writes through
billing.prices.set_model_price.

Published values are per-token JSON numbers, read as the decimal text the
file holds (never through a float). A number with more than 15 significant
digits is float noise from the arithmetic that produced the file (a double
carries 15 to 17 significant digits and holds every decimal of up to 15
exactly): it is read as its value rounded to 15 significant digits, so
``8.000000000000001e-07`` per token is 0.8 per million, and each such
recognition is reported. Every other number is exact as written
(``1.41953125e-07`` is 0.141953125 per million). A rate finer than 12
decimal places per million after that (a repeating fraction such as
``1.1428571428571428e-06``, 8/7 per million) cannot be held exactly: the
entry is skipped with that reason, never rounded.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Context, Decimal
from pathlib import Path
from typing import Any

from billing.models import ServiceTier
from billing.money import PRICE_DECIMAL_PLACES

MODES = {"chat", "completion", "responses"}
SIGNIFICANT_DIGITS = 15
_NOISE = Context(prec=SIGNIFICANT_DIGITS, rounding=ROUND_HALF_EVEN)

# Our dimension -> the table's key prefix, in billing.models.RATE_FIELDS' order.
PREFIXES = (
    "input_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "cache_creation_input_token_cost_above_1hr",
    "output_cost_per_token",
    "output_cost_per_reasoning_token",
)
TIER_SUFFIXES = {
    ServiceTier.STANDARD: "",
    ServiceTier.BATCH: "_batches",
    ServiceTier.FLEX: "_flex",
    ServiceTier.PRIORITY: "_priority",
}
# Thresholds LiteLLM compares with >= rather than > (xAI bills the higher rate once
# the prompt reaches it): held as threshold - 1, which is the same rule in whole tokens.
INCLUSIVE_THRESHOLD_PROVIDERS = {"xai"}
_ABOVE = re.compile(
    r"^(?P<prefix>" + "|".join(sorted(map(re.escape, PREFIXES), key=len, reverse=True)) + r")"
    r"_above_(?P<n>\d+)(?P<k>k?)_tokens(?P<tier>_[a-z]+)?$"
)
_TIERED_KEYS = {
    "input_cost_per_token": 0,
    "cache_read_input_token_cost": 1,
    "cache_creation_input_token_cost": 2,
    "output_cost_per_token": 4,
    "output_cost_per_reasoning_token": 5,
}


class SkipEntry(Exception):
    """This entry (or this tier of it) cannot be held as a price period; the reason."""


@dataclass(frozen=True)
class PriceSpec:
    """One price period as the table states it: six rates per million, resolved."""

    model: str
    service_tier: str
    rates: tuple[Decimal, ...]  # RATE_FIELDS' order
    long_context_threshold: int | None = None
    long_rates: tuple[Decimal, ...] | None = None

    @property
    def source(self) -> str:
        return f"litellm:{self.model}"


@dataclass
class TableReading:
    specs: list[PriceSpec] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (model or model/tier, reason)
    leftovers: list[tuple[str, str, str, str]] = field(
        default_factory=list
    )  # model, key, published, read as
    ignored_keys: Counter = field(default_factory=Counter)  # cost keys no dimension holds
    entries: int = 0  # entries the filters selected


def load_table(path: Path) -> dict[str, Any]:
    """The JSON file, its numbers as the exact decimals they are written as."""
    with path.open(encoding="utf-8") as handle:
        data = json.load(handle, parse_float=Decimal, parse_constant=_refuse_constant)
    if not isinstance(data, dict):
        raise ValueError("the price table must be a JSON object of model entries")
    return data


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a price")


def read_table(
    data: dict[str, Any], *, models: list[str] | None = None, provider: str | None = None
) -> TableReading:
    """Every price period the selected entries state, and what was skipped and why."""
    reading = TableReading()
    for model, entry in data.items():
        if model == "sample_spec" or not isinstance(entry, dict):
            continue
        if models and not any(fnmatch.fnmatchcase(model, glob) for glob in models):
            continue
        if provider and entry.get("litellm_provider") != provider:
            continue
        reading.entries += 1
        try:
            specs = _entry_specs(model, entry, reading)
        except SkipEntry as exc:
            reading.skipped.append((model, str(exc)))
            continue
        reading.specs.extend(specs)
    return reading


def _entry_specs(model: str, entry: dict[str, Any], reading: TableReading) -> list[PriceSpec]:
    mode = entry.get("mode")
    if mode not in MODES:
        what = "no mode" if mode is None else f"mode {mode!r}"
        raise SkipEntry(f"{what}: only chat, completion and responses entries are priced per token")
    if len(model) > 100:
        raise SkipEntry("the model name is longer than 100 characters")
    if "off_peak_pricing" in entry:
        raise SkipEntry("off-peak (time-of-day) pricing is not supported")
    reading.ignored_keys.update(k for k in entry if _is_cost_key(k) and not _mapped(k))
    rates = _Rates(model, entry, reading)
    if "tiered_pricing" in entry:
        return [rates.tiered(entry["tiered_pricing"])]
    threshold = rates.threshold(inclusive=entry.get("litellm_provider") in INCLUSIVE_THRESHOLD_PROVIDERS)  # fmt: skip
    specs = []
    for tier, suffix in TIER_SUFFIXES.items():
        if tier != ServiceTier.STANDARD and not rates.has_tier(suffix):
            continue
        try:
            specs.append(rates.spec(tier, suffix, threshold))
        except SkipEntry as exc:
            if tier == ServiceTier.STANDARD:
                raise
            reading.skipped.append((f"{model} ({tier})", str(exc)))
    return specs


def _is_cost_key(key: str) -> bool:
    return "cost" in key


def _mapped(key: str) -> bool:
    if key == "tiered_pricing":
        return True
    match = _ABOVE.match(key)
    if match:
        tier = match.group("tier")
        return tier is None or tier in TIER_SUFFIXES.values()
    for prefix in sorted(PREFIXES, key=len, reverse=True):
        if key == prefix or any(key == prefix + s for s in TIER_SUFFIXES.values() if s):
            return True
    return False


class _Rates:
    """The rate look-ups of one entry."""

    def __init__(self, model: str, entry: dict[str, Any], reading: TableReading) -> None:
        self.model, self.entry, self.reading = model, entry, reading

    def value(self, key: str) -> Decimal | None:
        if key not in self.entry or self.entry[key] is None:
            return None
        return per_million(self.entry[key], self.model, key, self.reading)

    def first(self, keys: list[str]) -> Decimal | None:
        for key in keys:
            value = self.value(key)
            if value is not None:
                return value
        return None

    def has_tier(self, suffix: str) -> bool:
        return any(f"{p}{suffix}" in self.entry for p in (PREFIXES[0], PREFIXES[4]))

    def threshold(self, *, inclusive: bool) -> int | None:
        found = set()
        for key in self.entry:
            match = _ABOVE.match(key)
            if match and (match.group("tier") or "") in TIER_SUFFIXES.values():
                found.add(int(match.group("n")) * (1000 if match.group("k") else 1))
        if len(found) > 1:
            raise SkipEntry(
                f"more than one long-context threshold ({', '.join(map(str, sorted(found)))});"
                " a price period holds one"
            )
        if not found:
            return None
        (threshold,) = found
        return threshold - 1 if inclusive else threshold

    def spec(self, tier: str, suffix: str, threshold: int | None) -> PriceSpec:
        base = self._context(suffix, None)
        long = None if threshold is None else self._context(suffix, threshold)
        if long == base:
            threshold, long = None, None  # a threshold whose rates change nothing
        return PriceSpec(self.model, tier, base, threshold, long)

    def _context(self, suffix: str, threshold: int | None) -> tuple[Decimal, ...]:
        """The six rates of one tier and context: the most specific key present, from
        `<dim>_above_<N>_tokens<tier>`, `<dim>_above_<N>_tokens`, `<dim><tier>`, to
        `<dim>`; then the documented defaults."""
        found = []
        for prefix in PREFIXES:
            keys = [f"{prefix}{suffix}", prefix]
            if threshold is not None:
                above = f"{prefix}_above_{_threshold_text(self.entry, threshold)}_tokens"
                keys = [f"{above}{suffix}", above, *keys]
            found.append(self.first(list(dict.fromkeys(keys))))
        return _with_defaults(found, self.model)

    def tiered(self, tiers: Any) -> PriceSpec:
        """`tiered_pricing`: one range from 0 (no long-context tier) or two, the second
        starting where the first ends (its start is the threshold)."""
        if not isinstance(tiers, list) or not tiers or len(tiers) > 2:
            count = len(tiers) if isinstance(tiers, list) else "no"
            raise SkipEntry(
                f"tiered_pricing has {count} ranges; a price period holds at most two "
                "(the base and one long-context tier)"
            )
        ranges = sorted(tiers, key=lambda t: _range(t)[0])
        if _range(ranges[0])[0] != 0 or (
            len(ranges) == 2 and _range(ranges[0])[1] != _range(ranges[1])[0]
        ):
            raise SkipEntry("tiered_pricing's ranges do not start at 0 and meet")
        contexts = [self._tier(t) for t in ranges]
        if len(contexts) == 1:
            return PriceSpec(self.model, ServiceTier.STANDARD, contexts[0])
        threshold = int(_range(ranges[0])[1])
        return PriceSpec(self.model, ServiceTier.STANDARD, contexts[0], threshold, contexts[1])

    def _tier(self, tier: dict) -> tuple[Decimal, ...]:
        found: list[Decimal | None] = [None] * len(PREFIXES)
        for key, index in _TIERED_KEYS.items():
            if tier.get(key) is not None:
                found[index] = per_million(
                    tier[key], self.model, f"tiered_pricing.{key}", self.reading
                )
        return _with_defaults(found, self.model)


def _threshold_text(entry: dict[str, Any], threshold: int) -> str:
    """How the entry's keys spell a threshold ("200k" or "200000")."""
    for key in entry:
        match = _ABOVE.match(key)
        if match:
            value = int(match.group("n")) * (1000 if match.group("k") else 1)
            if value in (threshold, threshold + 1):
                return match.group("n") + match.group("k")
    return f"{threshold // 1000}k"


def _range(tier: Any) -> tuple[Decimal, Decimal]:
    try:
        start, end = tier["range"]
        return Decimal(str(start)), Decimal(str(end))
    except (KeyError, TypeError, ValueError, ArithmeticError):
        raise SkipEntry("a tiered_pricing range is not [start, end]")


def _with_defaults(found: list[Decimal | None], model: str) -> tuple[Decimal, ...]:
    inp, cache_read, write_5m, write_1h, out, reasoning = found
    if inp is None or out is None:
        raise SkipEntry("no per-token input and output price")
    cache_read = inp if cache_read is None else cache_read
    write_5m = inp if write_5m is None else write_5m
    write_1h = write_5m if write_1h is None else write_1h
    reasoning = out if reasoning is None else reasoning
    return inp, cache_read, write_5m, write_1h, out, reasoning


def per_million(value: Any, model: str, key: str, reading: TableReading) -> Decimal:
    """A published per-token number as USD per million tokens, exactly (see above)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise SkipEntry(f"{key} is not a number ({value!r})")
    published = Decimal(value)
    if not published.is_finite() or published < 0:
        raise SkipEntry(f"{key} is not a non-negative number ({value!r})")
    taken = published
    if len(published.normalize().as_tuple().digits) > SIGNIFICANT_DIGITS:
        taken = _NOISE.plus(published).normalize()
        reading.leftovers.append((model, key, str(value), format(taken.scaleb(6), "f")))
    rate = taken.scaleb(6).normalize()
    if rate.as_tuple().exponent < -PRICE_DECIMAL_PLACES:
        raise SkipEntry(
            f"{key} = {value} per token is {format(rate, 'f')} per million: finer than "
            f"{PRICE_DECIMAL_PLACES} decimal places, which no exact price holds"
        )
    return rate

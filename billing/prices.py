"""Model prices: dated price periods, the period in effect, and what a generation costs.

A price period belongs to one (model, service tier) and carries six rates per
million tokens (uncached input, cache read, 5-minute and 1-hour cache writes,
output, reasoning) and optionally a long-context tier: a prompt-token
threshold above which a second set of six rates applies to the whole request.

:func:`charge_for` is the one computation of a cost. Recording, re-pricing
and the API's explanation of a charge all call it, so a stored cost and its
explanation cannot disagree; `verify_ledger` recomputes it in SQL.
"""

from __future__ import annotations

import decimal
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.audit import record_audit
from billing.errors import PriceError, PriceOverlap
from billing.models import LONG_RATE_FIELDS, RATE_FIELDS, ModelPrice, ServiceTier
from billing.money import AMOUNT_QUANTUM, AmountError, parse_price, plain
from core.sql import from_row, select_list

# --- The charge -----------------------------------------------------------------------

DIMENSIONS = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output", "reasoning")
TOKENS_PER_PRICE_UNIT_EXPONENT = 6  # prices are per million tokens

# Wide enough for any product of an int32 token count and a NUMERIC(24, 12)
# rate, and the sum of six: the arithmetic is exact, Inexact can never fire.
_EXACT = decimal.Context(prec=80, traps=[decimal.Inexact, decimal.InvalidOperation])


@dataclass(frozen=True, slots=True)
class Tokens:
    """A generation's canonical token breakdown (docs/api.md, "The token breakdown").

    `prompt` is every input token (uncached, cache reads and cache writes);
    `completion` every output token, reasoning included.
    """

    prompt: int
    completion: int
    cached: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0

    def by_dimension(self) -> tuple[int, int, int, int, int, int]:
        """Tokens per dimension, in DIMENSIONS' order; they add up to prompt + completion."""
        writes = self.cache_write_5m + self.cache_write_1h
        return (
            self.prompt - self.cached - writes,
            self.cached,
            self.cache_write_5m,
            self.cache_write_1h,
            self.completion - self.reasoning,
            self.reasoning,
        )


class ChargeLine(NamedTuple):
    """One dimension of a charge: `tokens x rate_per_million / 1e6 = amount`, exactly."""

    dimension: str
    tokens: int
    rate_per_million: Decimal
    amount: Decimal


class Charge(NamedTuple):
    """What a generation costs at one price period, line by line (never rounded).

    A stable type: the API's `charge` object is :meth:`as_json`, and pages
    render the same fields. :attr:`lines` always has the six DIMENSIONS in
    order, zero lines included; `total` is their exact sum and equals the
    stored cost. (A named tuple, with the lines built on demand: recording
    makes one per event and reads only the total.)
    """

    price_id: int
    model: str
    service_tier: str
    currency: str
    effective_from: datetime
    effective_to: datetime | None
    long_context_threshold: int | None
    long_context: bool  # the prompt exceeded the threshold: the long_* rates applied
    tokens: tuple[int, ...]  # per dimension
    rates: tuple[Decimal, ...]  # per million, per dimension
    amounts: tuple[Decimal, ...]  # per dimension: tokens x rate / 1e6
    total: Decimal

    @property
    def lines(self) -> tuple[ChargeLine, ...]:
        return tuple(map(ChargeLine, DIMENSIONS, self.tokens, self.rates, self.amounts))

    def as_json(self) -> dict[str, Any]:
        return {
            "price": {
                "id": self.price_id,
                "model": self.model,
                "service_tier": self.service_tier,
                "currency": self.currency,
                "effective_from": _instant(self.effective_from),
                "effective_to": _instant(self.effective_to),
                "long_context_threshold": self.long_context_threshold,
            },
            "service_tier": self.service_tier,
            "long_context": self.long_context,
            "lines": [
                {
                    "dimension": line.dimension,
                    "tokens": line.tokens,
                    "rate_per_million": plain(line.rate_per_million),
                    "amount": plain(line.amount),
                }
                for line in self.lines
            ],
            "total": plain(self.total),
        }


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def charge_for(price: ModelPrice, tokens: Tokens) -> Charge:
    """The charge of a generation of `tokens` at `price`: exact, line by line.

    The long-context rates apply to the whole request when its prompt (every
    input token: uncached, cache reads and writes) exceeds the threshold.
    Recording calls it for every priced event: keep it lean.
    """
    threshold = price.long_context_threshold
    long_context = threshold is not None and tokens.prompt > threshold
    counts = tokens.by_dimension()
    rates = price.rates(long_context=long_context)
    amounts = tuple(
        _tidy(_EXACT.scaleb(_EXACT.multiply(count, rate), -TOKENS_PER_PRICE_UNIT_EXPONENT))
        if count
        else _ZERO
        for count, rate in zip(counts, rates, strict=True)
    )
    total = _ZERO
    for amount in amounts:
        total = _EXACT.add(total, amount)
    return Charge(
        price.pk,
        price.model,
        price.service_tier,
        price.currency,
        price.effective_from,
        price.effective_to,
        threshold,
        long_context,
        counts,
        rates,
        amounts,
        total,
    )


_ZERO = Decimal(0).quantize(AMOUNT_QUANTUM)


def _tidy(amount: Decimal) -> Decimal:
    """The same value at twelve places when it has no more (as every amount had before
    finer prices), else at the places it needs: never rounded."""
    try:
        return _EXACT.quantize(amount, AMOUNT_QUANTUM)
    except decimal.Inexact:
        return _EXACT.normalize(amount)


# --- Setting a price ------------------------------------------------------------------


@dataclass(frozen=True)
class LongContext:
    """A long-context tier: above `threshold` prompt tokens these rates apply to the
    whole request. Missing rates default as the base ones do, within the tier."""

    threshold: int
    input_per_million: Decimal | str
    output_per_million: Decimal | str
    cached_input_per_million: Decimal | str | None = None
    cache_write_5m_per_million: Decimal | str | None = None
    cache_write_1h_per_million: Decimal | str | None = None
    reasoning_per_million: Decimal | str | None = None


def set_model_price(
    *,
    model: str,
    input_per_million: Decimal | str,
    output_per_million: Decimal | str,
    cached_input_per_million: Decimal | str | None = None,
    cache_write_5m_per_million: Decimal | str | None = None,
    cache_write_1h_per_million: Decimal | str | None = None,
    reasoning_per_million: Decimal | str | None = None,
    long_context: LongContext | None = None,
    service_tier: str = ServiceTier.STANDARD,
    effective_from: datetime,
    source: str = "",
    actor=None,
    actor_label: str = "",
) -> ModelPrice:
    """Add a price period of (`model`, `service_tier`) from `effective_from`, closing
    the open period of that pair there.

    Prices are USD per million tokens, at most 12 decimal places (never
    rounded). Defaults: cache reads and 5-minute cache writes cost the input
    rate, 1-hour writes the 5-minute rate, reasoning the output rate; the
    long-context tier's missing rates default the same way from its own input
    and output rates. Refuses a start at or before an existing period's start,
    or inside a closed period (PriceOverlap); the database refuses the same.
    """
    model = (model or "").strip()
    if not model or len(model) > 100:
        raise PriceError("The model name is required (at most 100 characters).")
    if service_tier not in ServiceTier.values:
        raise PriceError(
            f"Unknown service tier {service_tier!r}.",
            fields={"service_tier": f"must be one of {', '.join(ServiceTier.values)}"},
        )
    if timezone.is_naive(effective_from):
        raise PriceError("effective_from must carry a UTC offset.")
    base = (
        input_per_million,
        cached_input_per_million,
        cache_write_5m_per_million,
        cache_write_1h_per_million,
        output_per_million,
        reasoning_per_million,
    )
    prices = _resolved(RATE_FIELDS, base) | _long_context(long_context)
    try:
        with transaction.atomic():
            closed = _close_open_period(model, service_tier, effective_from)
            price = ModelPrice.objects.create(
                model=model,
                service_tier=service_tier,
                effective_from=effective_from,
                source=source[:200],
                created_by=_user(actor),
                **prices,
            )
            record_audit(
                action="model_price.set",
                actor=actor,
                actor_label=actor_label,
                obj=price,
                before=closed,
                after={
                    "model": model,
                    "service_tier": service_tier,
                    "effective_from": effective_from.isoformat(),
                }
                | _rates_json(price),
            )
    except IntegrityError as exc:  # a concurrent writer got there first
        raise PriceOverlap(
            f"A price period of {model} ({service_tier}) overlaps {effective_from}: {exc}"
        ) from exc
    return price


def correct_model_price(
    *,
    price: ModelPrice,
    input_per_million: Decimal | str,
    output_per_million: Decimal | str,
    cached_input_per_million: Decimal | str | None = None,
    cache_write_5m_per_million: Decimal | str | None = None,
    cache_write_1h_per_million: Decimal | str | None = None,
    reasoning_per_million: Decimal | str | None = None,
    long_context: LongContext | None = None,
    actor=None,
    actor_label: str = "",
) -> ModelPrice:
    """Replace a wrong period by a correction over the same model, tier and dates.

    The wrong row is never edited (its rates explain what it priced): it is
    marked superseded, and a new row `corrects` it with these rates (defaults
    as in :func:`set_model_price`). `reprice_usage --reprice-priced` then moves
    its usage to the correction and posts exactly the difference.
    """
    base = (
        input_per_million,
        cached_input_per_million,
        cache_write_5m_per_million,
        cache_write_1h_per_million,
        output_per_million,
        reasoning_per_million,
    )
    prices = _resolved(RATE_FIELDS, base) | _long_context(long_context)
    with transaction.atomic():
        old = ModelPrice.objects.select_for_update().get(pk=price.pk)
        if old.superseded_at is not None:
            raise PriceError(
                f"Price period {old.pk} was already corrected; correct its correction instead.",
                fields={"price": "already superseded"},
            )
        ModelPrice.objects.filter(pk=old.pk).update(superseded_at=timezone.now())
        new = ModelPrice.objects.create(
            model=old.model,
            service_tier=old.service_tier,
            currency=old.currency,
            effective_from=old.effective_from,
            effective_to=old.effective_to,
            source=old.source,
            corrects=old,
            created_by=_user(actor),
            **prices,
        )
        record_audit(
            action="model_price.correct",
            actor=actor,
            actor_label=actor_label,
            obj=new,
            before={"price_id": old.pk} | _rates_json(old),
            after={"price_id": new.pk} | _rates_json(new),
        )
    return new


def _rates_json(price: ModelPrice) -> dict[str, str | int | None]:
    """The rates as canonical strings ("4", not "4.000000000000") and the threshold."""
    rates = {n: getattr(price, n) for n in (*RATE_FIELDS, *LONG_RATE_FIELDS)}
    return {n: None if v is None else format(v.normalize(), "f") for n, v in rates.items()} | {
        "long_context_threshold": price.long_context_threshold
    }


def _long_context(long_context: LongContext | None) -> dict[str, Any]:
    if long_context is None:
        return {"long_context_threshold": None} | dict.fromkeys(LONG_RATE_FIELDS)
    threshold = long_context.threshold
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
        raise PriceError(
            "The long-context threshold must be a positive whole number of prompt tokens.",
            fields={"long_context_threshold": "must be a positive whole number"},
        )
    rates = (
        long_context.input_per_million,
        long_context.cached_input_per_million,
        long_context.cache_write_5m_per_million,
        long_context.cache_write_1h_per_million,
        long_context.output_per_million,
        long_context.reasoning_per_million,
    )
    return {"long_context_threshold": threshold} | _resolved(LONG_RATE_FIELDS, rates)


def _resolved(names: tuple[str, ...], values: tuple) -> dict[str, Decimal]:
    """The six rates parsed, with the documented defaults filled in."""
    parsed, errors = {}, {}
    for name, value in zip(names, values, strict=True):
        if value is None or value == "":
            parsed[name] = None
            continue
        try:
            parsed[name] = parse_price(value)
        except AmountError as exc:
            errors[name] = str(exc)
    if errors:
        raise PriceError("Invalid price: " + "; ".join(errors.values()), fields=errors)
    inp, cached, write_5m, write_1h, out, reasoning = (parsed[n] for n in names)
    if inp is None or out is None:
        missing = [n for n, v in ((names[0], inp), (names[4], out)) if v is None]
        raise PriceError(
            "The input and output prices are required.",
            fields=dict.fromkeys(missing, "is required"),
        )
    cached = inp if cached is None else cached
    write_5m = inp if write_5m is None else write_5m
    write_1h = write_5m if write_1h is None else write_1h
    reasoning = out if reasoning is None else reasoning
    return dict(zip(names, (inp, cached, write_5m, write_1h, out, reasoning), strict=True))


def _close_open_period(model: str, service_tier: str, start: datetime) -> dict | None:
    """End the open period at `start`; refuse when `start` is not after every period."""
    periods = list(
        ModelPrice.objects.select_for_update()
        .filter(model=model, service_tier=service_tier, superseded_at__isnull=True)
        .order_by("effective_from")
    )
    for period in periods:
        ends_after_start = period.effective_to is not None and period.effective_to > start
        if period.effective_from >= start or ends_after_start:
            raise PriceOverlap(
                f"{model} ({service_tier}) already has a price from "
                f"{period.effective_from.isoformat()} to "
                f"{period.effective_to.isoformat() if period.effective_to else 'open'}; "
                f"a new period must start after every existing one.",
                fields={"effective_from": "overlaps an existing price period"},
            )
    open_period = next((p for p in periods if p.effective_to is None), None)
    if open_period is None:
        return None
    open_period.effective_to = start
    open_period.save(update_fields=["effective_to"])
    return {"closed_price_id": open_period.pk, "effective_to": None}


def _user(actor):
    return actor if getattr(actor, "pk", None) else None


# --- The period in effect ---------------------------------------------------------------


def price_in_effect(
    model: str, at: datetime, service_tier: str = ServiceTier.STANDARD
) -> ModelPrice | None:
    """The price period of (`model`, `service_tier`) that covers the instant `at`, if any.

    Hand-written (:func:`core.sql.from_row`): it runs for every priced event.
    """
    with connection.cursor() as cursor:
        cursor.execute(_price_sql(), [model, service_tier, at, at])
        row = cursor.fetchone()
    return None if row is None else from_row(ModelPrice, row)


@functools.cache
def _price_sql() -> str:
    return (
        f"SELECT {select_list(ModelPrice, 'p')} FROM {ModelPrice._meta.db_table} p"
        " WHERE p.model = %s AND p.service_tier = %s AND p.superseded_at IS NULL"
        " AND p.effective_from <= %s"
        " AND (p.effective_to IS NULL OR p.effective_to > %s)"
        " ORDER BY p.effective_from DESC LIMIT 1"
    )


class PriceBook:
    """Every price period of some models (all tiers), read in one query, answering
    `in_effect`."""

    def __init__(self, models: set[str]) -> None:
        self._by_key: dict[tuple[str, str], list[ModelPrice]] = {}
        if not models:
            return
        sql = (
            f"SELECT {select_list(ModelPrice, 'p')} FROM {ModelPrice._meta.db_table} p"
            " WHERE p.model = ANY(%s) AND p.superseded_at IS NULL"
            " ORDER BY p.effective_from DESC"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [sorted(models)])
            rows = cursor.fetchall()
        for row in rows:
            price = from_row(ModelPrice, row)
            self._by_key.setdefault((price.model, price.service_tier), []).append(price)

    def in_effect(
        self, model: str, at: datetime, service_tier: str = ServiceTier.STANDARD
    ) -> ModelPrice | None:
        for price in self._by_key.get((model, service_tier), ()):
            if price.effective_from <= at and (
                price.effective_to is None or price.effective_to > at
            ):
                return price
        return None

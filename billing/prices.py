"""Model prices: adding a dated price period, and the period in effect at an instant."""

from __future__ import annotations

import functools
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.audit import record_audit
from billing.errors import PriceError, PriceOverlap
from billing.models import ModelPrice
from billing.money import AmountError, parse_price, price_cost
from core.sql import from_row, select_list


def set_model_price(
    *,
    model: str,
    input_per_million: Decimal | str,
    output_per_million: Decimal | str,
    cached_input_per_million: Decimal | str | None = None,
    effective_from: datetime,
    actor=None,
    actor_label: str = "",
) -> ModelPrice:
    """Add a price period of `model` from `effective_from`, closing its open period there.

    Prices are USD per million tokens, at most 6 decimal places (never rounded).
    Without a cached input price, cached tokens cost the input price. Refuses a
    start at or before an existing period's start, or inside a closed period
    (PriceOverlap); the database's exclusion constraint refuses the same.
    """
    model = (model or "").strip()
    if not model or len(model) > 100:
        raise PriceError("The model name is required (at most 100 characters).")
    if timezone.is_naive(effective_from):
        raise PriceError("effective_from must carry a UTC offset.")
    prices = _parse_prices(input_per_million, output_per_million, cached_input_per_million)
    try:
        with transaction.atomic():
            closed = _close_open_period(model, effective_from)
            price = ModelPrice.objects.create(
                model=model, effective_from=effective_from, created_by=_user(actor), **prices
            )
            record_audit(
                action="model_price.set",
                actor=actor,
                actor_label=actor_label,
                obj=price,
                before=closed,
                after={"model": model, "effective_from": effective_from.isoformat()}
                | {name: str(value) for name, value in prices.items()},
            )
    except IntegrityError as exc:  # a concurrent writer got there first
        raise PriceOverlap(f"A price period of {model} overlaps {effective_from}: {exc}") from exc
    return price


def _parse_prices(input_price, output_price, cached_price) -> dict[str, Decimal]:
    raw = {
        "input_per_million": input_price,
        "output_per_million": output_price,
        "cached_input_per_million": input_price if cached_price is None else cached_price,
    }
    prices, errors = {}, {}
    for name, value in raw.items():
        try:
            prices[name] = parse_price(value)
        except AmountError as exc:
            errors[name] = str(exc)
    if errors:
        raise PriceError("Invalid price: " + "; ".join(errors.values()), fields=errors)
    return prices


def _close_open_period(model: str, start: datetime) -> dict | None:
    """End the open period at `start`; refuse when `start` is not after every period."""
    periods = list(
        ModelPrice.objects.select_for_update().filter(model=model).order_by("effective_from")
    )
    for period in periods:
        ends_after_start = period.effective_to is not None and period.effective_to > start
        if period.effective_from >= start or ends_after_start:
            raise PriceOverlap(
                f"{model} already has a price from {period.effective_from.isoformat()}"
                f" to {period.effective_to.isoformat() if period.effective_to else 'open'}; "
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


def price_in_effect(model: str, at: datetime) -> ModelPrice | None:
    """The price period of `model` that covers the instant `at`, if any.

    Hand-written (:func:`core.sql.from_row`): it runs for every priced event.
    """
    with connection.cursor() as cursor:
        cursor.execute(_price_sql(), [model, at, at])
        row = cursor.fetchone()
    return None if row is None else from_row(ModelPrice, row)


@functools.cache
def _price_sql() -> str:
    return (
        f"SELECT {select_list(ModelPrice, 'p')} FROM {ModelPrice._meta.db_table} p"
        " WHERE p.model = %s AND p.effective_from <= %s"
        " AND (p.effective_to IS NULL OR p.effective_to > %s)"
        " ORDER BY p.effective_from DESC LIMIT 1"
    )


class PriceBook:
    """Every price period of some models, read in one query, answering `in_effect`."""

    def __init__(self, models: set[str]) -> None:
        self._by_model: dict[str, list[ModelPrice]] = {}
        if not models:
            return
        sql = (
            f"SELECT {select_list(ModelPrice, 'p')} FROM {ModelPrice._meta.db_table} p"
            " WHERE p.model = ANY(%s) ORDER BY p.effective_from DESC"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [sorted(models)])
            rows = cursor.fetchall()
        for row in rows:
            price = from_row(ModelPrice, row)
            self._by_model.setdefault(price.model, []).append(price)

    def in_effect(self, model: str, at: datetime) -> ModelPrice | None:
        for price in self._by_model.get(model, ()):
            if price.effective_from <= at and (
                price.effective_to is None or price.effective_to > at
            ):
                return price
        return None


def cost_at(
    price: ModelPrice, *, prompt_tokens: int, cached_prompt_tokens: int, completion_tokens: int
) -> Decimal:
    """What a generation of these tokens costs at this price period (exact)."""
    return price_cost(
        prompt_tokens=prompt_tokens,
        cached_prompt_tokens=cached_prompt_tokens,
        completion_tokens=completion_tokens,
        input_per_million=price.input_per_million,
        cached_input_per_million=price.cached_input_per_million,
        output_per_million=price.output_per_million,
    )

"""Loading the price table's periods into the database (`manage.py import_prices`).

Each period the table states (billing.price_table) is compared with the open
period of its model and service tier: the same rates are `unchanged`, other
rates `changed` (the open period is closed at `effective_from` and a new one
opened, through set_model_price), no open period `new`. Re-running the same
table changes nothing. The whole run is one transaction; a dry run is the
same run rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction

from billing.models import ModelPrice
from billing.money import plain
from billing.price_table import PriceSpec, TableReading
from billing.prices import LongContext, set_model_price
from core.errors import ServiceError
from core.locks import advisory_xact_lock

DIMENSION_NAMES = (
    "input",
    "cached_input",
    "cache_write_5m",
    "cache_write_1h",
    "output",
    "reasoning",
)


@dataclass
class PriceImport:
    effective_from: datetime
    dry_run: bool
    entries: int = 0
    new: list[dict] = field(default_factory=list)
    changed: list[dict] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[dict] = field(default_factory=list)
    leftovers: list[dict] = field(default_factory=list)
    ignored_keys: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "effective_from": self.effective_from.isoformat(),
            "dry_run": self.dry_run,
            "entries": self.entries,
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "float_leftovers": self.leftovers,
            "ignored_keys": self.ignored_keys,
        }


LOCK_NAME = "billing.import_prices"


def import_prices(
    reading: TableReading, *, effective_from: datetime, dry_run: bool = False
) -> PriceImport:
    """Open a period wherever the table's rates differ from the open one's."""
    report = PriceImport(effective_from=effective_from, dry_run=dry_run, entries=reading.entries)
    report.skipped = [{"model": m, "reason": r} for m, r in reading.skipped]
    report.leftovers = [
        {"model": m, "key": k, "published": p, "per_million": t} for m, k, p, t in reading.leftovers
    ]
    report.ignored_keys = dict(sorted(reading.ignored_keys.items()))
    with transaction.atomic():
        # One import at a time (a second host's run is refused, never interleaved).
        if not advisory_xact_lock(LOCK_NAME):
            raise ServiceError("Another import_prices is running; try again when it ends.")
        current = _open_periods({spec.model for spec in reading.specs})
        for spec in reading.specs:
            _import_one(spec, current.get((spec.model, spec.service_tier)), report)
        if dry_run:
            transaction.set_rollback(True)
    return report


def _open_periods(models: set[str]) -> dict[tuple[str, str], ModelPrice]:
    rows = ModelPrice.objects.filter(
        model__in=models, effective_to__isnull=True, superseded_at__isnull=True
    )
    return {(p.model, p.service_tier): p for p in rows}


def _import_one(spec: PriceSpec, current: ModelPrice | None, report: PriceImport) -> None:
    name = {"model": spec.model, "service_tier": spec.service_tier}
    if current is not None and _same(current, spec):
        report.unchanged += 1
        return
    if current is not None and current.effective_from >= report.effective_from:
        report.skipped.append(
            name
            | {
                "reason": f"its open period starts {current.effective_from.isoformat()}, "
                "not before --effective-from"
            }  # fmt: skip
        )
        return
    try:
        with transaction.atomic():
            price = _set(spec, report.effective_from)
    except ServiceError as exc:
        report.skipped.append(name | {"reason": exc.message})
        return
    entry = name | {"price_id": price.pk, "rates": _rates_text(spec)}
    if current is None:
        report.new.append(entry)
    else:
        report.changed.append(entry | {"was": _rates_text(_spec_of(current)), "closed": current.pk})


def _set(spec: PriceSpec, effective_from: datetime) -> ModelPrice:
    rates = dict(zip((f"{n}_per_million" for n in DIMENSION_NAMES), spec.rates, strict=True))
    long_context = None
    if spec.long_context_threshold is not None:
        long_context = LongContext(
            threshold=spec.long_context_threshold,
            **dict(
                zip((f"{n}_per_million" for n in DIMENSION_NAMES), spec.long_rates, strict=True)
            ),
        )
    return set_model_price(
        model=spec.model,
        service_tier=spec.service_tier,
        effective_from=effective_from,
        long_context=long_context,
        source=spec.source,
        actor_label="manage.py import_prices",
        **rates,
    )


def _spec_of(price: ModelPrice) -> PriceSpec:
    long = price.long_context_threshold is not None
    return PriceSpec(
        price.model,
        price.service_tier,
        price.rates(long_context=False),
        price.long_context_threshold,
        price.rates(long_context=True) if long else None,
    )


def _same(price: ModelPrice, spec: PriceSpec) -> bool:
    return _spec_of(price) == spec


def _rates_text(spec: PriceSpec) -> dict[str, Any]:
    text: dict[str, Any] = {n: plain(r) for n, r in zip(DIMENSION_NAMES, spec.rates, strict=True)}
    if spec.long_context_threshold is not None:
        text["long_context_threshold"] = spec.long_context_threshold
        text |= {
            f"long_{n}": plain(r) for n, r in zip(DIMENSION_NAMES, spec.long_rates, strict=True)
        }
    return text

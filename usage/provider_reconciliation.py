"""Did we record everything the provider billed? Per UTC day and model, theirs against ours.

The provider's side is the current buckets of usage.provider_usage, limited to
this product's projects by the stored project map. Our side is every usage
row of every company whose model this provider bills (by the name prefixes of
settings, or because the provider's report names the model), grouped by the
UTC day of `occurred_at` (the providers bucket by UTC day; our rollup is by
the company's local day, so it cannot be used). Both sides meet under
usage.provider_usage.canonical_model.

Each line compares the token dimensions both sides hold: input (every input
token, cache reads and writes included, = our `prompt_tokens`), cached input
(cache reads, = `cached_prompt_tokens`) and output (= `completion_tokens`).
Cache writes and the provider's request count are shown, not judged (we do not
record them apart). The cost is judged only when a cost tolerance is set: what
we charge is priced by our own table, which need not be the provider's.

A line *matches* when every dimension is within the tolerance, else *we
recorded less* (some dimension is short: probably lost events; the missing
tokens are priced at our price in effect that day, and turned into generations
at our average tokens per generation of the model) or *we recorded more*.
Days in the range without a provider usage bucket are listed, never guessed.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db import connection
from django.utils import timezone

from billing.models import Company
from billing.money import plain
from billing.prices import PriceBook, Tokens, charge_for
from usage.models import (
    ProviderBucket,
    ProviderCostLine,
    ProviderUsageLine,
    QuestionGenerationUsage,
)
from usage.provider_usage import canonical_model, model_prefixes, stored_project_map

MATCHES = "matches"
LESS = "we_recorded_less"
MORE = "we_recorded_more"
STATUS_LABELS = {MATCHES: "matches", LESS: "we recorded less", MORE: "we recorded more"}
DEFAULT_DAYS = 31
JUDGED = ("input_tokens", "cached_input_tokens", "output_tokens")
_OUR_COLUMNS = (
    "generations",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "cost",
    "unpriced",
)


@dataclass(frozen=True)
class Tolerance:
    """How far a day and model may differ and still match (per dimension, per line)."""

    tokens: int = 0
    tokens_percent: Decimal = Decimal(0)
    cost: Decimal | None = None

    @classmethod
    def from_settings(
        cls,
        *,
        tokens: int | None = None,
        tokens_percent: Decimal | None = None,
        cost: Decimal | None = None,
    ) -> Tolerance:
        setting = settings.PROVIDER_RECONCILE_COST_TOLERANCE.strip()
        return cls(
            tokens=settings.PROVIDER_RECONCILE_TOKEN_TOLERANCE if tokens is None else tokens,
            tokens_percent=settings.PROVIDER_RECONCILE_TOKEN_TOLERANCE_PERCENT
            if tokens_percent is None
            else tokens_percent,
            cost=cost if cost is not None else (Decimal(setting) if setting else None),
        )

    def tokens_within(self, gap: int, provider: int) -> bool:
        return abs(gap) <= max(Decimal(self.tokens), self.tokens_percent * provider / 100)

    def as_json(self) -> dict:
        return {
            "tokens": self.tokens,
            "tokens_percent": plain(self.tokens_percent),
            "cost": plain(self.cost) if self.cost is not None else None,
        }


@dataclass
class ProviderSide:
    models: set[str] = field(default_factory=set)
    service_tiers: set[str] = field(default_factory=set)
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    requests: int | None = None
    cost: Decimal | None = None

    def as_json(self) -> dict:
        return {
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "output_tokens": self.output_tokens,
            "requests": self.requests,
            "cost": plain(self.cost),
        }


@dataclass
class OurSide:
    models: dict[str, int] = field(default_factory=dict)  # our model name: generations
    generations: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    unpriced: int = 0

    def as_json(self) -> dict:
        return {
            "generations": self.generations,
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "output_tokens": self.output_tokens,
            "cost": plain(self.cost),
            "unpriced_generations": self.unpriced,
        }


@dataclass
class Lost:
    """What we probably failed to record, from the dimensions where we are short."""

    tokens: int
    cost_at_our_prices: Decimal | None
    price_model: str
    estimated_generations: int | None

    def as_json(self) -> dict:
        return {
            "tokens": self.tokens,
            "cost_at_our_prices": plain(self.cost_at_our_prices),
            "priced_as": self.price_model or None,
            "estimated_generations": self.estimated_generations,
        }


@dataclass
class Line:
    day: date
    model: str
    provider: ProviderSide
    ours: OurSide
    status: str = MATCHES
    lost: Lost | None = None

    @property
    def difference(self) -> dict:
        """Provider minus ours, per dimension (positive: we recorded less)."""
        diff = {name: getattr(self.provider, name) - getattr(self.ours, name) for name in JUDGED}
        diff["cost"] = (
            self.provider.cost - self.ours.cost if self.provider.cost is not None else None
        )
        diff["requests"] = (
            self.provider.requests - self.ours.generations
            if self.provider.requests is not None
            else None
        )
        return diff

    @property
    def our_models(self) -> list[str]:
        return sorted(self.ours.models)

    def as_json(self) -> dict:
        diff = self.difference
        return {
            "day": self.day.isoformat(),
            "model": self.model,
            "status": self.status,
            "provider_models": sorted(self.provider.models),
            "our_models": self.our_models,
            "service_tiers": sorted(self.provider.service_tiers),
            "provider": self.provider.as_json(),
            "ours": self.ours.as_json(),
            "difference": {**diff, "cost": plain(diff["cost"])},
            "lost": self.lost.as_json() if self.lost else None,
        }


@dataclass
class Report:
    provider: str
    since: date
    until: date
    tolerance: Tolerance
    lines: list[Line] = field(default_factory=list)
    days_compared: list[date] = field(default_factory=list)
    days_without_provider_data: list[date] = field(default_factory=list)
    unattributed_provider_cost: Decimal = Decimal(0)
    excluded_tokens: int = 0
    cost_reported: bool = False  # any cost line of ours on a compared day

    @property
    def gaps(self) -> list[Line]:
        return [line for line in self.lines if line.status != MATCHES]

    @property
    def ok(self) -> bool:
        """No line beyond the tolerance and provider data for every day: exit 0."""
        return bool(self.days_compared) and not self.gaps and not self.days_without_provider_data

    def totals(self) -> dict:
        """Counts and sums over the lines (amounts as Decimal; as_json makes them text)."""
        less = [line for line in self.lines if line.status == LESS]
        priced = [
            ln.lost.cost_at_our_prices for ln in less if ln.lost.cost_at_our_prices is not None
        ]
        estimates = [ln.lost.estimated_generations for ln in less]
        provider_cost = sum((ln.provider.cost or 0 for ln in self.lines), Decimal(0))
        return {
            "lines": len(self.lines),
            MATCHES: sum(line.status == MATCHES for line in self.lines),
            LESS: len(less),
            MORE: sum(line.status == MORE for line in self.lines),
            "lost_tokens": sum(line.lost.tokens for line in less),
            "lost_cost_at_our_prices": sum(priced, Decimal(0)),
            "unpriced_lost_lines": len(less) - len(priced),
            "estimated_lost_generations": sum(e for e in estimates if e is not None),
            "provider_input_tokens": sum(line.provider.input_tokens for line in self.lines),
            "provider_output_tokens": sum(line.provider.output_tokens for line in self.lines),
            "our_input_tokens": sum(line.ours.input_tokens for line in self.lines),
            "our_output_tokens": sum(line.ours.output_tokens for line in self.lines),
            "provider_cost": (provider_cost + self.unattributed_provider_cost)
            if self.cost_reported
            else None,
            "unattributed_provider_cost": self.unattributed_provider_cost,
            "our_cost": sum((line.ours.cost for line in self.lines), Decimal(0)),
            "excluded_tokens": self.excluded_tokens,
        }

    def as_json(self) -> dict:
        return {
            "provider": self.provider,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "status": "ok" if self.ok else "gap",
            "tolerance": self.tolerance.as_json(),
            "days_compared": len(self.days_compared),
            "days_without_provider_data": [d.isoformat() for d in self.days_without_provider_data],
            "totals": {
                k: plain(v) if isinstance(v, Decimal) else v for k, v in self.totals().items()
            },
            "lines": [line.as_json() for line in self.lines],
        }


def default_range(provider: str, *, until: date | None = None) -> tuple[date, date]:
    """DEFAULT_DAYS UTC days to `until` (default: yesterday, the last complete day),
    from the first day imported if that is later."""
    until = until or timezone.now().astimezone(UTC).date() - timedelta(days=1)
    since = until - timedelta(days=DEFAULT_DAYS - 1)
    first = (
        ProviderBucket.objects.filter(provider=provider, report=ProviderBucket.Report.USAGE)
        .order_by("day")
        .values_list("day", flat=True)
        .first()
    )
    return (max(since, first) if first and first <= until else since), until


def providers_with_data() -> list[str]:
    return sorted(set(ProviderBucket.objects.values_list("provider", flat=True).distinct()))


def reconcile_provider(
    *, provider: str, since: date, until: date, tolerance: Tolerance | None = None
) -> Report:
    """Compare every UTC day in [since, until] (inclusive) that the provider's usage covers."""
    if until < since:
        raise ValueError(f"until ({until}) is before since ({since})")
    report = Report(provider=provider, since=since, until=until, tolerance=tolerance or Tolerance())
    days = set(
        ProviderBucket.objects.filter(
            provider=provider, report=ProviderBucket.Report.USAGE, superseded_at__isnull=True
        )
        .filter(day__gte=since, day__lte=until)
        .values_list("day", flat=True)
    )
    every_day = [since + timedelta(days=n) for n in range((until - since).days + 1)]
    report.days_compared = sorted(days)
    report.days_without_provider_data = [d for d in every_day if d not in days]
    if not days:
        return report
    theirs, reported = _provider_side(report, days=days, since=since, until=until)
    ours = _our_side(provider, reported=reported, days=days, since=since, until=until)
    keys = sorted(set(theirs) | set(ours))
    report.lines = [
        Line(
            day=d,
            model=m,
            provider=theirs.get((d, m), ProviderSide()),
            ours=ours.get((d, m), OurSide()),
        )
        for d, m in keys
    ]
    _judge(report, averages=_average_tokens(ours))
    return report


def _provider_side(report: Report, *, days: set[date], since: date, until: date):
    """Per (day, canonical model): the provider's tokens and cost in our scope."""
    scope = stored_project_map(report.provider)
    current = {
        "bucket__provider": report.provider,
        "bucket__superseded_at__isnull": True,
        "bucket__day__gte": since,
        "bucket__day__lte": until,
    }
    sides: dict[tuple[date, str], ProviderSide] = defaultdict(ProviderSide)
    reported: dict[date, set[str]] = defaultdict(set)
    for line in (
        ProviderUsageLine.objects.filter(**current)
        .select_related("bucket")
        .defer("raw", "bucket__source")
    ):
        reported[line.bucket.day].add(line.canonical_model)
        if not scope.is_ours(project_id=line.project_id, api_key_id=line.api_key_id):
            report.excluded_tokens += line.input_tokens + line.output_tokens
            continue
        _add_usage(sides[(line.bucket.day, line.canonical_model)], line)
    for line in (
        ProviderCostLine.objects.filter(**current)
        .select_related("bucket")
        .defer("raw", "bucket__source")
    ):
        if line.bucket.day not in days or not scope.is_ours(
            project_id=line.project_id, api_key_id=""
        ):
            continue  # a cost without that day's usage is not compared
        report.cost_reported = True
        if line.canonical_model not in reported[line.bucket.day]:
            report.unattributed_provider_cost += line.amount
            continue
        side = sides[(line.bucket.day, line.canonical_model)]
        side.cost = (side.cost or Decimal(0)) + line.amount
    return sides, reported


def _add_usage(side: ProviderSide, line: ProviderUsageLine) -> None:
    side.models.add(line.model)
    if line.service_tier:
        side.service_tiers.add(line.service_tier)
    side.input_tokens += line.input_tokens
    side.cached_input_tokens += line.cached_input_tokens
    side.cache_write_tokens += line.cache_write_5m_tokens + line.cache_write_1h_tokens
    side.output_tokens += line.output_tokens
    if line.requests is not None:
        side.requests = (side.requests or 0) + line.requests


def _our_side(provider: str, *, reported, days: set[date], since: date, until: date):
    """Per (day, canonical model): our recorded usage of every company, by UTC day."""
    prefixes = model_prefixes(provider)
    named = set().union(*reported.values())
    sides: dict[tuple[date, str], OurSide] = defaultdict(OurSide)
    for day, model, *figures in _our_totals(since=since, until=until):
        canonical = canonical_model(model)
        billed = canonical in named or model.lower().startswith(tuple(prefixes))
        if day not in days or not billed:
            continue
        side = sides[(day, canonical)]
        counts = dict(zip(_OUR_COLUMNS, figures, strict=True))
        side.models[model] = side.models.get(model, 0) + counts["generations"]
        side.generations += counts["generations"]
        side.input_tokens += counts["input_tokens"]
        side.cached_input_tokens += counts["cached_input_tokens"]
        side.output_tokens += counts["output_tokens"]
        side.cost += counts["cost"]
        side.unpriced += counts["unpriced"]
    return sides


def _our_totals(*, since: date, until: date) -> list[tuple]:
    """(UTC day, model, generations, tokens..., cost, unpriced) over [since, until]."""
    start = datetime.combine(since, time.min, tzinfo=UTC)
    end = datetime.combine(until + timedelta(days=1), time.min, tzinfo=UTC)
    with connection.cursor() as cursor:
        cursor.execute(_our_totals_sql(), [start, end])
        return cursor.fetchall()


@functools.cache
def _our_totals_sql() -> str:
    # One index-only range scan of usage_company_occurred per company (it
    # covers every column read here): a plain range scan over all companies
    # cannot seek on the index's second column and reads the whole index.
    return f"""
        SELECT (u.occurred_at AT TIME ZONE 'UTC')::date, u.model, count(*),
               coalesce(sum(u.prompt_tokens), 0), coalesce(sum(u.cached_prompt_tokens), 0),
               coalesce(sum(u.completion_tokens), 0), coalesce(sum(u.cost), 0),
               count(*) FILTER (WHERE u.cost IS NULL)
          FROM {Company._meta.db_table} c
         CROSS JOIN LATERAL (
               SELECT x.occurred_at, x.model, x.prompt_tokens, x.cached_prompt_tokens,
                      x.completion_tokens, x.cost
                 FROM {QuestionGenerationUsage._meta.db_table} x
                WHERE x.company_id = c.id AND x.occurred_at >= %s AND x.occurred_at < %s
               ) u
         GROUP BY 1, 2"""


def _average_tokens(ours: dict[tuple[date, str], OurSide]) -> dict[str, Decimal]:
    """Our tokens per generation of each model over the whole range."""
    tokens: dict[str, int] = defaultdict(int)
    generations: dict[str, int] = defaultdict(int)
    for (_, model), side in ours.items():
        tokens[model] += side.input_tokens + side.output_tokens
        generations[model] += side.generations
    return {m: Decimal(tokens[m]) / generations[m] for m in tokens if generations[m] and tokens[m]}


def _judge(report: Report, *, averages: dict[str, Decimal]) -> None:
    names = {name for line in report.lines for name in [line.model, *line.ours.models]}
    prices = PriceBook(names)
    for line in report.lines:
        diff = line.difference
        short = [n for n in JUDGED if diff[n] > 0 and not _within(report, line, n, diff[n])]
        over = [n for n in JUDGED if diff[n] < 0 and not _within(report, line, n, diff[n])]
        cost_gap = diff["cost"]
        if cost_gap is not None and report.tolerance.cost is not None:
            if cost_gap > report.tolerance.cost:
                short.append("cost")
            elif -cost_gap > report.tolerance.cost:
                over.append("cost")
        if short:
            line.status = LESS
            line.lost = _lost(line, prices=prices, averages=averages)
        elif over:
            line.status = MORE


def _within(report: Report, line: Line, name: str, gap: int) -> bool:
    return report.tolerance.tokens_within(gap, getattr(line.provider, name))


def _lost(line: Line, *, prices: PriceBook, averages: dict[str, Decimal]) -> Lost:
    p, o = line.provider, line.ours
    uncached = max(
        0, (p.input_tokens - p.cached_input_tokens) - (o.input_tokens - o.cached_input_tokens)
    )
    cached = max(0, p.cached_input_tokens - o.cached_input_tokens)
    output = max(0, p.output_tokens - o.output_tokens)
    tokens = uncached + cached + output
    name = max(o.models, key=lambda m: (o.models[m], m)) if o.models else line.model
    price = _price_of_day(prices, name, line.day)
    cost = None
    if price is not None:
        cost = charge_for(
            price, Tokens(prompt=uncached + cached, completion=output, cached=cached)
        ).total
    return Lost(
        tokens=tokens,
        cost_at_our_prices=cost,
        price_model=name if price is not None else "",
        estimated_generations=_estimate(tokens, line, averages),
    )


def _price_of_day(prices: PriceBook, model: str, day: date):
    """Our price at the start of the UTC day (or at its end, if one began that day)."""
    start = datetime.combine(day, time.min, tzinfo=UTC)
    end = start + timedelta(days=1) - timedelta(microseconds=1)
    return prices.in_effect(model, start) or prices.in_effect(model, end)


def _estimate(tokens: int, line: Line, averages: dict[str, Decimal]) -> int | None:
    """Lost tokens over our tokens per generation of the model (else the provider's
    tokens per request); at least 1 when anything is lost."""
    per_generation = averages.get(line.model)
    if per_generation is None and line.provider.requests:
        total = line.provider.input_tokens + line.provider.output_tokens
        per_generation = Decimal(total) / line.provider.requests if total else None
    if per_generation is None or tokens == 0:
        return None if tokens else 0
    return max(1, int((tokens / per_generation).to_integral_value(rounding=ROUND_HALF_UP)))

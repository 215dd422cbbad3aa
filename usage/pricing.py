"""Re-pricing recorded usage: price what was unpriced, correct what a bad price priced.

`manage.py reprice_usage` calls :func:`reprice_usage`. A row is priced with
the price of its model and service tier in effect at its `occurred_at`, by
its stored token breakdown (billing.prices.charge_for, as recording does). Rows are read in keyset batches per company; with `apply`
the whole run is one transaction (every change and its credit posting, or
none), each batch taking the house lock order (usage rows, rollup, balance).
For each row that changes:

- unpriced -> priced: cost and price reference set, the row's first USAGE
  debit posted (key `usage:<id>`, as recording would have);
- priced -> re-priced (only with `reprice_priced`): cost and price reference
  replaced, exactly the difference posted as a `usage_correction` entry
  (key `usage_correction:<id>:<n>`, n counting the row's corrections), so the
  ledger for a row always sums to minus its cost;
- the rollup bucket moves by the cost difference (and one fewer unpriced).

Reported costs are never touched. Re-running changes nothing: a row already
at its price computes no difference. A dry run computes the same and writes
nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import Count, QuerySet

from billing.audit import record_audit
from billing.ledger import post_entry
from billing.models import Company, LedgerEntry
from billing.money import plain
from billing.prices import PriceBook, Tokens, charge_for
from usage import rollup
from usage.models import CostSource, QuestionGenerationUsage

DEFAULT_BATCH_SIZE = 1000
LOCK_NAME = "usage.reprice_usage"
_FIELDS = (
    "id",
    "company_id",
    "occurred_at",
    "occurred_on",
    "model",
    "status",
    "question_count",
    "prompt_tokens",
    "cached_prompt_tokens",
    "completion_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "service_tier",
    "cost",
    "cost_source",
    "price_id",
    "prepaid",
    "api_key_id",
)


@dataclass
class CompanyReprice:
    company_id: uuid.UUID
    company_name: str
    rows: int = 0  # rows whose cost or price changes
    newly_priced: int = 0
    repriced: int = 0
    still_unpriced: int = 0  # no price covers them yet
    old_total: Decimal = Decimal(0)  # of the changing rows; unpriced count as 0
    new_total: Decimal = Decimal(0)
    # What the postings take from the company's credit (negative: give back);
    # prepaid rows change their cost but never the ledger.
    debited: Decimal = Decimal(0)

    def as_json(self) -> dict:
        return {
            "company_id": str(self.company_id),
            "company": self.company_name,
            "rows": self.rows,
            "newly_priced": self.newly_priced,
            "repriced": self.repriced,
            "still_unpriced": self.still_unpriced,
            "old_total": plain(self.old_total),
            "new_total": plain(self.new_total),
            "difference": plain(self.new_total - self.old_total),
            "debited": plain(self.debited),
        }


@dataclass
class RepriceReport:
    applied: bool
    companies: list[CompanyReprice] = field(default_factory=list)
    skipped: bool = False

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.companies)

    @property
    def old_total(self) -> Decimal:
        return sum((c.old_total for c in self.companies), Decimal(0))

    @property
    def new_total(self) -> Decimal:
        return sum((c.new_total for c in self.companies), Decimal(0))

    @property
    def debited(self) -> Decimal:
        return sum((c.debited for c in self.companies), Decimal(0))

    @property
    def still_unpriced(self) -> int:
        return sum(c.still_unpriced for c in self.companies)

    def as_json(self) -> dict:
        return {
            "applied": self.applied,
            "skipped": self.skipped,
            "rows": sum(c.rows for c in self.companies),
            "still_unpriced": sum(c.still_unpriced for c in self.companies),
            "old_total": plain(sum((c.old_total for c in self.companies), Decimal(0))),
            "new_total": plain(sum((c.new_total for c in self.companies), Decimal(0))),
            "debited": plain(self.debited),
            "companies": [c.as_json() for c in self.companies],
        }


@dataclass(frozen=True)
class _Change:
    row: dict
    cost: Decimal
    price_id: int


def candidates(
    *,
    model: str | None = None,
    since: datetime | None = None,
    reprice_priced: bool = False,
    company: Company | None = None,
) -> QuerySet[QuestionGenerationUsage]:
    """Rows reprice_usage looks at (never reported costs)."""
    sources = [CostSource.UNPRICED] + ([CostSource.PRICED] if reprice_priced else [])
    rows = QuestionGenerationUsage.objects.filter(cost_source__in=sources)
    if model:
        rows = rows.filter(model=model)
    if since is not None:
        rows = rows.filter(occurred_at__gte=since)
    if company is not None:
        rows = rows.filter(company=company)
    return rows


def reprice_usage(
    *,
    model: str | None = None,
    since: datetime | None = None,
    reprice_priced: bool = False,
    apply: bool = False,
    company: Company | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    actor=None,
    actor_label: str = "manage.py reprice_usage",
    on_company: Callable[[CompanyReprice], None] | None = None,
) -> RepriceReport:
    """Price unpriced usage (and re-price priced usage on request); dry unless `apply`."""
    # With --apply every change and its credit correction commit together, or none
    # do, so the printed totals are exactly what was applied.
    with transaction.atomic() if apply else nullcontext():
        rows = candidates(model=model, since=since, reprice_priced=reprice_priced, company=company)
        report = RepriceReport(applied=apply)
        company_ids = rows.order_by().values_list("company_id", flat=True).distinct()
        names = dict(Company.objects.filter(pk__in=company_ids).values_list("pk", "name"))
        for company_id in sorted(names, key=lambda pk: (names[pk], str(pk))):
            summary = CompanyReprice(company_id=company_id, company_name=names[company_id])
            _reprice_company(
                rows.filter(company_id=company_id), summary, apply, batch_size, actor, actor_label
            )
            report.companies.append(summary)
            if on_company is not None:
                on_company(summary)
        return report


def _reprice_company(rows, summary, apply, batch_size, actor, actor_label) -> None:
    after = None
    while True:
        batch = rows.order_by("id")
        if after is not None:
            batch = batch.filter(id__gt=after)
        with transaction.atomic():
            if apply:
                batch = batch.select_for_update()
            found = list(batch.values(*_FIELDS)[:batch_size])
            if not found:
                return
            changes = _plan(found, summary)
            if apply and changes:
                _apply(changes, summary, actor, actor_label)
        after = found[-1]["id"]


def _plan(rows: list[dict], summary: CompanyReprice) -> list[_Change]:
    changes = []
    prices = PriceBook({row["model"] for row in rows})
    for row in rows:
        price = prices.in_effect(row["model"], row["occurred_at"], row["service_tier"])
        if price is None:
            summary.still_unpriced += row["cost_source"] == CostSource.UNPRICED
            continue
        cost = charge_for(price, tokens_of(row)).total
        if row["cost_source"] == CostSource.PRICED and (row["cost"], row["price_id"]) == (
            cost,
            price.pk,
        ):
            continue
        changes.append(_Change(row=row, cost=cost, price_id=price.pk))
        summary.rows += 1
        summary.newly_priced += row["cost_source"] == CostSource.UNPRICED
        summary.repriced += row["cost_source"] == CostSource.PRICED
        summary.old_total += row["cost"] or Decimal(0)
        summary.new_total += cost
        if not row["prepaid"]:
            summary.debited += cost - (row["cost"] or Decimal(0))
    return changes


def tokens_of(row: dict | QuestionGenerationUsage) -> Tokens:
    """A stored usage row's token breakdown (a `.values()` dict or the row itself)."""
    get = row.__getitem__ if isinstance(row, dict) else row.__getattribute__
    return Tokens(
        prompt=get("prompt_tokens"),
        completion=get("completion_tokens"),
        cached=get("cached_prompt_tokens"),
        cache_write_5m=get("cache_write_5m_tokens"),
        cache_write_1h=get("cache_write_1h_tokens"),
        reasoning=get("reasoning_tokens"),
    )


def _apply(changes: list[_Change], summary: CompanyReprice, actor, actor_label: str) -> None:
    """Rows, then rollup, then ledger (the balance row): the house lock order."""
    updated = [
        QuestionGenerationUsage(
            id=c.row["id"], cost=c.cost, cost_source=CostSource.PRICED, price_id=c.price_id
        )
        for c in changes
    ]
    QuestionGenerationUsage.objects.bulk_update(updated, ["cost", "cost_source", "price"])
    deltas = rollup.Deltas()
    for change in changes:
        deltas.add(change.row, -1)
        deltas.add({**change.row, "cost": change.cost}, +1)
    rollup.apply(deltas)
    rollup.apply_key_changes((c.row, c.cost) for c in changes)
    company = Company.objects.get(pk=summary.company_id)
    corrections = _correction_counts([c.row["id"] for c in changes])
    for change in changes:
        _post(company, change, corrections.get(change.row["id"], 0) + 1, actor)
    old = sum((c.row["cost"] or Decimal(0) for c in changes), Decimal(0))
    new = sum((c.cost for c in changes), Decimal(0))
    record_audit(
        action="usage.reprice",
        actor=actor,
        actor_label=actor_label,
        company=company,
        after={"rows": len(changes), "old_total": plain(old), "new_total": plain(new)},
    )


def _correction_counts(usage_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = (
        LedgerEntry.objects.filter(usage_id__in=usage_ids, kind=LedgerEntry.Kind.USAGE_CORRECTION)
        .values("usage_id")
        .annotate(n=Count("id"))
    )
    return {r["usage_id"]: r["n"] for r in rows}


def _post(company: Company, change: _Change, correction_number: int, actor) -> None:
    usage_id, old_cost = change.row["id"], change.row["cost"]
    if change.row["prepaid"]:
        return  # history paid for outside this system: priced for reports, never debited
    if change.row["cost_source"] == CostSource.UNPRICED:
        post_entry(
            company=company,
            kind=LedgerEntry.Kind.USAGE,
            amount=-change.cost,
            idempotency_key=f"usage:{usage_id}",
            usage_id=usage_id,
            actor=actor,
            reason=f"{change.row['model']}: priced after the fact (price {change.price_id})",
        )
        return
    if change.cost == old_cost:
        return  # only the price reference changed; no money moves
    post_entry(
        company=company,
        kind=LedgerEntry.Kind.USAGE_CORRECTION,
        amount=-(change.cost - old_cost),
        idempotency_key=f"usage_correction:{usage_id}:{correction_number}",
        usage_id=usage_id,
        actor=actor,
        reason=f"{change.row['model']}: re-priced from {plain(old_cost)} to {plain(change.cost)} "
        f"(price {change.row['price_id']} -> {change.price_id})",
    )

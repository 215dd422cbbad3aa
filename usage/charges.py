"""Explaining a recorded charge: the row, its charge line by line, and its ledger entries.

The charge is recomputed by billing.prices.charge_for from the row's stored
token breakdown and the price period it references. A period's rates never
change once written (a database trigger) and verify_ledger checks that every
priced cost equals that computation, so the explanation adds up to the
stored cost, to the last decimal.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from billing.models import LedgerEntry
from billing.prices import Charge, charge_for
from usage.models import CostSource, QuestionGenerationUsage
from usage.pricing import tokens_of


@dataclass(frozen=True)
class Explanation:
    usage: QuestionGenerationUsage
    charge: Charge | None  # None for reported and unpriced rows
    debit: LedgerEntry | None  # the `usage` entry; None while unpriced, for prepaid rows
    corrections: tuple[LedgerEntry, ...]  # `usage_correction` entries, oldest first


def explain_usage(*, usage_id: str, company_id: uuid.UUID | None = None) -> Explanation | None:
    """The explanation of one usage row, or None when there is none (for `company_id`,
    when given: another company's row is not found either). Two queries."""
    try:
        pk = uuid.UUID(str(usage_id))
    except ValueError:
        return None
    rows = QuestionGenerationUsage.objects.select_related("price").filter(pk=pk)
    if company_id is not None:
        rows = rows.filter(company_id=company_id)
    usage = rows.first()
    if usage is None:
        return None
    charge = None
    if usage.cost_source == CostSource.PRICED and usage.price is not None:
        charge = charge_for(usage.price, tokens_of(usage))
    entries = list(
        LedgerEntry.objects.filter(company_id=usage.company_id, usage_id=usage.pk).order_by("id")
    )
    debit = next((e for e in entries if e.kind == LedgerEntry.Kind.USAGE), None)
    corrections = tuple(e for e in entries if e.kind == LedgerEntry.Kind.USAGE_CORRECTION)
    return Explanation(usage=usage, charge=charge, debit=debit, corrections=corrections)

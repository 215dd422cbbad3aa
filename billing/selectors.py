"""Reads over credit: the summary the billing page shows, the ledger the admin shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from billing.models import Company, CreditBalance, CreditLot, LedgerEntry

ZERO = Decimal(0)


@dataclass(frozen=True)
class ExpiringCredit:
    entry_id: int
    kind: str
    expires_at: datetime
    remaining: Decimal


@dataclass(frozen=True)
class CreditSummary:
    balance: Decimal  # == CreditBalance.balance == sum(ledger)
    paid: Decimal  # unconsumed paid (purchase/refund) credit
    promotional: Decimal  # unconsumed promotional (grant) credit
    expiring: list[ExpiringCredit]  # credit still to expire, soonest first
    debt: Decimal = ZERO  # consumption no credit covered yet: balance == paid + promotional - debt


def credit_summary(company: Company, *, now: datetime | None = None) -> CreditSummary:
    """Balance, unconsumed paid and promotional credit, and what is still to expire.

    Three small queries over the company's open lots (partial index). Credit
    whose expiry passed but that `expire_credits` has not written off yet still
    counts in paid/promotional (it is still in the balance) but not in `expiring`.
    """
    now = now or timezone.now()
    row = CreditBalance.objects.filter(company=company).values("balance", "debt").first()
    row = row or {"balance": ZERO, "debt": ZERO}
    open_lots = CreditLot.objects.filter(company=company, remaining__gt=0)
    totals = open_lots.aggregate(
        paid=Sum("remaining", filter=Q(funding=CreditLot.Funding.PAID)),
        promotional=Sum("remaining", filter=Q(funding=CreditLot.Funding.PROMOTIONAL)),
    )
    expiring = [
        ExpiringCredit(entry_id=entry_id, kind=kind, expires_at=expires_at, remaining=remaining)
        for entry_id, kind, expires_at, remaining in open_lots.filter(expires_at__gt=now)
        .order_by("expires_at", "id")
        .values_list("entry_id", "entry__kind", "expires_at", "remaining")
    ]
    return CreditSummary(
        balance=row["balance"],
        paid=totals["paid"] or ZERO,
        promotional=totals["promotional"] or ZERO,
        expiring=expiring,
        debt=row["debt"],
    )


def company_ledger(company: Company) -> QuerySet[LedgerEntry]:
    """The company's ledger, newest first, with the running balance (`balance_after`)."""
    return LedgerEntry.objects.filter(company=company).select_related("actor").order_by("-id")

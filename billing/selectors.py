"""PLACEHOLDER (billing-page branch only): the credits helper owns this module.

Only the agreed interface of `credit_summary` (contracts.md), so the billing
page can be built in parallel. It does not allocate consumption to credits:
it reports the whole balance as paid and lists credit with an expiry date
ahead. The lead replaces this file with the credits helper's at merge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from billing.models import Company, LedgerEntry
from billing.services import current_balance


@dataclass(frozen=True)
class ExpiringCredit:
    entry_id: int
    kind: str
    expires_at: datetime
    remaining: Decimal


@dataclass(frozen=True)
class CreditSummary:
    balance: Decimal
    paid: Decimal
    promotional: Decimal
    expiring: list[ExpiringCredit] = field(default_factory=list)


def credit_summary(company: Company, *, now: datetime | None = None) -> CreditSummary:
    now = now or timezone.now()
    balance = current_balance(company)
    expiring = [
        ExpiringCredit(entry_id=e.pk, kind=e.kind, expires_at=e.expires_at, remaining=e.amount)
        for e in LedgerEntry.objects.filter(company=company, expires_at__gt=now).order_by(
            "expires_at", "id"
        )[:20]
    ]
    return CreditSummary(balance=balance, paid=balance, promotional=Decimal(0), expiring=expiring)

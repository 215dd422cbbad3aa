"""The quota check the main product calls before it generates.

Usage is never refused once it happened; this answers whether a *new*
generation should start: not when the balance is at or below the negative of
the company's overdraft allowance, nor when its monthly spend limit is reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from billing.ledger import current_balance
from billing.models import Company
from usage.selectors import month_to_date_totals


@dataclass(frozen=True)
class QuotaStatus:
    balance: Decimal
    month_to_date_spend: Decimal
    unpriced_generations: int  # this month's generations not yet in the spend
    overdraft_allowance: Decimal
    monthly_spend_limit: Decimal | None
    low_balance_threshold: Decimal
    allowed: bool
    reasons: tuple[str, ...]

    @property
    def low_balance(self) -> bool:
        return self.balance < self.low_balance_threshold


def quota_status(company: Company, *, now: datetime | None = None) -> QuotaStatus:
    now = now or timezone.now()
    balance = current_balance(company)
    spend, unpriced = month_to_date_totals(company, now)
    reasons = []
    if not company.is_active:
        reasons.append("company is inactive")
    if balance <= -company.overdraft_allowance:
        reasons.append("balance is at or below the overdraft allowance")
    limit = company.monthly_spend_limit
    if limit is not None and spend >= limit:
        reasons.append("monthly spend limit reached")
    return QuotaStatus(
        balance=balance,
        month_to_date_spend=spend,
        unpriced_generations=unpriced,
        overdraft_allowance=company.overdraft_allowance,
        monthly_spend_limit=limit,
        low_balance_threshold=company.low_balance_threshold,
        allowed=not reasons,
        reasons=tuple(reasons),
    )

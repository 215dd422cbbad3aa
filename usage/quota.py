"""The quota check the main product calls before it generates.

Usage is never refused once it happened; this answers whether a *new*
generation should start: not when the balance less the open holds is at or
below the negative of the company's overdraft allowance, nor when the monthly
spend plus the open holds reaches the company's limit, nor (for the calling
key) when the key's spend today or this month plus its open holds reaches its
limit. Every reason that applies is given (usage.budgets).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from billing.ledger import current_balance
from billing.models import APIKey, Company
from usage.budgets import REASONS, KeyBudget, read_budget


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
    reason_codes: tuple[str, ...] = ()
    held: Decimal = Decimal(0)
    key: KeyBudget | None = None

    @property
    def low_balance(self) -> bool:
        return self.balance < self.low_balance_threshold


def quota_status(
    company: Company, *, key: APIKey | None = None, now: datetime | None = None
) -> QuotaStatus:
    """The company's quota, and the calling key's when it is one of the company's keys."""
    now = now or timezone.now()
    balance = current_balance(company)
    budget = read_budget(company, key=key, balance=balance, now=now, key_figures=True)
    codes = budget.refusals()
    return QuotaStatus(
        balance=budget.balance,
        month_to_date_spend=budget.month_spend,
        unpriced_generations=budget.unpriced,
        overdraft_allowance=company.overdraft_allowance,
        monthly_spend_limit=company.monthly_spend_limit,
        low_balance_threshold=company.low_balance_threshold,
        allowed=not codes,
        reasons=tuple(REASONS[c] for c in codes),
        reason_codes=tuple(codes),
        held=budget.held,
        key=budget.key,
    )

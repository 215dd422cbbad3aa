"""Helpers for the credit tests: post credit through the services, read lots."""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal

from billing.credits import grant_credits
from billing.models import Company, CreditLot

_keys = itertools.count(1)


def grant(
    company: Company,
    amount: str,
    *,
    kind: str = "purchase",
    expires_at: datetime | None = None,
    reason: str = "test credit",
):
    return grant_credits(
        company=company,
        amount=amount,
        kind=kind,
        reason=reason,
        expires_at=expires_at,
        idempotency_key=f"grant-{next(_keys)}",
    ).entry


def lot_of(entry) -> CreditLot:
    return CreditLot.objects.get(entry=entry)


def remaining(entry) -> Decimal:
    return lot_of(entry).remaining

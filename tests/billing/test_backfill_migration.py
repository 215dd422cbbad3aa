"""Migration 0004 replays pre-lot ledgers with the same allocation rules."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

backfill = importlib.import_module("billing.migrations.0004_backfill_credit_lots")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _entry(i: int, kind: str, amount: str, expires_days: int | None = None, at_days: int = 0):
    expires = None if expires_days is None else T0 + timedelta(days=expires_days)
    return SimpleNamespace(
        id=i,
        kind=kind,
        amount=Decimal(amount),
        expires_at=expires,
        created_at=T0 + timedelta(at_days),
    )


def test_replay_allocates_soonest_expiring_first_and_pays_debt_with_new_credit():
    entries = [
        _entry(1, "purchase", "10"),
        _entry(2, "usage", "-4"),
        _entry(3, "grant", "5", expires_days=3),
        _entry(4, "usage", "-3"),
        _entry(5, "usage", "-10"),
        _entry(6, "grant", "9", expires_days=1, at_days=2),  # expired when posted: pays nothing
        _entry(7, "purchase", "20", at_days=2),
    ]
    lots, debt = backfill._replay(entries)
    consumed = {lot["entry"].id: lot["consumed"] for lot in lots}
    assert consumed == {1: Decimal(10), 3: Decimal(5), 6: 0, 7: Decimal(2)}
    assert debt == 0

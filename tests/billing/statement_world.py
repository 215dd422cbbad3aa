"""Helpers for the statement tests: a clock the ledger and usage follow, and closing."""

from __future__ import annotations

from datetime import UTC, datetime

import django.utils.timezone
from django.db import connection

from billing.models import Statement
from usage.statements import close_due_statements


class Clock:
    """What `timezone.now()` answers: every created_at and recorded_at follows it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def set(self, *args: int) -> datetime:
        self.now = datetime(*args, tzinfo=UTC) if len(args) > 1 else args[0]
        return self.now


def install_clock(monkeypatch) -> Clock:
    """The `clock` fixture (tests/conftest.py): mid-October 2026 until set."""
    clock = Clock(datetime(2026, 10, 15, 12, tzinfo=UTC))
    monkeypatch.setattr(django.utils.timezone, "now", clock)
    return clock


def close(company, clock: Clock | None = None, **kwargs) -> list:
    return [c.statement for c in close_due_statements(company=company, **kwargs)]


def stored_hash(statement: Statement) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT billing_statement_hash(%s)", [statement.pk])
        return cursor.fetchone()[0]

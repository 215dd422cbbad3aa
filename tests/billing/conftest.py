"""Helpers for the credit tests: post credit through the services, read lots."""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal

import pytest
from django.db import connection

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


@pytest.fixture
def flushable_ledger(transactional_db):
    """Let the flush after a `transaction=True` test empty the append-only ledger.

    The `ledger_no_truncate` trigger refuses TRUNCATE, which is how Django
    empties the database between transactional tests. It is switched off only
    after the test body (threads done) and on again before the next such test.
    """
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE billing_ledgerentry ENABLE TRIGGER ledger_no_truncate")
    yield
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE billing_ledgerentry DISABLE TRIGGER ledger_no_truncate")


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    """Admin pages render without a collectstatic manifest (tests run with DEBUG off)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }

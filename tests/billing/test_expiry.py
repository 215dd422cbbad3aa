"""`manage.py expire_credits`: one write-off per expired lot, idempotent, dry run."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.credits import expire_lot
from billing.ledger import current_balance, post_entry
from billing.models import CreditLot, LedgerEntry
from tests.billing.conftest import grant, lot_of
from tests.conftest import make_usage

pytestmark = pytest.mark.django_db
D = Decimal


def _expired_grant(company, amount: str, key: str, minutes_ago: int = 1):
    return post_entry(
        company=company,
        kind="grant",
        amount=amount,
        idempotency_key=key,
        expires_at=timezone.now() - timedelta(minutes=minutes_ago),
    ).entry


def _run(*args) -> dict:
    out = StringIO()
    call_command("expire_credits", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def test_expiry_writes_off_only_the_unconsumed_remainder(company):
    soon = grant(company, "10", kind="grant", expires_at=timezone.now() + timedelta(seconds=2))
    keep = grant(company, "100")
    make_usage(company, cost="4")  # from `soon`, the soonest-expiring
    later = timezone.now() + timedelta(seconds=3)
    expiry = expire_lot(lot_id=lot_of(soon).pk, now=later)
    assert expiry.amount == D(6)
    entry = LedgerEntry.objects.get(idempotency_key=f"expiry:{lot_of(soon).pk}")
    assert (entry.kind, entry.amount, entry.balance_after) == ("expiry", D(-6), D(100))
    lot = lot_of(soon)
    assert (lot.consumed, lot.expired, lot.remaining) == (D(4), D(6), 0)
    assert lot_of(keep).remaining == D(100)
    assert expire_lot(lot_id=lot.pk, now=later) is None  # nothing left: no second entry


def test_command_expires_every_due_lot_once_and_reports(company, other_company):
    a = _expired_grant(company, "7", "a")
    b = _expired_grant(other_company, "3.5", "b")
    grant(company, "5", expires_at=timezone.now() + timedelta(days=1))  # not due
    summary = _run()
    assert summary["lots"] == 2 and summary["amount"] == "10.50"
    assert summary["companies"] == {str(company.pk): "7.00", str(other_company.pk): "3.50"}
    assert current_balance(company) == D(5) and current_balance(other_company) == 0
    assert lot_of(a).expired == D(7) and lot_of(b).expired == D("3.5")
    assert _run()["lots"] == 0  # idempotent
    assert LedgerEntry.objects.filter(kind="expiry").count() == 2


def test_dry_run_writes_nothing(company):
    _expired_grant(company, "7", "a")
    summary = _run("--dry-run")
    assert summary["dry_run"] and summary["lots"] == 1 and summary["amount"] == "7.00"
    assert not LedgerEntry.objects.filter(kind="expiry").exists()
    assert CreditLot.objects.get().remaining == D(7)


def test_fully_consumed_lots_are_not_expired(company):
    soon = grant(company, "3", expires_at=timezone.now() + timedelta(seconds=1))
    make_usage(company, cost="3")
    assert expire_lot(lot_id=lot_of(soon).pk, now=timezone.now() + timedelta(seconds=2)) is None
    assert not LedgerEntry.objects.filter(kind="expiry").exists()


def test_human_output(company):
    _expired_grant(company, "7", "a")
    out = StringIO()
    call_command("expire_credits", stdout=out)
    assert "Expired 1 lots, 7.00 in total, across 1 companies." in out.getvalue()

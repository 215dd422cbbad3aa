"""`manage.py grant_credits` and the demo's credits go through the grant service."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.ledger import current_balance
from billing.models import AuditEvent, CreditBalance, CreditLot, LedgerEntry
from tests.conftest import make_company

pytestmark = pytest.mark.django_db


def _grant(*args) -> str:
    out = StringIO()
    call_command("grant_credits", *args, stdout=out)
    return out.getvalue()


def test_grant_by_external_id_with_expiry_in_the_company_time_zone():
    company = make_company(external_id="org_tokyo", timezone="Asia/Tokyo")
    out = _grant(
        "org_tokyo",
        "150.50",
        "--kind",
        "grant",
        "--reason",
        "Pilot",
        "--expires-at",
        "2099-01-31",
        "--idempotency-key",
        "pilot-1",
    )
    assert "Posted: grant of $150.50" in out
    lot = CreditLot.objects.get(company=company)
    assert lot.funding == "promotional"
    assert lot.expires_at == datetime(2099, 1, 31, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert AuditEvent.objects.get(action="credit.grant").actor_label == "manage.py grant_credits"
    again = _grant(
        "org_tokyo",
        "150.50",
        "--kind",
        "grant",
        "--reason",
        "Pilot",
        "--expires-at",
        "2099-01-31",
        "--idempotency-key",
        "pilot-1",
    )
    assert "Already posted (replay)" in again
    assert current_balance(company) == Decimal("150.50")


@pytest.mark.parametrize(
    "args",
    [
        ["nobody", "5", "--kind", "purchase", "--reason", "x"],
        ["{c}", "-5", "--kind", "purchase", "--reason", "x"],
        ["{c}", "abc", "--kind", "purchase", "--reason", "x"],
        ["{c}", "5", "--kind", "purchase", "--reason", " "],
        ["{c}", "5", "--kind", "purchase", "--reason", "x", "--expires-at", "2001-01-01"],
        ["{c}", "5", "--kind", "purchase", "--reason", "x", "--expires-at", "soon"],
    ],
)
def test_bad_input_is_a_clear_error_and_posts_nothing(company, args):
    with pytest.raises(CommandError):
        _grant(*[a.format(c=company.pk) for a in args])
    assert not LedgerEntry.objects.exists()


def test_seed_demo_credits_are_lots():
    call_command("seed_demo", "--companies", "2", "--usage-rows", "20", stdout=StringIO())
    kinds = set(CreditLot.objects.values_list("entry__kind", "funding"))
    assert kinds == {("purchase", "paid"), ("grant", "promotional")}
    assert AuditEvent.objects.filter(actor_label="seed_demo").count() == 4


def test_running_the_same_grant_twice_without_a_key_grants_once(company):
    args = [str(company.pk), "500", "--kind", "purchase", "--reason", "Invoice 1042"]
    call_command("grant_credits", *args, stdout=StringIO())
    out = StringIO()
    call_command("grant_credits", *args[:1], "500.00", *args[2:], stdout=out)
    assert "Already posted (replay)" in out.getvalue()
    assert CreditBalance.objects.get(company=company).balance == Decimal("500")
    call_command("grant_credits", *args[:-1], "Invoice 1043", stdout=StringIO())
    assert CreditBalance.objects.get(company=company).balance == Decimal("1000")

"""`manage.py verify_ledger` passes on a clean world and names what breaks."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.credits import expire_lot
from billing.invariants import check_ledger
from billing.ledger import post_entry
from billing.models import CreditLot
from tests.billing.conftest import grant
from tests.conftest import make_event, make_usage
from usage.recording import record_usage

pytestmark = pytest.mark.django_db


def _world(company, other_company, price):
    grant(company, "20", kind="grant", expires_at=timezone.now() + timedelta(days=3))
    grant(company, "50")
    for _ in range(3):
        make_usage(company)  # priced
    make_usage(company, model="no-price-yet")  # unpriced: no debit
    make_usage(other_company, cost="2")  # debt
    lot = post_entry(
        company=other_company,
        kind="grant",
        amount="3",
        idempotency_key="old",
        expires_at=timezone.now() - timedelta(seconds=1),
    ).entry.lot
    expire_lot(lot_id=lot.pk)


def _verify(*args) -> tuple[dict, bool]:
    out = StringIO()
    try:
        call_command("verify_ledger", "--json", *args, stdout=out)
        failed = False
    except CommandError:
        failed = True
    return json.loads(out.getvalue()), failed


def _sql(sql, params=()):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_a_consistent_world_passes(company, other_company, price):
    _world(company, other_company, price)
    summary, failed = _verify()
    assert summary["ok"] and not failed and summary["failures"] == []
    out = StringIO()
    call_command("verify_ledger", "--company", company.external_id, stdout=out)
    assert "invariants hold" in out.getvalue()


def test_a_balance_corrupted_behind_its_back_is_caught(company, other_company, price):
    _world(company, other_company, price)
    _sql(
        "UPDATE billing_creditbalance SET balance = balance + 1 WHERE company_id = %s", [company.pk]
    )
    summary, failed = _verify()
    assert failed
    names = {(f["company_id"], f["invariant"]) for f in summary["failures"]}
    assert (str(company.pk), "balance_equals_ledger") in names
    assert (str(company.pk), "balance_equals_lots") in names
    assert all(f["company_id"] == str(company.pk) for f in summary["failures"])
    assert summary["failures"][0]["company"] == company.name
    assert not _verify("--company", str(other_company.pk))[1]


def test_a_missing_debit_is_caught(company, other_company, price):
    _world(company, other_company, price)
    usage = record_usage(make_event(company), company=company, debit=False).usage
    # Not prepaid history, yet no debit: a debit lost behind the service's back.
    _sql("UPDATE question_generation_usage SET prepaid = false WHERE id = %s", [usage.pk])
    failures = check_ledger()
    assert [(f.company_id, f.invariant) for f in failures] == [
        (str(company.pk), "usage_debited_once_for_its_cost")
    ]


def test_prepaid_history_is_not_a_missing_debit(company, other_company, price):
    _world(company, other_company, price)
    usage = record_usage(make_event(company), company=company, debit=False).usage
    assert usage.prepaid and usage.cost > 0
    assert check_ledger() == []


def test_a_debit_on_prepaid_history_is_caught(company, price):
    grant(company, "50")
    usage = record_usage(make_event(company), company=company, debit=False).usage
    post_entry(
        company=company,
        kind="usage",
        amount=-usage.cost,
        idempotency_key=f"usage:{usage.pk}",
        usage_id=usage.pk,
    )
    assert {f.invariant for f in check_ledger()} == {"usage_debited_once_for_its_cost"}


def test_a_debit_of_the_wrong_amount_is_caught(company, price):
    grant(company, "50")
    usage = record_usage(make_event(company), company=company, debit=False).usage
    _sql("UPDATE question_generation_usage SET prepaid = false WHERE id = %s", [usage.pk])
    post_entry(
        company=company,
        kind="usage",
        amount=-usage.cost - 1,
        idempotency_key=f"usage:{usage.pk}",
        usage_id=usage.pk,
    )
    assert {f.invariant for f in check_ledger()} == {"usage_debited_once_for_its_cost"}


def test_a_rollup_out_of_step_with_usage_is_caught(company, price):
    make_usage(company)
    _sql(
        "UPDATE usage_daily_rollup SET questions = questions + 1 WHERE company_id = %s",
        [company.pk],
    )
    failures = check_ledger(company_id=company.pk)
    assert [f.invariant for f in failures] == ["rollup_equals_usage"]


def test_credit_consumed_twice_is_caught(company, price):
    entry = grant(company, "50")
    make_usage(company)
    _sql(
        "UPDATE billing_creditlot SET consumed = consumed + 1, remaining = remaining - 1 "
        "WHERE entry_id = %s",
        [entry.pk],
    )
    invariants = {f.invariant for f in check_ledger()}
    assert {"consumption_equals_debits", "balance_equals_lots"} <= invariants


def test_credit_consumed_after_expiry_is_caught(company):
    entry = grant(company, "5", expires_at=timezone.now() + timedelta(days=1))
    CreditLot.objects.filter(entry=entry).update(
        last_consumed_at=timezone.now() + timedelta(days=2)
    )
    assert [f.invariant for f in check_ledger()] == ["lot_within_its_amount"]


def test_verify_ledger_says_the_invariants_hold_on_a_clean_ledger():
    out = StringIO()
    call_command("verify_ledger", stdout=out)
    assert "invariants hold" in out.getvalue()


def test_a_price_changed_under_priced_usage_is_caught(company, price):
    grant(company, "50")
    make_usage(company)
    assert check_ledger() == []
    # The database refuses the edit (model_price_rates_fixed) ...
    with pytest.raises(IntegrityError), transaction.atomic():
        _sql("UPDATE billing_modelprice SET output_per_million = 99 WHERE id = %s", [price.pk])
    # ... so only someone who drops the guard first can edit in place, and then the
    # charges no longer explain.
    _sql("SET LOCAL session_replication_role = replica")  # ordinary triggers off
    _sql("UPDATE billing_modelprice SET output_per_million = 99 WHERE id = %s", [price.pk])
    _sql("SET LOCAL session_replication_role = DEFAULT")
    assert {f.invariant for f in check_ledger()} == {"priced_cost_is_tokens_times_its_price"}

"""The database itself refuses bad rows: real inserts, no mocks."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, InternalError, connection, transaction
from django.utils import timezone

from billing.models import BillingAlert, CreditBalance, CreditLot, LedgerEntry, ModelPrice
from tests.conftest import give_credit, make_company, make_price, make_usage
from usage.models import QuestionGenerationUsage

pytestmark = pytest.mark.django_db


def _raw_usage(company, **overrides):
    values = dict(
        company=company,
        draft_job_id="d-1",
        status="draft",
        model="m",
        prompt_tokens=10,
        cached_prompt_tokens=0,
        completion_tokens=5,
        question_count=1,
        cost=Decimal("0.01"),
        cost_source="reported",
        idempotency_key="k-1",
        occurred_at=timezone.now(),
        occurred_on=timezone.now().date(),
    )
    values.update(overrides)
    return QuestionGenerationUsage.objects.create(**values)


@pytest.mark.parametrize(
    "overrides",
    [
        {"prompt_tokens": -1},
        {"completion_tokens": -5},
        {"question_count": -1},
        {"cached_prompt_tokens": 11},  # more than prompt_tokens
        {"draft_job_id": None},  # neither job nor draft
        {"status": "linked"},  # linked without a job
        {"cost": None},  # reported without a cost
        {"cost_source": "unpriced"},  # unpriced with a cost
        {"cost": Decimal("-1")},
        {"cost_source": "priced"},  # priced without a price reference
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_database_refuses_bad_usage_rows(company, overrides):
    with pytest.raises(IntegrityError), transaction.atomic():
        _raw_usage(company, **overrides)


def test_duplicate_idempotency_key_is_refused_per_company(company, other_company):
    _raw_usage(company)
    _raw_usage(other_company)  # same key, another company: fine
    with pytest.raises(IntegrityError), transaction.atomic():
        _raw_usage(company)


def test_overlapping_price_periods_are_refused():
    start = timezone.now() - timedelta(days=30)
    make_price("m", effective_from=start, effective_to=start + timedelta(days=10))
    make_price("m", effective_from=start + timedelta(days=10))  # adjacent: fine
    make_price("other", effective_from=start)  # other model: fine
    with pytest.raises(IntegrityError), transaction.atomic():
        make_price(
            "m", effective_from=start + timedelta(days=5), effective_to=start + timedelta(days=6)
        )


def test_price_period_must_end_after_it_starts():
    now = timezone.now()
    with pytest.raises(IntegrityError), transaction.atomic():
        make_price("m", effective_from=now, effective_to=now - timedelta(days=1))


def test_ledger_rows_cannot_be_updated_or_deleted_even_with_raw_sql(company):
    entry = give_credit(company, "10")
    for sql in (
        "UPDATE billing_ledgerentry SET amount = 1000 WHERE id = %s",
        "DELETE FROM billing_ledgerentry WHERE id = %s",
    ):
        with pytest.raises((IntegrityError, InternalError)), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, [entry.pk])
    assert LedgerEntry.objects.get(pk=entry.pk).amount == Decimal("10")


def test_ledger_model_refuses_update_and_delete(company):
    entry = give_credit(company, "10")
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()


def test_ledger_amount_sign_must_match_kind(company):
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(
            company=company,
            kind="purchase",
            amount=Decimal("-5"),
            balance_after=0,
            idempotency_key="x",
        )


def test_one_debit_per_usage_row(company, price):
    usage = make_usage(company).usage
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(
            company=company,
            kind="usage",
            amount=Decimal("-1"),
            balance_after=0,
            idempotency_key="second-debit",
            usage_id=usage.pk,
        )


def test_external_id_is_unique():
    make_company(external_id="org_same")
    with pytest.raises(IntegrityError), transaction.atomic():
        make_company(external_id="org_same")
    make_company(external_id=None)
    make_company(external_id=None)  # many companies without one


def test_model_prices_keep_twelve_places(company):
    price = make_price("precise", input="0.123456789012")
    price.refresh_from_db()
    assert price.input_per_million == Decimal("0.123456789012")
    assert isinstance(ModelPrice.objects.get(pk=price.pk).input_per_million, Decimal)


def test_a_lot_can_never_give_out_more_than_it_holds(company):
    entry = give_credit(company, "10")
    lots = CreditLot.objects.filter(entry=entry)
    bad = [
        {"consumed": Decimal(8), "expired": Decimal(3), "remaining": Decimal(-1)},
        {"expired": Decimal(-1), "remaining": Decimal(11)},
        {"consumed": Decimal(8), "remaining": Decimal(3)},
    ]
    for values in bad:
        with pytest.raises(IntegrityError), transaction.atomic():
            lots.update(**values)
    assert lots.get().remaining == Decimal(10)


def test_debt_is_never_negative(company):
    give_credit(company, "1")
    with pytest.raises(IntegrityError), transaction.atomic():
        CreditBalance.objects.filter(company=company).update(debt=Decimal(-1))


def test_one_open_alert_per_crossing(company):
    values = dict(company=company, kind="spend_80", period="2026-11", balance=1, threshold=1)
    BillingAlert.objects.create(**values)
    with pytest.raises(IntegrityError), transaction.atomic():
        BillingAlert.objects.create(**values)
    BillingAlert.objects.create(**{**values, "period": "2026-12"})

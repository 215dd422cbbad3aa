"""The recording service's core promises (the API issue adds its own tests)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from billing.models import CreditBalance, LedgerEntry
from core.errors import IdempotencyConflict
from tests.conftest import give_credit, make_event, make_job, make_price, make_usage
from usage.errors import CrossTenantJob
from usage.models import QuestionGenerationUsage, UsageDailyRollup
from usage.recording import record_usage

pytestmark = pytest.mark.django_db


def test_priced_usage_is_exact_and_debited(company, price):
    give_credit(company, "100")
    result = make_usage(
        company, prompt_tokens=1000, cached_prompt_tokens=400, completion_tokens=500
    )
    # 600 x 2.50 + 400 x 1.25 + 500 x 10.00 = 7000 per million tokens
    assert result.usage.cost == Decimal("0.007")
    assert result.usage.cost_source == "priced"
    assert result.usage.price == price
    assert result.balance == Decimal("99.993")
    assert CreditBalance.objects.get(company=company).balance == Decimal("99.993")
    debit = LedgerEntry.objects.get(usage_id=result.usage.pk)
    assert debit.amount == Decimal("-0.007")


def test_draft_usage_is_stored_under_its_draft_id(company, price):
    usage = make_usage(company, job_id="tmp-123").usage
    assert usage.job is None
    assert usage.draft_job_id == "tmp-123"
    assert usage.status == "draft"


def test_usage_for_a_saved_job_links_to_it(company, price):
    job = make_job(company)
    usage = make_usage(company, job_id=str(job.pk)).usage
    assert usage.job == job and usage.status == "linked"


def test_usage_after_its_draft_was_saved_links_directly(company, price):
    job = make_job(company, draft_job_id="tmp-9")
    usage = make_usage(company, draft_job_id="tmp-9").usage
    assert usage.job == job and usage.status == "linked"
    assert usage.draft_job_id == "tmp-9" and usage.reconciled_at is not None


def test_saving_a_job_links_its_draft_usage(company, price):
    first = make_usage(company, draft_job_id="tmp-1").usage
    make_usage(company, draft_job_id="tmp-other")
    job = make_job(company, draft_job_id="tmp-1")
    first.refresh_from_db()
    assert first.job == job and first.status == "linked" and first.draft_job_id == "tmp-1"
    assert QuestionGenerationUsage.objects.filter(status="draft").count() == 1


def test_job_of_another_company_is_never_linked(company, other_company, price):
    foreign = make_job(other_company)
    with pytest.raises(CrossTenantJob):
        make_usage(company, job_id=str(foreign.pk))
    assert not QuestionGenerationUsage.objects.exists()


def test_replay_returns_the_first_row_and_conflict_is_refused(company, price):
    event = make_event(company, idempotency_key="same")
    first = record_usage(event, company=company)
    again = record_usage(event, company=company)
    assert again.usage.pk == first.usage.pk and not again.created
    assert LedgerEntry.objects.filter(kind="usage").count() == 1
    with pytest.raises(IdempotencyConflict):
        record_usage(make_event(company, idempotency_key="same", prompt_tokens=9), company=company)


def test_unknown_model_is_recorded_unpriced_not_zero(company):
    usage = make_usage(company, model="brand-new-model").usage
    assert usage.cost is None and usage.cost_source == "unpriced"
    assert not LedgerEntry.objects.filter(kind="usage").exists()


def test_price_in_effect_at_occurred_at_is_used(company):
    boundary = timezone.now() - timedelta(days=10)
    make_price(
        "m", output="10", effective_from=boundary - timedelta(days=100), effective_to=boundary
    )
    make_price("m", output="20", effective_from=boundary)
    kwargs = dict(model="m", prompt_tokens=0, completion_tokens=1_000_000)
    before = make_usage(company, occurred_at=boundary - timedelta(microseconds=1), **kwargs).usage
    at = make_usage(company, occurred_at=boundary, **kwargs).usage
    assert (before.cost, at.cost) == (Decimal("10"), Decimal("20"))


def test_rollup_equals_raw_rows(company, price):
    for _ in range(5):
        make_usage(company, draft_job_id="tmp-r")
    make_job(company, draft_job_id="tmp-r")
    make_usage(company, model="unpriced-model")
    raw = QuestionGenerationUsage.objects.values("status").annotate(
        c=Sum("cost"), q=Sum("question_count")
    )
    rolled = UsageDailyRollup.objects.values("status").annotate(c=Sum("cost"), q=Sum("questions"))

    def norm(rows):
        return {(r["status"], r["c"] or Decimal(0), r["q"]) for r in rows}

    assert norm(raw) == norm(rolled)


def test_the_same_instant_in_another_offset_is_a_replay_not_a_conflict(company, price):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    paris = datetime(2026, 11, 2, 13, 0, tzinfo=ZoneInfo("Europe/Paris"))
    utc = datetime(2026, 11, 2, 12, 0, tzinfo=ZoneInfo("UTC"))
    first = record_usage(
        make_event(company, idempotency_key="k", draft_job_id="d", occurred_at=paris),
        company=company,
    )
    again = record_usage(
        make_event(company, idempotency_key="k", draft_job_id="d", occurred_at=utc), company=company
    )
    assert again.usage.pk == first.usage.pk and not again.created

"""The daily rollup stays exactly equal to the raw rows through every kind of change:
recording, linking on save, re-pricing after a price correction, abandoning
stale drafts in the nightly reconciliation, and linking an abandoned draft."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from billing.prices import set_model_price
from tests.conftest import make_company, make_job, make_price, make_usage
from tests.usage.rollup_check import assert_rollup_matches_raw
from usage.jobs import link_drafts
from usage.models import QuestionGenerationUsage
from usage.pricing import reprice_usage
from usage.reconcile import reconcile_drafts

pytestmark = pytest.mark.django_db
DAY = timedelta(days=1)


def test_rollup_equals_raw_through_record_link_reprice_and_abandon():
    company = make_company(timezone="America/New_York")
    make_price("m1", input="2.5", output="10")
    make_price("m2", input="0.15", output="0.6")
    base = datetime(2026, 3, 7, 12, 0, tzinfo=ZoneInfo("UTC"))
    for i in range(12):  # across the DST change of 2026-03-08 in New York
        at = base + timedelta(hours=7 * i)
        make_usage(company, model="m1" if i % 3 else "m2", occurred_at=at, draft_job_id=f"d{i % 4}")
    make_usage(company, model="unpriced-model", occurred_at=base, draft_job_id="d0")
    assert_rollup_matches_raw(company)

    job = make_job(company, draft_job_id="d1")  # save_job links d1's drafts
    assert QuestionGenerationUsage.objects.filter(job=job).count() == 3
    assert_rollup_matches_raw(company)

    late = make_job(company, title="late")
    make_usage(company, job_id=str(late.pk), model="m1", occurred_at=base)
    assert_rollup_matches_raw(company)

    # A price correction from just before these generations, then re-pricing.
    set_model_price(
        model="m1", input_per_million="3", output_per_million="12", effective_from=base - DAY
    )
    report = reprice_usage(model="m1", reprice_priced=True, apply=True)
    assert report.companies[0].repriced > 0
    assert_rollup_matches_raw(company)

    reconcile_drafts(company=company, abandon_after_days=30)  # they are months old
    assert QuestionGenerationUsage.objects.filter(status="abandoned").exists()
    assert_rollup_matches_raw(company)

    # A draft saved after it was abandoned still links (and leaves "abandoned").
    relinked = make_job(company, title="back", draft_job_id="d3")
    assert link_drafts(company=company, job=relinked) == 0  # save_job already linked them
    assert QuestionGenerationUsage.objects.filter(job=relinked).count() == 3
    assert_rollup_matches_raw(company)


def test_helper_catches_a_rollup_that_drifted():
    company = make_company()
    make_price("m1")
    make_usage(company, model="m1")
    QuestionGenerationUsage.objects.filter(company=company).update(question_count=99)
    with pytest.raises(AssertionError, match="rollup differs"):
        assert_rollup_matches_raw(company)

"""Draft reconciliation: the save path, the service behind the nightly cron, its guarantees."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.conftest import make_job, make_usage
from tests.usage.reconcile_helpers import usage_state
from tests.usage.rollup_check import assert_rollup_matches_raw
from usage.jobs import save_job
from usage.models import Job, QuestionGenerationUsage
from usage.reconcile import reconcile_drafts, reconcile_selected_drafts

pytestmark = pytest.mark.django_db


def lost_save(company, draft_id: str, **kwargs) -> Job:
    """A job saved without linking its drafts (the save call that got lost)."""
    return Job.objects.create(company=company, title="Saved elsewhere", draft_id=draft_id, **kwargs)


def statuses(**filters) -> list[str]:
    return sorted(
        QuestionGenerationUsage.objects.filter(**filters).values_list("status", flat=True)
    )


def build_mix(company, other_company):
    """Linked, pending, saved-but-unreconciled, stale, and a foreign job with the same draft id."""
    now = timezone.now()
    linked_job = make_job(company)
    make_usage(company, job_id=str(linked_job.pk))
    for _ in range(3):
        make_usage(company, draft_job_id="tmp-saved")
    make_usage(company, draft_job_id="tmp-open")
    make_usage(company, draft_job_id="tmp-stale", occurred_at=now - timedelta(days=45))
    make_usage(company, draft_job_id="tmp-stale", occurred_at=now - timedelta(days=31))
    by_own_id = Job(company=company, title="Saved by id")
    make_usage(company, job_id=str(by_own_id.pk))  # stored as a draft under the job's id
    by_own_id.save()
    make_usage(company, draft_job_id="tmp-foreign")
    lost_save(other_company, "tmp-foreign")  # same draft id, other company: never linked
    make_usage(other_company, draft_job_id="tmp-saved")  # other company's own pending draft
    saved = lost_save(company, "tmp-saved")
    return saved, by_own_id


def test_saving_a_job_links_pending_and_abandoned_drafts_in_the_rollup(company, price):
    make_usage(company, draft_job_id="tmp-1", occurred_at=timezone.now() - timedelta(days=60))
    reconcile_drafts(abandon_after_days=30)
    assert statuses(draft_job_id="tmp-1") == ["abandoned"]
    make_usage(company, draft_job_id="tmp-1")
    result = save_job(company=company, title="QA Lead", draft_job_id="tmp-1")
    assert result.linked_usage_rows == 2
    assert statuses(draft_job_id="tmp-1") == ["linked", "linked"]
    rows = QuestionGenerationUsage.objects.filter(draft_job_id="tmp-1")
    assert all(r.job_id == result.job.pk and r.reconciled_at for r in rows)
    assert_rollup_matches_raw()


def test_reconcile_links_a_realistic_mix_and_nothing_else(company, other_company, price):
    saved, by_own_id = build_mix(company, other_company)
    report = reconcile_drafts(batch_size=2)
    assert (report.reconciled_rows, report.reconciled_drafts) == (4, 2)
    assert report.reconciled_cost == Decimal("0.0075") * 4
    assert (report.abandoned_rows, report.abandoned_drafts) == (2, 1)
    # still pending: tmp-open, tmp-stale (abandoned), tmp-foreign, the other company's tmp-saved
    assert (report.pending_rows, report.pending_drafts) == (5, 4)
    assert statuses(job=saved) == ["linked"] * 3
    assert statuses(job=by_own_id) == ["linked"]
    assert statuses(draft_job_id="tmp-stale") == ["abandoned", "abandoned"]
    assert statuses(draft_job_id="tmp-open") == ["draft"]
    assert statuses(company=company, draft_job_id="tmp-foreign") == ["draft"]
    assert statuses(company=other_company, draft_job_id="tmp-saved") == ["draft"]
    assert_rollup_matches_raw()


def test_second_run_changes_nothing(company, other_company, price):
    build_mix(company, other_company)
    reconcile_drafts(batch_size=3)
    before = usage_state()
    again = reconcile_drafts(batch_size=3)
    assert (again.reconciled_rows, again.abandoned_rows) == (0, 0)
    assert (again.pending_rows, again.pending_drafts) == (5, 4)
    assert usage_state() == before
    assert_rollup_matches_raw()


def test_dry_run_reports_the_same_counts_and_changes_nothing(company, other_company, price):
    build_mix(company, other_company)
    before = usage_state()
    dry = reconcile_drafts(batch_size=2, dry_run=True)
    assert usage_state() == before
    assert_rollup_matches_raw()
    real = reconcile_drafts(batch_size=2)
    keys = ["reconciled_rows", "reconciled_drafts", "reconciled_cost", "abandoned_rows"]
    keys += ["abandoned_drafts", "abandoned_cost", "pending_rows", "pending_drafts"]
    assert dry.dry_run and not real.dry_run
    assert {k: getattr(dry, k) for k in keys} == {k: getattr(real, k) for k in keys}


def test_company_scope_touches_only_that_company(company, other_company, price):
    make_usage(company, draft_job_id="d")
    make_usage(other_company, draft_job_id="d")
    lost_save(company, "d")
    lost_save(other_company, "d")
    report = reconcile_drafts(company=other_company)
    assert report.reconciled_rows == 1
    assert statuses(company=company) == ["draft"]
    assert statuses(company=other_company) == ["linked"]


def test_abandoned_draft_is_still_billed_and_links_when_its_job_appears(company, price):
    make_usage(company, draft_job_id="late", occurred_at=timezone.now() - timedelta(days=40))
    reconcile_drafts(abandon_after_days=30)
    usage = QuestionGenerationUsage.objects.get(draft_job_id="late")
    assert usage.status == "abandoned" and usage.abandoned_at and usage.cost > 0
    job = lost_save(company, "late")
    report = reconcile_drafts(abandon_after_days=30)
    usage.refresh_from_db()
    assert report.reconciled_rows == 1 and usage.job == job and usage.status == "linked"
    assert usage.abandoned_at is not None  # the history stays
    assert_rollup_matches_raw()


def test_a_draft_with_recent_usage_is_not_abandoned(company, price):
    make_usage(company, draft_job_id="busy", occurred_at=timezone.now() - timedelta(days=40))
    make_usage(company, draft_job_id="busy", occurred_at=timezone.now() - timedelta(days=2))
    report = reconcile_drafts(abandon_after_days=30)
    assert report.abandoned_rows == 0
    assert statuses(draft_job_id="busy") == ["draft", "draft"]


def test_a_job_saved_twice_links_its_usage_once(company, price):
    for _ in range(2):
        make_usage(company, draft_job_id="twice")
    first = save_job(company=company, title="T", draft_job_id="twice")
    again = save_job(company=company, title="T", job_id=first.job.pk, draft_job_id="twice")
    assert (first.created, first.linked_usage_rows) == (True, 2)
    assert (again.created, again.linked_usage_rows) == (False, 0)
    assert reconcile_drafts().reconciled_rows == 0
    assert_rollup_matches_raw()


def test_usage_arriving_after_the_save_links_directly(company, price):
    job = make_job(company, draft_job_id="raced")
    usage = make_usage(company, draft_job_id="raced").usage
    assert usage.job == job and usage.status == "linked"
    assert reconcile_drafts().reconciled_rows == 0
    assert_rollup_matches_raw()


def test_selected_drafts_are_reconciled_whole(company, price):
    rows = [make_usage(company, draft_job_id="sel").usage for _ in range(3)]
    make_usage(company, draft_job_id="other")
    lost_save(company, "sel")
    lost_save(company, "other")
    report = reconcile_selected_drafts(usage_ids=[rows[0].pk])
    assert (report.reconciled_rows, report.reconciled_drafts) == (3, 1)
    assert statuses(draft_job_id="sel") == ["linked"] * 3
    assert statuses(draft_job_id="other") == ["draft"]
    assert_rollup_matches_raw()


def test_a_failure_half_way_leaves_whole_batches_and_the_next_run_finishes(company, price):
    for n in range(6):
        make_usage(company, draft_job_id=f"f{n}")
        lost_save(company, f"f{n}")

    def crash_after_first_batch(report):
        raise RuntimeError("host died")

    with pytest.raises(RuntimeError):
        reconcile_drafts(batch_size=2, on_batch=crash_after_first_batch)
    assert statuses(status="linked") == ["linked"] * 2  # the first batch committed
    assert_rollup_matches_raw()
    assert reconcile_drafts(batch_size=2).reconciled_rows == 4
    assert_rollup_matches_raw()


def test_queries_do_not_grow_with_pending_rows(company, price):
    def queries_for(n: int, draft: str) -> int:
        QuestionGenerationUsage.objects.filter(job__isnull=True).delete()
        for i in range(n):
            make_usage(company, draft_job_id=f"{draft}-{i % 7}")
        for i in range(7):
            lost_save(company, f"{draft}-{i}")
        with CaptureQueriesContext(connection) as ctx:
            report = reconcile_drafts(batch_size=1000)
        assert report.reconciled_rows == n
        return len(ctx.captured_queries)

    assert queries_for(10, "small") == queries_for(500, "large")

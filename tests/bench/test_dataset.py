"""The benchmark dataset respects the schema and the money invariants.

The generator writes with set-based SQL below the services, so these tests
prove it produces what the services would: every check constraint holds (the
INSERTs would fail otherwise), the rollup equals the raw rows, each balance is
its ledger's sum and last running balance, priced rows reference the price in
effect, and the reconcile target can be restored exactly.
"""

from __future__ import annotations

import pytest
from django.db import connection

from bench import dataset
from bench.cleanup import delete_companies
from bench.scenarios.reconcile import restore_pending
from billing.models import Company, CreditBalance, LedgerEntry
from usage.jobs import link_drafts
from usage.models import Job, QuestionGenerationUsage, UsageStatus

pytestmark = pytest.mark.django_db

SPEC = dataset.Spec(rows=6_000, companies=8)


def test_a_tenth_of_all_rows_for_the_largest_of_a_thousand_companies():
    counts = dataset.company_row_counts(dataset.spec_for("full"))
    assert sum(counts) == 10_000_000 and len(counts) == 1_000
    assert abs(counts[0] - 1_000_000) < 1_000 and max(counts[1:]) < counts[0]


def scalar(sql: str, params=None):
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


ROLLUP_MISMATCHES = f"""
SELECT count(*) FROM ({dataset.ROLLUP_FROM_RAW}) raw (company_id, day, model, status, g, q, pt,
    cpt, ct, cost, unpriced)
FULL JOIN (SELECT * FROM usage_daily_rollup WHERE generations <> 0) r
  ON r.company_id = raw.company_id AND r.day = raw.day AND r.model = raw.model
 AND r.status = raw.status
WHERE (raw.g, raw.q, raw.pt, raw.cpt, raw.ct, raw.cost, raw.unpriced)
      IS DISTINCT FROM (r.generations, r.questions, r.prompt_tokens, r.cached_prompt_tokens,
                        r.completion_tokens, r.cost, r.unpriced)
"""


@pytest.fixture
def built():
    dataset.build(SPEC, log=lambda message: None)
    return dataset.marker()


def test_dataset_has_the_requested_size_and_skew(built):
    assert QuestionGenerationUsage.objects.count() == SPEC.rows
    assert Company.objects.count() == SPEC.companies
    largest = QuestionGenerationUsage.objects.filter(company_id=built["largest_company"]).count()
    assert abs(largest - SPEC.rows * dataset.largest_share(SPEC)) <= SPEC.companies
    others = scalar(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM question_generation_usage "
        "WHERE company_id <> %s GROUP BY company_id) t",
        [built["largest_company"]],
    )
    assert others < largest


def test_rollup_equals_raw_rows(built):
    assert scalar(ROLLUP_MISMATCHES) == 0


def test_balance_is_the_ledger_sum_and_last_running_balance(built):
    for balance in CreditBalance.objects.all():
        entries = LedgerEntry.objects.filter(company_id=balance.company_id).order_by("id")
        assert balance.balance == sum(e.amount for e in entries)
        assert entries.last().balance_after == balance.balance
        running = 0
        for entry in entries:
            running += entry.amount
            assert entry.balance_after == running


def test_one_debit_per_costed_usage_row_equal_to_its_cost(built):
    costed = QuestionGenerationUsage.objects.exclude(cost=None).count()
    assert LedgerEntry.objects.filter(kind="usage").count() == costed
    assert scalar(
        """SELECT count(*) FROM question_generation_usage u
             LEFT JOIN billing_ledgerentry l ON l.usage_id = u.id AND l.kind = 'usage'
            WHERE u.cost IS NOT NULL AND (l.id IS NULL OR l.amount <> -u.cost)"""
    ) == 0  # fmt: skip


def test_priced_rows_reference_the_price_in_effect_and_local_day(built):
    assert scalar(
        """SELECT count(*) FROM question_generation_usage u
             LEFT JOIN billing_modelprice p ON p.id = u.price_id
            WHERE u.cost_source = 'priced' AND NOT (p.model = u.model
              AND p.effective_from <= u.occurred_at
              AND (p.effective_to IS NULL OR u.occurred_at < p.effective_to)
              AND u.cost = ((u.prompt_tokens - u.cached_prompt_tokens) * p.input_per_million
                  + u.cached_prompt_tokens * p.cached_input_per_million
                  + u.completion_tokens * p.output_per_million) / 1000000)"""
    ) == 0  # fmt: skip
    assert scalar(
        """SELECT count(*) FROM question_generation_usage u JOIN billing_company c ON c.id = u.company_id
            WHERE u.occurred_on <> (u.occurred_at AT TIME ZONE c.timezone)::date"""
    ) == 0  # fmt: skip
    assert scalar("SELECT count(DISTINCT model) FROM billing_modelprice") == len(dataset.MODELS)
    assert scalar("SELECT count(*) FROM billing_modelprice") == 3 * len(dataset.MODELS)


def test_pending_drafts_belong_to_saved_jobs_and_abandoned_ones_do_not(built):
    pending = QuestionGenerationUsage.objects.filter(id__in=_pending_ids())
    assert 0.01 * SPEC.rows < pending.count() < 0.03 * SPEC.rows
    orphans = scalar(
        """SELECT count(*) FROM bench_pending p JOIN question_generation_usage u ON u.id = p.id
            WHERE NOT EXISTS (SELECT 1 FROM usage_job j WHERE j.company_id = u.company_id
                                 AND j.draft_id = u.draft_job_id)"""
    )
    assert orphans == 0
    abandoned = QuestionGenerationUsage.objects.filter(status=UsageStatus.ABANDONED)
    assert abandoned.exists()
    assert not Job.objects.filter(draft_id__in=abandoned.values("draft_job_id")).exists()


def test_restore_pending_undoes_a_reconcile_and_keeps_the_rollup_exact(built):
    usage = QuestionGenerationUsage.objects.filter(id__in=_pending_ids()).first()
    job = Job.objects.get(company_id=usage.company_id, draft_id=usage.draft_job_id)
    assert link_drafts(company=job.company, job=job) >= 1
    assert scalar(ROLLUP_MISMATCHES) == 0
    moved = restore_pending(vacuum=False)
    assert moved >= 1
    assert not QuestionGenerationUsage.objects.filter(id__in=_pending_ids()).exclude(
        status=UsageStatus.DRAFT, job=None
    )
    assert scalar(ROLLUP_MISMATCHES) == 0


def test_delete_companies_removes_a_harness_company_and_its_money(built):
    company = Company.objects.create(name="Bench import x", external_id="bench-import-x")
    from tests.conftest import give_credit, make_price, make_usage

    make_price()
    give_credit(company)
    make_usage(company)
    assert delete_companies("external_id = %s", ["bench-import-x"]) == 1
    assert not LedgerEntry.objects.filter(company_id=company.pk).exists()
    assert not QuestionGenerationUsage.objects.filter(company_id=company.pk).exists()
    assert Company.objects.count() == SPEC.companies
    # The append-only guard is back in force afterwards.
    with pytest.raises(Exception, match="append-only"):
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM billing_ledgerentry")


def test_delete_companies_removes_their_issued_statements_too(built):
    from datetime import timedelta

    from django.utils import timezone

    from billing.models import Statement, StatementLine
    from tests.conftest import give_credit
    from usage.statements import close_due_statements

    company = Company.objects.create(name="Bench import y", external_id="bench-import-y")
    give_credit(company)
    issued = close_due_statements(company=company, now=timezone.now() + timedelta(days=62))
    assert issued and StatementLine.objects.filter(statement__company=company).exists()
    assert delete_companies("external_id = %s", ["bench-import-y"]) == 1
    assert not Statement.objects.filter(company_id=company.pk).exists()
    assert not StatementLine.objects.filter(statement__company_id=company.pk).exists()
    with connection.cursor() as cursor:  # the guards are back afterwards
        cursor.execute(
            "SELECT tgname, tgenabled FROM pg_trigger WHERE tgname LIKE 'statement_%%sealed'"
        )
        assert dict(cursor.fetchall()) == {"statement_sealed": "O", "statement_line_sealed": "O"}


def _pending_ids():
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM bench_pending")
        return [row[0] for row in cursor.fetchall()]

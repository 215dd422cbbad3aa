"""Draft reconciliation: link pending draft usage to the jobs saved since, abandon old drafts.

Usage recorded while its job was a draft is stored with `job = NULL` under
the draft id (status `draft`, or `abandoned` once old). Saving the job links
it at once (usage.jobs.save_job); this module catches what that missed
(a lost or late save call) for `manage.py reconcile_drafts` and the admin.

Which saved job a pending draft `(company, draft_job_id)` belongs to is the
rule of usage.jobs (:func:`usage.jobs.saved_job_sql`). A draft with no job
whose newest pending usage is older than the cutoff is abandoned: still
billed, still linkable.

Each keyset batch of pending rows (sized to take BATCH_TARGET_SECONDS at the
pace just measured, at most `batch_size` rows), taken in
`(company_id, draft_job_id, id)` order from the partial index of pending
drafts, is ONE statement in its own short transaction: it plans the batch,
`UPDATE ... FROM`s the rows, moves their rollup buckets set-based
(usage.rollup.MOVE_STATUS) and returns the batch's counts. Nothing is pulled
into Python, memory stays flat, and a run that dies leaves every batch fully
applied or not at all; the next run finishes the job. A dry run executes the
same planning query and only counts.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from billing.models import Company
from billing.money import plain
from usage import rollup
from usage.jobs import saved_job_sql
from usage.models import QuestionGenerationUsage

USAGE = QuestionGenerationUsage._meta.db_table
# Batches are sized by time: a batch holds its row locks (and the rollup rows
# behind them) until it commits. The first batch has FIRST_BATCH_SIZE rows (at
# most `batch_size`); each next one aims at BATCH_TARGET_SECONDS at the pace
# just measured, at most doubling, between MIN_BATCH_SIZE and `batch_size` (the
# largest batch). The pace of one batch to the next varies several times over
# (cached or cold pages), so the target is a fifth of the 250 ms a batch may
# hold its locks (docs/performance.md has the runs that set it).
DEFAULT_BATCH_SIZE = 5000
FIRST_BATCH_SIZE = 500
BATCH_TARGET_SECONDS = 0.05
MIN_BATCH_SIZE = 50
LOCK_NAME = "usage.reconcile_drafts"


@dataclass
class ReconcileReport:
    """What a run changed (or, in a dry run, would change)."""

    reconciled_rows: int = 0
    reconciled_drafts: int = 0
    reconciled_cost: Decimal = Decimal(0)
    abandoned_rows: int = 0
    abandoned_drafts: int = 0
    abandoned_cost: Decimal = Decimal(0)
    pending_rows: int = 0
    pending_drafts: int = 0
    pending_cost: Decimal = Decimal(0)
    scanned_rows: int = 0
    batches: int = 0
    max_batch_seconds: float = 0.0
    duration_seconds: float = 0.0
    dry_run: bool = False
    skipped: bool = False

    def as_json(self) -> dict:
        """JSON-ready: amounts as exact decimal strings."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, Decimal):
                data[key] = plain(value)
        data["duration_seconds"] = round(self.duration_seconds, 3)
        data["max_batch_seconds"] = round(self.max_batch_seconds, 3)
        return data

    def add_batch(self, batch: ReconcileReport) -> None:
        for name in (
            "reconciled_rows",
            "reconciled_drafts",
            "reconciled_cost",
            "abandoned_rows",
            "abandoned_drafts",
            "abandoned_cost",
            "pending_rows",
            "pending_drafts",
            "pending_cost",
            "scanned_rows",
        ):
            setattr(self, name, getattr(self, name) + getattr(batch, name))
        self.batches += 1
        self.max_batch_seconds = max(self.max_batch_seconds, batch.duration_seconds)


# --- The batch statement ------------------------------------------------------------

_BATCH = f"""
SELECT u.id, u.company_id, u.draft_job_id, u.status, u.occurred_on, u.model,
       u.question_count, u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens, u.cost
  FROM {USAGE} u
 WHERE u.job_id IS NULL {{scope}} {{after}}
 ORDER BY u.company_id, u.draft_job_id, u.id
 LIMIT %(limit)s {{lock}}
"""
# Rows a concurrent save (or re-pricing) holds are left to it, or to the next
# run: the batch never waits on them, so it cannot deadlock with the save path.
_LOCK = "FOR UPDATE OF u SKIP LOCKED"
_AFTER = (
    "AND (u.company_id, u.draft_job_id, u.id) > (%(after_company)s, %(after_draft)s, %(after_id)s)"
)
_SCOPES = {
    "all": "",
    "company": "AND u.company_id = %(company)s",
    "drafts_of": f"""AND (u.company_id, u.draft_job_id) IN (
        SELECT s.company_id, s.draft_job_id FROM {USAGE} s
         WHERE s.id = ANY(%(ids)s) AND s.job_id IS NULL)""",
}
# A draft is stale when none of its pending usage is newer than the cutoff.
_STALE = f"""NOT EXISTS (
    SELECT 1 FROM {USAGE} f
     WHERE f.company_id = d.company_id AND f.draft_job_id = d.draft_job_id
       AND f.job_id IS NULL AND f.occurred_at >= %(cutoff)s)"""

_PLAN = f"""
WITH batch AS ({{batch}}),
drafts AS (SELECT DISTINCT company_id, draft_job_id FROM batch),
matched AS MATERIALIZED (  -- once per draft, not per row
    SELECT d.company_id, d.draft_job_id,
           {saved_job_sql("d.company_id", "d.draft_job_id")} AS job_id
      FROM drafts d
),
judged AS MATERIALIZED (  -- staleness only matters for drafts without a job
    SELECT d.*, CASE WHEN d.job_id IS NULL THEN {{stale}} ELSE false END AS stale
      FROM matched d
),
plan AS (
    SELECT b.*, m.job_id AS new_job_id,
           CASE WHEN m.job_id IS NOT NULL THEN 'linked'
                WHEN m.stale AND b.status = 'draft' THEN 'abandoned' END AS new_status
      FROM batch b JOIN judged m USING (company_id, draft_job_id)
),
"""

# Apply: move the rows, re-checking under the row lock that each is still the
# pending row that was planned (a concurrent save may have linked it first), and
# take the rollup figures from the row as updated, so a concurrent re-pricing
# that committed first is accounted for in the right bucket.
_MOVE = f"""
moved AS (
    UPDATE {USAGE} u
       SET job_id = p.new_job_id,
           status = p.new_status,
           reconciled_at = CASE WHEN p.new_job_id IS NULL THEN u.reconciled_at
                                ELSE %(now)s END,
           abandoned_at = CASE WHEN p.new_job_id IS NULL THEN %(now)s
                               ELSE u.abandoned_at END
      FROM plan p
     WHERE u.id = p.id AND p.new_status IS NOT NULL
       AND u.job_id IS NULL AND u.status = p.status
 RETURNING u.company_id, u.draft_job_id, u.occurred_on, u.model, p.status AS old_status,
           u.status AS new_status, u.question_count, u.prompt_tokens,
           u.cached_prompt_tokens, u.completion_tokens, u.cost
),
{rollup.MOVE_STATUS},
"""
# Dry run: the same plan, only counted.
_COUNT_ONLY = """
moved AS (
    SELECT company_id, draft_job_id, status AS old_status, new_status, cost
      FROM plan WHERE new_status IS NOT NULL
),
upserted AS (SELECT 1 WHERE false),
"""
# A draft cut by the previous batch's boundary was counted there already.
_NOT_PREVIOUS = (
    "(company_id, draft_job_id) IS DISTINCT FROM (%(after_company)s::uuid, %(after_draft)s::text)"
)
_SUMMARY = f"""
last AS (
    SELECT company_id, draft_job_id, id FROM batch
     ORDER BY company_id DESC, draft_job_id DESC, id DESC LIMIT 1
)
SELECT l.company_id, l.draft_job_id, l.id, (SELECT count(*) FROM batch),
       m.linked_rows, m.linked_drafts, m.linked_cost,
       m.abandoned_rows, m.abandoned_drafts, m.abandoned_cost,
       p.pending_rows, p.pending_drafts, p.pending_cost,
       (SELECT count(*) FROM upserted)
  FROM (SELECT count(*) FILTER (WHERE new_status = 'linked') AS linked_rows,
               count(DISTINCT (company_id, draft_job_id))
                   FILTER (WHERE new_status = 'linked' AND {_NOT_PREVIOUS}) AS linked_drafts,
               COALESCE(sum(cost) FILTER (WHERE new_status = 'linked'), 0) AS linked_cost,
               count(*) FILTER (WHERE new_status = 'abandoned') AS abandoned_rows,
               count(DISTINCT (company_id, draft_job_id))
                   FILTER (WHERE new_status = 'abandoned' AND {_NOT_PREVIOUS})
                   AS abandoned_drafts,
               COALESCE(sum(cost) FILTER (WHERE new_status = 'abandoned'), 0) AS abandoned_cost
          FROM moved) m
 CROSS JOIN (
        SELECT count(*) AS pending_rows,
               count(DISTINCT (company_id, draft_job_id))
                   FILTER (WHERE {_NOT_PREVIOUS}) AS pending_drafts,
               COALESCE(sum(cost), 0) AS pending_cost
          FROM plan WHERE new_job_id IS NULL) p
  LEFT JOIN last l ON true
"""


def batch_sql(*, scope: str, first: bool, abandon: bool, dry_run: bool) -> str:
    """The one statement that processes (or, dry, counts) one keyset batch."""
    lock = "" if dry_run else _LOCK
    batch = _BATCH.format(scope=_SCOPES[scope], after="" if first else _AFTER, lock=lock)
    plan = _PLAN.format(batch=batch, stale=_STALE if abandon else "false")
    return plan + (_COUNT_ONLY if dry_run else _MOVE) + _SUMMARY


def _run_batch(sql: str, params: dict) -> tuple[tuple | None, ReconcileReport]:
    started = time.monotonic()
    with transaction.atomic(), connection.cursor() as cursor:
        # A batch lost in a crash before its WAL reached disk is simply redone
        # by the next run, so a batch need not wait for the flush at commit.
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute(sql, params)
        row = cursor.fetchone()
    batch = ReconcileReport(
        scanned_rows=row[3],
        reconciled_rows=row[4],
        reconciled_drafts=row[5],
        reconciled_cost=row[6],
        abandoned_rows=row[7],
        abandoned_drafts=row[8],
        abandoned_cost=row[9],
        pending_rows=row[10],
        pending_drafts=row[11],
        pending_cost=row[12],
        duration_seconds=time.monotonic() - started,
    )
    last_key = row[:3] if row[0] is not None else None
    return last_key, batch


def _reconcile_batches(
    report: ReconcileReport,
    *,
    scope: str,
    scope_params: dict,
    batch_size: int,
    cutoff: datetime | None,
    now: datetime,
    on_batch: Callable[[ReconcileReport], None] | None,
) -> None:
    params = {
        **scope_params,
        "limit": min(batch_size, FIRST_BATCH_SIZE),
        "cutoff": cutoff,
        "now": now,
        "after_company": None,
        "after_draft": None,
        "after_id": None,
    }
    first = True
    while True:
        sql = batch_sql(
            scope=scope, first=first, abandon=cutoff is not None, dry_run=report.dry_run
        )
        last_key, batch = _run_batch(sql, params)
        if last_key is None:  # nothing left after the previous key
            return
        report.add_batch(batch)
        if on_batch is not None:
            on_batch(report)
        params["after_company"], params["after_draft"], params["after_id"] = last_key
        params["limit"] = next_batch_size(params["limit"], batch.duration_seconds, batch_size)
        first = False


def next_batch_size(size: int, seconds: float, largest: int) -> int:
    """The size that should take BATCH_TARGET_SECONDS at the last batch's pace."""
    paced = int(size * BATCH_TARGET_SECONDS / seconds) if seconds > 0 else size * 2
    # At most double per step, so one lucky fast batch cannot overshoot.
    return max(min(MIN_BATCH_SIZE, largest), min(paced, size * 2, largest))


# --- The services -------------------------------------------------------------------


def reconcile_drafts(
    *,
    company: Company | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    abandon_after_days: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    on_batch: Callable[[ReconcileReport], None] | None = None,
) -> ReconcileReport:
    """Link every pending draft whose job has been saved; abandon stale ones.

    Not one transaction: each batch is its own (see the module docstring).
    `abandon_after_days` defaults to settings.DRAFT_ABANDON_AFTER_DAYS.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    days = settings.DRAFT_ABANDON_AFTER_DAYS if abandon_after_days is None else abandon_after_days
    if days < 0:
        raise ValueError("abandon_after_days must not be negative")
    now = now or timezone.now()
    cutoff = now - timedelta(days=days)
    scope, scope_params = ("company", {"company": company.pk}) if company else ("all", {})
    return _run(
        dry_run=dry_run,
        scope=scope,
        scope_params=scope_params,
        batch_size=batch_size,
        cutoff=cutoff,
        now=now,
        on_batch=on_batch,
    )


def reconcile_selected_drafts(
    *,
    usage_ids: Iterable[uuid.UUID],
    batch_size: int = DEFAULT_BATCH_SIZE,
    now: datetime | None = None,
) -> ReconcileReport:
    """Link the drafts of the selected usage rows (all their pending rows) to their saved jobs.

    The admin action. Never abandons: a person asked for these to be linked.
    """
    ids = list(usage_ids)
    return _run(
        dry_run=False,
        scope="drafts_of",
        scope_params={"ids": ids},
        batch_size=batch_size,
        cutoff=None,
        now=now or timezone.now(),
        on_batch=None,
    )


def _run(
    *,
    dry_run: bool,
    scope: str,
    scope_params: dict,
    batch_size: int,
    cutoff: datetime | None,
    now: datetime,
    on_batch: Callable[[ReconcileReport], None] | None,
) -> ReconcileReport:
    started = time.monotonic()
    report = ReconcileReport(dry_run=dry_run)
    _reconcile_batches(
        report,
        scope=scope,
        scope_params=scope_params,
        batch_size=batch_size,
        cutoff=cutoff,
        now=now,
        on_batch=on_batch,
    )
    report.duration_seconds = time.monotonic() - started
    return report

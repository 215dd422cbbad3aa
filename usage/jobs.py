"""Saved jobs, and which saved job the usage of a draft belongs to.

The main product generates questions while a job is still a draft, under a
temporary id. Such usage is kept with `job = NULL` under a *draft key*, and
belongs to a saved job as soon as one exists. The rule, written once in Python
(:meth:`JobIndex.for_draft`) and once in SQL (:func:`saved_job_sql`), and tested
against the same cases:

    A draft key of company C belongs to the saved job of C whose own id, as
    canonical UUID text, is the key; failing that, to the job of C whose
    `draft_id` is the key; failing that, to none.

An event names its job with `job_id` (a saved job's id, or the id a job will
have once saved) and/or `draft_job_id`. A `job_id` that is a saved job's id,
in any spelling of the UUID, is that job, and one of another company is
refused (CrossTenantJob). Otherwise the event belongs to the job its draft keys
belong to (:func:`event_draft_keys`); without one, its usage is kept under
:func:`draft_key_of`, where saving the job (:func:`save_job`, which links in
its own transaction) or the nightly reconciliation finds it.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.models import Company
from core.errors import IdempotencyConflict, InvalidInput
from core.sql import json_rows, recordset
from usage import rollup
from usage.errors import CrossTenantJob
from usage.models import Job, QuestionGenerationUsage

JOB = Job._meta.db_table
USAGE = QuestionGenerationUsage._meta.db_table


def as_uuid(value: object) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _own_id(key: str) -> uuid.UUID | None:
    """The job id a draft key spells, if it is a UUID in canonical text (as `id::text`)."""
    job_id = as_uuid(key)
    return job_id if job_id is not None and str(job_id) == key else None


def saved_job_sql(company: str, key: str) -> str:
    """SQL for the id of the saved job that the draft key `key` of company `company`
    belongs to, or NULL: the rule of this module. Both arguments are SQL expressions.

    The key is a job's own id when it has the shape of canonical UUID text
    (every hex digit mapped to 0 leaves 8-4-4-4-12 zeros), which makes the cast
    safe; the id look-up is then on the primary key, never a cast of every id.
    """
    return f"""COALESCE(
        (SELECT j.id FROM {JOB} j
          WHERE j.company_id = {company}
            AND j.id = CASE WHEN translate({key}, '0123456789abcdef', '0000000000000000')
                                 = '00000000-0000-0000-0000-000000000000'
                            THEN ({key})::uuid END),
        (SELECT j.id FROM {JOB} j WHERE j.company_id = {company} AND j.draft_id = {key}))"""


def draft_key_of(job_id: str | None, draft_job_id: str | None) -> str | None:
    """The draft key an event's usage is kept under while it has no saved job: its
    draft id, else its job id (a UUID in canonical text, so the job finds it once saved)."""
    if draft_job_id:
        return draft_job_id
    job_uuid = as_uuid(job_id)
    return str(job_uuid) if job_uuid is not None else job_id


def event_draft_keys(job_id: str | None, draft_job_id: str | None) -> list[str]:
    """Every draft key an event may belong to a job by, in the order they are tried."""
    keys = [draft_job_id, job_id, draft_key_of(job_id, None)]
    return list(dict.fromkeys(k for k in keys if k))


class JobIndex:
    """Saved jobs by id and by (company, draft id): how events find their job."""

    def __init__(self, jobs: list[Job]) -> None:
        self.by_id = {job.pk: job for job in jobs}
        self.by_draft = {(job.company_id, job.draft_id): job for job in jobs if job.draft_id}

    def for_draft(self, company_id: uuid.UUID, key: str) -> Job | None:
        """The saved job the draft key `key` of this company belongs to (the rule)."""
        job = self.by_id.get(_own_id(key))
        if job is not None and job.company_id == company_id:
            return job
        return self.by_draft.get((company_id, key))

    def job_for(self, company: Company, *, job_id: str | None, draft_job_id: str | None):
        """The saved job of an event, decided by existence, never by the id's shape.

        A saved job id wins over draft keys; a job id of another company raises
        CrossTenantJob (usage is never linked across tenants).
        """
        job = self.by_id.get(as_uuid(job_id))
        if job is not None:
            if job.company_id != company.pk:
                raise CrossTenantJob(
                    f"Job {job_id} belongs to another company; usage is never linked across companies.",
                    fields={"job_id": "belongs to another company"},
                )
            return job
        for key in event_draft_keys(job_id, draft_job_id):
            job = self.for_draft(company.pk, key)
            if job is not None:
                return job
        return None


_CANDIDATES_SQL = f"""
SELECT j.id, j.company_id, j.draft_id FROM {JOB} j WHERE j.id = ANY(%s::uuid[])
UNION
SELECT j.id, j.company_id, j.draft_id
  FROM {recordset("%s", [("company_id", "uuid"), ("draft_id", "text")])}
  JOIN {JOB} j ON j.company_id = rows.company_id AND j.draft_id = rows.draft_id
"""
_CANDIDATE_FIELDS = ["id", "company_id", "draft_id"]


def job_index(events: list[tuple[uuid.UUID, str | None, str | None]]) -> JobIndex:
    """The saved jobs any of these (company id, job_id, draft_job_id) events may belong
    to, in one query: by job id, and by exact (company, draft id) pair.

    The pairs are joined to the unique (company, draft id) index. An
    `id IN (...) OR (company_id IN (...) AND draft_id IN (...))` filter made
    the planner scan and sort every job.
    """
    ids, drafts = set(), set()
    for company_id, job_id, draft_job_id in events:
        ids.add(as_uuid(job_id))
        for key in event_draft_keys(job_id, draft_job_id):
            ids.add(_own_id(key))
            drafts.add((company_id, key))
    ids.discard(None)
    params = [list(ids), json_rows(sorted(drafts, key=str))]
    with connection.cursor() as cursor:
        cursor.execute(_CANDIDATES_SQL, params)
        rows = cursor.fetchall()
    return JobIndex([Job.from_db(connection.alias, _CANDIDATE_FIELDS, row) for row in rows])


def lock_drafts(drafts: list[tuple[uuid.UUID, str]]) -> None:
    """Serialise recording usage under these (company, draft key)s with saving their job.

    Without it a usage that looked its job up just before the job was saved, and
    committed just after the save linked the drafts, stayed a draft although its
    job existed. Taken only for usage about to be kept as a draft (usage whose
    job is saved is linked to it and races nothing), followed by a second look-up
    of the job. Transaction-scoped advisory locks, taken in one sorted order
    before any row lock, so they add no deadlock.
    """
    if not drafts:
        return
    keys = sorted({_draft_lock_key(company_id, draft) for company_id, draft in drafts})
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", [keys])


def _draft_lock_key(company_id: uuid.UUID, draft: str) -> int:
    digest = hashlib.sha256(f"draft:{company_id}:{draft}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# --- Saving jobs ---------------------------------------------------------------------


@dataclass(frozen=True)
class SaveJobResult:
    job: Job
    created: bool
    linked_usage_rows: int


def save_job(
    *,
    company: Company,
    title: str,
    job_id: uuid.UUID | str | None = None,
    draft_job_id: str | None = None,
    now: datetime | None = None,
) -> SaveJobResult:
    """Create (or find) a saved job and link its draft usage in the same transaction.

    Idempotent on the job id. Links draft usage of this company only, kept
    under the draft id or under the job's own id (usage sent with a
    not-yet-saved job_id is kept under that id).
    """
    now = now or timezone.now()
    job_uuid = as_uuid(job_id) if job_id else uuid.uuid4()
    if job_id and job_uuid is None:
        raise InvalidInput("job_id must be a UUID.", fields={"job_id": "must be a UUID"})
    with transaction.atomic():
        lock_drafts([(company.pk, d) for d in (str(job_uuid), draft_job_id) if d])
        job, created = _get_or_create_job(company, job_uuid, title, draft_job_id)
        linked = link_drafts(company=company, job=job, now=now)
    return SaveJobResult(job=job, created=created, linked_usage_rows=linked)


def _get_or_create_job(
    company: Company, job_uuid: uuid.UUID, title: str, draft_job_id: str | None
) -> tuple[Job, bool]:
    existing = Job.objects.filter(pk=job_uuid).first()
    if existing is not None:
        if existing.company_id != company.pk:
            raise CrossTenantJob(
                f"Job {job_uuid} belongs to another company.",
                fields={"job_id": "belongs to another company"},
            )
        if draft_job_id and existing.draft_id not in (None, draft_job_id):
            raise IdempotencyConflict(
                f"Job {job_uuid} was saved with draft id {existing.draft_id!r}.",
                fields={"draft_job_id": "differs from the one the job was saved with"},
            )
        if draft_job_id and existing.draft_id is None:
            _refuse_saved_draft(company, draft_job_id)
            existing.draft_id = draft_job_id
            existing.save(update_fields=["draft_id", "updated_at"])
        return existing, False
    _refuse_saved_draft(company, draft_job_id)
    try:
        with transaction.atomic():
            job = Job.objects.create(
                id=job_uuid, company=company, title=title, draft_id=draft_job_id or None
            )
    except IntegrityError:
        job = Job.objects.filter(pk=job_uuid, company=company).first()
        if job is None:
            _refuse_saved_draft(company, draft_job_id)  # a concurrent save took the draft id
            raise
        return job, False
    return job, True


def _refuse_saved_draft(company: Company, draft_job_id: str | None) -> None:
    """IdempotencyConflict if another job of the company was saved with this draft id
    (the unique draft id per company would otherwise surface as a 500)."""
    by_draft = draft_job_id and Job.objects.filter(company=company, draft_id=draft_job_id).first()
    if by_draft:
        raise IdempotencyConflict(
            f"Draft {draft_job_id!r} was already saved as job {by_draft.pk}.",
            fields={"draft_job_id": f"already saved as job {by_draft.pk}"},
        )


# The job's candidate keys (its own id and its draft id) are kept only where the
# rule gives this job; the pending rows under them are locked, linked, and their
# rollup buckets moved (usage.rollup.MOVE_STATUS), in one statement.
_LINK = f"""
WITH keys AS (
    SELECT k FROM unnest(%(keys)s::text[]) AS k
     WHERE {saved_job_sql("%(company)s::uuid", "k")} = %(job)s
),
old AS (
    SELECT u.id, u.status FROM {USAGE} u
     WHERE u.company_id = %(company)s AND u.job_id IS NULL
       AND u.draft_job_id IN (SELECT k FROM keys)
       FOR UPDATE
),
moved AS (
    UPDATE {USAGE} u
       SET job_id = %(job)s, status = 'linked', reconciled_at = %(now)s
      FROM old WHERE u.id = old.id AND u.job_id IS NULL
 RETURNING u.company_id, u.occurred_on, u.model, old.status AS old_status,
           u.status AS new_status, u.question_count, u.prompt_tokens,
           u.cached_prompt_tokens, u.completion_tokens, u.cost
),
{rollup.MOVE_STATUS}
SELECT count(*) FROM moved
"""


def link_drafts(*, company: Company, job: Job, now: datetime | None = None) -> int:
    """Link this company's pending (or abandoned) draft usage that belongs to `job`.

    Returns the number of rows linked; their rollup buckets move to `linked`
    in the same statement.
    """
    keys = [str(job.pk)] + ([job.draft_id] if job.draft_id else [])
    params = {"keys": keys, "company": company.pk, "job": job.pk, "now": now or timezone.now()}
    with connection.cursor() as cursor:
        cursor.execute(_LINK, params)
        return cursor.fetchone()[0]

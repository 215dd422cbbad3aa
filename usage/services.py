"""Recording question generations and saving jobs: every path goes through here.

The API, the batch endpoint, the importer, the admin and the demo all call
:func:`record_usage`; saving a job (API, admin, service) calls :func:`save_job`.
Each is one transaction: the usage row, its rollup bucket and its debit commit
together or not at all.
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from billing.alerts import evaluate_alerts
from billing.dbutil import (
    from_row,
    insert_rows,
    is_postgres,
    json_rows,
    param,
    recordset,
    recordset_insert,
    select_list,
)
from billing.ids import uuid7
from billing.models import Company, CreditBalance, LedgerEntry, ModelPrice
from billing.money import AmountError, price_cost, quantize_amount
from billing.services import (
    BillingError,
    IdempotencyConflict,
    company_not_found,
    current_balance,
    post_usage_debits,
    post_usage_debits_many,
    resolve_companies,
    resolve_company,
)
from usage import rollup
from usage.models import (
    INT32_MAX,
    CostSource,
    Job,
    QuestionGenerationUsage,
    UsageStatus,
)
from usage.selectors import month_to_date_spend, month_to_date_spend_by_company


class UsageValidationError(BillingError):
    code = "validation_error"


class CrossTenantJob(BillingError):
    code = "job_of_another_company"


@dataclass(frozen=True)
class UsageEvent:
    """One generation as a caller describes it (already parsed, not yet checked)."""

    company: str
    idempotency_key: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0
    question_count: int = 0
    job_id: str | None = None
    draft_job_id: str | None = None
    cost: Decimal | str | None = None
    occurred_at: datetime | None = None
    metadata: dict = field(default_factory=dict)
    processing_time_ms: int | None = None


@dataclass(frozen=True)
class RecordResult:
    usage: QuestionGenerationUsage
    created: bool
    balance: Decimal


# --- Validation ----------------------------------------------------------------

EARLIEST_OCCURRED_AT = datetime(1970, 1, 1, tzinfo=UTC)


def _check_count(name: str, value: object, errors: dict[str, str]) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        errors[name] = "must be a whole number"
    elif value < 0:
        errors[name] = "must not be negative"
    elif value > INT32_MAX:
        errors[name] = f"must be at most {INT32_MAX}"


def validate_event(event: UsageEvent, *, now: datetime) -> Decimal | None:
    """Raise UsageValidationError naming every bad field; return the reported cost."""
    errors: dict[str, str] = {}
    for name in ("prompt_tokens", "cached_prompt_tokens", "completion_tokens", "question_count"):
        _check_count(name, getattr(event, name), errors)
    if event.processing_time_ms is not None:
        _check_count("processing_time_ms", event.processing_time_ms, errors)
    if "cached_prompt_tokens" not in errors and "prompt_tokens" not in errors:
        if event.cached_prompt_tokens > event.prompt_tokens:
            errors["cached_prompt_tokens"] = "must not exceed prompt_tokens"
    if not (event.idempotency_key or "").strip():
        errors["idempotency_key"] = "is required"
    elif len(event.idempotency_key) > 255:
        errors["idempotency_key"] = "must be at most 255 characters"
    if not (event.model or "").strip():
        errors["model"] = "is required"
    elif len(event.model) > 100:
        errors["model"] = "must be at most 100 characters"
    if not event.job_id and not event.draft_job_id:
        errors["job_id"] = "job_id or draft_job_id is required"
    for name in ("job_id", "draft_job_id"):
        value = getattr(event, name)
        if value is not None and len(str(value)) > 255:
            errors[name] = "must be at most 255 characters"
    cost = _check_occurred_and_cost(event, now, errors)
    if not isinstance(event.metadata, dict):
        errors["metadata"] = "must be an object"
    if errors:
        raise UsageValidationError(
            "Invalid usage event: " + "; ".join(f"{k} {v}" for k, v in errors.items()),
            fields=errors,
        )
    return cost


def _check_occurred_and_cost(
    event: UsageEvent, now: datetime, errors: dict[str, str]
) -> Decimal | None:
    if event.occurred_at is not None:
        if timezone.is_naive(event.occurred_at):
            errors["occurred_at"] = "must carry a UTC offset (e.g. 2026-11-01T12:00:00Z)"
        else:
            skew = timedelta(seconds=settings.USAGE_MAX_FUTURE_SKEW_SECONDS)
            if event.occurred_at > now + skew:
                errors["occurred_at"] = f"must not be more than {skew} in the future"
            elif event.occurred_at < EARLIEST_OCCURRED_AT:
                # Year 1 and the like overflow the company's local day (a 500).
                errors["occurred_at"] = f"must not be before {EARLIEST_OCCURRED_AT.isoformat()}"
    if event.cost is None or event.cost == "":
        return None
    try:
        cost = quantize_amount(event.cost)
    except AmountError as exc:
        errors["cost"] = str(exc)
        return None
    if cost < 0:
        errors["cost"] = "must not be negative"
    elif cost > settings.USAGE_MAX_EVENT_COST:
        errors["cost"] = f"must be at most {settings.USAGE_MAX_EVENT_COST} for one generation"
    return cost


def fingerprint(event: UsageEvent, company: Company, cost: Decimal | None) -> str:
    """A stable hash of what was asked, to tell a replay from a conflicting reuse."""
    payload = {
        "company": str(company.pk),
        "job_id": event.job_id,
        "draft_job_id": event.draft_job_id,
        "model": event.model,
        "prompt_tokens": event.prompt_tokens,
        "cached_prompt_tokens": event.cached_prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "question_count": event.question_count,
        "cost": None if cost is None else str(cost),
        # The instant, not its notation: 13:00+01:00 and 12:00Z are the same event.
        "occurred_at": (
            event.occurred_at.astimezone(UTC).isoformat() if event.occurred_at else None
        ),
        "metadata": event.metadata,
        "processing_time_ms": event.processing_time_ms,
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


# --- Pricing --------------------------------------------------------------------


def price_in_effect(model: str, at: datetime) -> ModelPrice | None:
    """The price period of `model` that covers the instant `at`, if any.

    Hand-written (:func:`billing.dbutil.from_row`): it runs for every priced event.
    """
    instant = param(ModelPrice, "effective_from", at)
    with connection.cursor() as cursor:
        cursor.execute(_price_sql(), [model, instant, instant])
        row = cursor.fetchone()
    return None if row is None else from_row(ModelPrice, row)


@functools.cache
def _price_sql() -> str:
    return (
        f"SELECT {select_list(ModelPrice, 'p')} FROM {ModelPrice._meta.db_table} p"
        " WHERE p.model = %s AND p.effective_from <= %s"
        " AND (p.effective_to IS NULL OR p.effective_to > %s)"
        " ORDER BY p.effective_from DESC LIMIT 1"
    )


def cost_for(
    *,
    model: str,
    at: datetime,
    prompt_tokens: int,
    cached_prompt_tokens: int,
    completion_tokens: int,
) -> tuple[Decimal | None, ModelPrice | None]:
    price = price_in_effect(model, at)
    if price is None:
        return None, None
    cost = price_cost(
        prompt_tokens=prompt_tokens,
        cached_prompt_tokens=cached_prompt_tokens,
        completion_tokens=completion_tokens,
        input_per_million=price.input_per_million,
        cached_input_per_million=price.cached_input_per_million,
        output_per_million=price.output_per_million,
    )
    return cost, price


# --- Jobs and drafts ---------------------------------------------------------------


def _as_uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


_JOB_CANDIDATES_SQL = f"""
SELECT j.id, j.company_id, j.draft_id FROM {Job._meta.db_table} j WHERE j.id = ANY(%s::uuid[])
UNION
SELECT j.id, j.company_id, j.draft_id
  FROM {recordset("%s", [("company_id", "uuid"), ("draft_id", "text")])}
  JOIN {Job._meta.db_table} j ON j.company_id = rows.company_id AND j.draft_id = rows.draft_id
"""


_JOB_CANDIDATE_FIELDS = ["id", "company_id", "draft_id"]


def _job_candidates(job_uuids: set, drafts: set[tuple[uuid.UUID, str]]) -> list[Job]:
    """Every saved job any of these events may belong to, in one query: by job id,
    and by exact (company, draft id) pair.

    On PostgreSQL the pairs are joined to the unique (company, draft id) index.
    An `id IN (...) OR (company_id IN (...) AND draft_id IN (...))` filter, the
    portable spelling, made the planner scan and sort every job (44 ms a
    1,000-event batch at 500,000 jobs).
    """
    if is_postgres():
        params = [list(job_uuids), json_rows(sorted(drafts, key=str))]
        with connection.cursor() as cursor:
            cursor.execute(_JOB_CANDIDATES_SQL, params)
            rows = cursor.fetchall()
        return [Job.from_db(connection.alias, _JOB_CANDIDATE_FIELDS, row) for row in rows]
    condition = Q(pk__in=job_uuids)
    if drafts:
        condition |= Q(company_id__in={c for c, _ in drafts}, draft_id__in={d for _, d in drafts})
    return list(Job.objects.filter(condition).only("id", "company_id", "draft_id"))


class JobIndex:
    """Saved jobs by id and by (company, draft id): how an event finds its job."""

    def __init__(self, jobs: list[Job]) -> None:
        self.by_id = {job.pk: job for job in jobs}
        self.by_draft = {(job.company_id, job.draft_id): job for job in jobs if job.draft_id}

    def job_for(self, company: Company, *, job_id: str | None, draft_job_id: str | None):
        """The saved job of an event, decided by existence, never by the id's shape.

        A saved job id wins over draft ids; a job id of another company raises
        CrossTenantJob (usage is never linked across tenants).
        """
        job = self.by_id.get(_as_uuid(job_id))
        if job is not None:
            if job.company_id != company.pk:
                raise CrossTenantJob(
                    f"Job {job_id} belongs to another company; usage is never linked across companies.",
                    fields={"job_id": "belongs to another company"},
                )
            return job
        for draft in (draft_job_id, job_id):
            if draft and (company.pk, draft) in self.by_draft:
                return self.by_draft[(company.pk, draft)]
        return None


def _draft_key(job_id: str | None) -> str | None:
    """A not-yet-saved job id as its draft key: a UUID in the canonical spelling that
    link_drafts looks up when the job is saved (any other text as sent)."""
    job_uuid = _as_uuid(job_id)
    return str(job_uuid) if job_uuid is not None else job_id


def _drafts_of(job_id: str | None, draft_job_id: str | None) -> set[str]:
    return {d for d in (draft_job_id, job_id) if d}


def _event_drafts(event: UsageEvent) -> set[str]:
    """Every draft key an event's usage may be kept under or linked by."""
    drafts = _drafts_of(event.job_id, event.draft_job_id)
    return drafts | {k for k in (_draft_key(event.job_id),) if k}


def lock_drafts(drafts: list[tuple[uuid.UUID, str]]) -> None:
    """Serialise recording usage under these (company, draft id)s with saving their job.

    Without it a usage that looked its job up just before the job was saved, and
    committed just after the save linked the drafts, stayed a draft although its
    job existed. Taken only for usage about to be kept as a draft (usage whose
    job is saved is linked to it and races nothing), followed by a second look-up
    of the job. Transaction-scoped advisory locks on PostgreSQL, taken in one
    sorted order before any row lock (so they add no deadlock); SQLite has one
    writer at a time anyway.
    """
    if connection.vendor != "postgresql" or not drafts:
        return
    keys = sorted({_draft_lock_key(company_id, draft) for company_id, draft in drafts})
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", [keys])


def _draft_lock_key(company_id: uuid.UUID, draft: str) -> int:
    digest = hashlib.sha256(f"draft:{company_id}:{draft}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def find_job_for(company: Company, *, job_id: str | None, draft_job_id: str | None) -> Job | None:
    """The saved job an event belongs to (one query). Raises CrossTenantJob."""
    job_uuid = _as_uuid(job_id)
    drafts = {(company.pk, d) for d in _drafts_of(job_id, draft_job_id)}
    jobs = _job_candidates({job_uuid} if job_uuid else set(), drafts)
    return JobIndex(jobs).job_for(company, job_id=job_id, draft_job_id=draft_job_id)


def local_day(company: Company, at: datetime):
    return timezone.localtime(at, company.tz).date()


# --- Recording ---------------------------------------------------------------------


def record_usage(
    event: UsageEvent,
    *,
    company: Company | None = None,
    debit: bool = True,
    now: datetime | None = None,
) -> RecordResult:
    """Record one generation exactly once, price it, and debit its cost.

    Idempotent on (company, idempotency_key): a replay with the same payload
    returns the first row (`created=False`); a different payload under the
    same key raises IdempotencyConflict. Usage is never refused for lack of
    credit: it already happened.

    The insert is tried first (`ON CONFLICT DO NOTHING`): new events, the common
    case, cost no look-up of the key; a concurrent request with the same key
    waits for the first to commit and then answers as a replay.
    """
    now = now or timezone.now()
    company = company or resolve_company(event.company)
    reported_cost = validate_event(event, now=now)
    fp = fingerprint(event, company, reported_cost)
    occurred_at = event.occurred_at or now
    price = None if reported_cost is not None else price_in_effect(event.model, occurred_at)
    with transaction.atomic():
        job = find_job_for(company, job_id=event.job_id, draft_job_id=event.draft_job_id)
        if job is None:  # to be kept as a draft: serialise with saving its job, look again
            lock_drafts([(company.pk, draft) for draft in _event_drafts(event)])
            job = find_job_for(company, job_id=event.job_id, draft_job_id=event.draft_job_id)
        usage = build_usage(event, company, job, reported_cost, price, fp, now, prepaid=not debit)
        inserted = insert_usage_rows([usage], roll_up=True)
        if inserted:
            balance = _debit_rows(company, [usage], now) if debit else current_balance(company)
    if not inserted:
        replay = _replay(company, event.idempotency_key, fp)
        if replay is None:  # the conflicting row vanished (its writer rolled back): retry
            return record_usage(event, company=company, debit=debit, now=now)
        return replay
    return RecordResult(usage=usage, created=True, balance=balance)


def _replay(company: Company, key: str, fp: str) -> RecordResult | None:
    usage = QuestionGenerationUsage.objects.filter(company=company, idempotency_key=key).first()
    if usage is None:
        return None
    _check_same_request(usage, key, fp)
    return RecordResult(usage=usage, created=False, balance=balance_after_debit(usage, company))


def _check_same_request(usage: QuestionGenerationUsage, key: str, fp: str) -> None:
    if usage.request_fingerprint and usage.request_fingerprint != fp:
        raise IdempotencyConflict(
            f"Idempotency key {key!r} was already used for a different usage event.",
            fields={"idempotency_key": "already used with a different payload"},
        )


def balance_after_debit(usage: QuestionGenerationUsage, company: Company) -> Decimal:
    """The balance right after this row's debit (so a replay answers as the first
    time did); the current balance for a row without a debit."""
    after = (
        LedgerEntry.objects.filter(usage_id=usage.pk, kind=LedgerEntry.Kind.USAGE)
        .values_list("balance_after", flat=True)
        .first()
    )
    return after if after is not None else current_balance(company)


def build_usage(
    event: UsageEvent,
    company: Company,
    job: Job | None,
    reported_cost: Decimal | None,
    price: ModelPrice | None,
    fp: str,
    now: datetime,
    *,
    prepaid: bool = False,
) -> QuestionGenerationUsage:
    """The row an event becomes (not saved): one definition for every path.

    `prepaid` marks history recorded without a debit (paid outside this system).
    """
    occurred_at = event.occurred_at or now
    draft_id = event.draft_job_id or (_draft_key(event.job_id) if job is None else None)
    if reported_cost is not None:
        cost, price, source = reported_cost, None, CostSource.REPORTED
    elif price is not None:
        cost, source = price_with(price, event), CostSource.PRICED
    else:
        cost, source = None, CostSource.UNPRICED
    values = {
        "id": uuid7(),
        "company_id": company.pk,
        "job_id": job.pk if job is not None else None,
        "draft_job_id": draft_id,
        "status": UsageStatus.LINKED if job else UsageStatus.DRAFT,
        "reconciled_at": now if job is not None and draft_id else None,
        "abandoned_at": None,
        "model": event.model,
        "prompt_tokens": event.prompt_tokens,
        "cached_prompt_tokens": event.cached_prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "question_count": event.question_count,
        "cost": cost,
        "cost_source": source,
        "price_id": price.pk if price is not None else None,
        "idempotency_key": event.idempotency_key,
        "request_fingerprint": fp,
        "occurred_at": occurred_at,
        "occurred_on": local_day(company, occurred_at),
        "recorded_at": now,
        "metadata": event.metadata or {},
        "processing_time_ms": event.processing_time_ms,
        "prepaid": prepaid,
    }
    # Positional arguments in field order are Django's fast path (the one from_db
    # takes): a third of the keyword path's cost, which a 1,000-event batch felt.
    usage = QuestionGenerationUsage(*[values[name] for name in _USAGE_ATTNAMES])
    for relation, obj in (("company", company), ("job", job), ("price", price)):
        if obj is not None:
            QuestionGenerationUsage._meta.get_field(relation).set_cached_value(usage, obj)
    return usage


_USAGE_ATTNAMES = [f.attname for f in QuestionGenerationUsage._meta.concrete_fields]


def price_with(price: ModelPrice, event: UsageEvent) -> Decimal:
    return price_cost(
        prompt_tokens=event.prompt_tokens,
        cached_prompt_tokens=event.cached_prompt_tokens,
        completion_tokens=event.completion_tokens,
        input_per_million=price.input_per_million,
        cached_input_per_million=price.cached_input_per_million,
        output_per_million=price.output_per_million,
    )


_ON_KEY_CONFLICT = "ON CONFLICT (company_id, idempotency_key) DO NOTHING"
_ROLLED_UP = "id, company_id, occurred_on, model, status, question_count, prompt_tokens, cached_prompt_tokens, completion_tokens, cost"  # fmt: skip


def insert_usage_rows(
    rows: list[QuestionGenerationUsage], *, roll_up: bool = False
) -> set[uuid.UUID]:
    """INSERT ... ON CONFLICT (company, idempotency_key) DO NOTHING RETURNING id.

    Returns the ids actually inserted; a row missing from it has a key that a
    committed (or concurrently committing) row already holds. Rows are inserted
    in key order so that concurrent batches lock keys in the same order.
    `roll_up` also adds the inserted rows to their rollup buckets: on PostgreSQL
    in the same statement (one round trip, and the hot bucket rows are locked
    one round trip later than with a second statement).
    """
    rows = sorted(rows, key=lambda r: (str(r.company_id), r.idempotency_key))
    if not rows:
        return set()
    if roll_up and connection.vendor == "postgresql":
        insert, params = recordset_insert(QuestionGenerationUsage, rows)
        sql = (
            f"WITH inserted AS ({insert} {_ON_KEY_CONFLICT} RETURNING {_ROLLED_UP}),"
            f" buckets AS ({rollup.FROM_INSERTED}) SELECT id FROM inserted"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            returned = cursor.fetchall()
        return {_as_uuid(str(row[0])) for row in returned}
    returned = insert_rows(QuestionGenerationUsage, rows, suffix=f"{_ON_KEY_CONFLICT} RETURNING id")
    inserted = {_as_uuid(str(row[0])) for row in returned}
    if roll_up and inserted:
        rollup.add_rows([r for r in rows if r.pk in inserted])
    return inserted


def usage_reason(usage: QuestionGenerationUsage) -> str:
    return f"{usage.model}: {usage.question_count} questions"


def _debit_rows(company: Company, rows: list[QuestionGenerationUsage], now: datetime) -> Decimal:
    """Debit the priced rows of one company (unpriced ones are debited when priced),
    then raise any billing alert the debit crossed (once per batch, not per row)."""
    debits = [(r.pk, r.cost, usage_reason(r)) for r in rows if r.cost is not None]
    after = post_usage_debits(company=company, debits=debits)
    total = sum((cost for _, cost, _ in debits), Decimal(0))
    if total:
        _evaluate_alerts(company, total, after, now)
    return after


# --- Recording many at once ----------------------------------------------------------

Outcome = RecordResult | BillingError


@dataclass
class _Pending:
    """One event of a batch on its way in."""

    index: int
    event: UsageEvent
    company: Company
    reported_cost: Decimal | None
    fp: str
    usage: QuestionGenerationUsage | None = None


def record_usage_batch(
    events: list[UsageEvent],
    *,
    debit: bool = True,
    now: datetime | None = None,
    companies: dict[str, Company] | None = None,
) -> list[Outcome]:
    """Record many generations with the semantics of :func:`record_usage`, set-based.

    Returns one outcome per event, in order: a RecordResult (created or replayed)
    or the BillingError that event would have raised alone; one bad event does
    not lose the others. Companies, jobs and prices are read in one query each,
    the rows go in with one `INSERT ... ON CONFLICT DO NOTHING RETURNING`, the
    rollup is applied once and each company's balance moves once. `companies`
    maps company references to the companies the caller resolved (the API
    authorizes them first); a reference missing from it is an unknown company.
    """
    now = now or timezone.now()
    outcomes: list[Outcome | None] = [None] * len(events)
    if companies is None:
        companies = resolve_companies([e.company for e in events])
    pending = _validated(events, companies, outcomes, now)
    firsts, repeats = _split_repeats(pending)
    with transaction.atomic():
        _build_rows(firsts, outcomes, now, prepaid=not debit)
        building = [p for p in firsts if p.usage is not None]
        inserted = insert_usage_rows([p.usage for p in building], roll_up=True)
        new = [p for p in building if p.usage.pk in inserted]
        balances = _debit_batch(new, debit, now)
    for p in new:
        outcomes[p.index] = RecordResult(usage=p.usage, created=True, balance=balances[p.index])
    _answer_replays([p for p in building if p.usage.pk not in inserted], outcomes, debit, now)
    for p, first in repeats:
        outcomes[p.index] = _repeat_outcome(p, outcomes[first.index], debit, now)
    return outcomes  # type: ignore[return-value]


def _validated(
    events: list[UsageEvent], companies: dict[str, Company], outcomes: list, now: datetime
) -> list[_Pending]:
    pending = []
    for index, event in enumerate(events):
        ref = str(event.company or "").strip()
        try:
            company = companies.get(ref)
            if company is None:
                raise company_not_found(ref)
            cost = validate_event(event, now=now)
        except BillingError as exc:
            outcomes[index] = exc
            continue
        fp = fingerprint(event, company, cost)
        pending.append(_Pending(index, event, company, cost, fp))
    return pending


def _split_repeats(
    pending: list[_Pending],
) -> tuple[list[_Pending], list[tuple[_Pending, _Pending]]]:
    """The first event of each (company, key), and later ones paired with their first."""
    first_by_key: dict[tuple, _Pending] = {}
    repeats = []
    for p in pending:
        key = (p.company.pk, p.event.idempotency_key)
        if key in first_by_key:
            repeats.append((p, first_by_key[key]))
        else:
            first_by_key[key] = p
    return list(first_by_key.values()), repeats


def _jobs_of(pending: list[_Pending]) -> JobIndex:
    """The saved jobs of a batch's events, draft locks taken only where they matter.

    An event whose job is already saved is linked to it: nothing can race it.
    Only events left without a job (kept as drafts) can race the save of their
    job, so only they take their draft locks (:func:`lock_drafts`), and their
    jobs are looked up again under the locks. Locking every event's keys made
    concurrent batches naming the same jobs wait for each other's commit.
    """
    found = _job_candidates(*_job_keys(pending))
    jobs = JobIndex(found)
    drafts = [p for p in pending if _left_as_draft(jobs, p)]
    if not drafts:
        return jobs
    lock_drafts([(p.company.pk, d) for p in drafts for d in _event_drafts(p.event)])
    return JobIndex(found + _job_candidates(*_job_keys(drafts)))


def _job_keys(pending: list[_Pending]) -> tuple[set, set]:
    job_uuids = {u for p in pending if (u := _as_uuid(p.event.job_id)) is not None}
    drafts = {
        (p.company.pk, d) for p in pending for d in _drafts_of(p.event.job_id, p.event.draft_job_id)
    }
    return job_uuids, drafts


def _left_as_draft(jobs: JobIndex, p: _Pending) -> bool:
    try:
        return (
            jobs.job_for(p.company, job_id=p.event.job_id, draft_job_id=p.event.draft_job_id)
            is None
        )
    except BillingError:  # refused (another company's job): recorded as nothing
        return False


def _build_rows(pending: list[_Pending], outcomes: list, now: datetime, *, prepaid: bool) -> None:
    jobs = _jobs_of(pending)
    prices = PriceBook({p.event.model for p in pending if p.reported_cost is None})
    for p in pending:
        event = p.event
        try:
            job = jobs.job_for(p.company, job_id=event.job_id, draft_job_id=event.draft_job_id)
        except BillingError as exc:
            outcomes[p.index] = exc
            continue
        price = None
        if p.reported_cost is None:
            price = prices.in_effect(event.model, event.occurred_at or now)
        p.usage = build_usage(
            event, p.company, job, p.reported_cost, price, p.fp, now, prepaid=prepaid
        )


class PriceBook:
    """Every price period of some models, read once, answering `price_in_effect`."""

    def __init__(self, models: set[str]) -> None:
        self._by_model: dict[str, list[ModelPrice]] = {}
        if not models:
            return
        placeholders = ", ".join(["%s"] * len(models))
        sql = (
            f"SELECT {select_list(ModelPrice, 'p')} FROM {ModelPrice._meta.db_table} p"
            f" WHERE p.model IN ({placeholders}) ORDER BY p.effective_from DESC"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, sorted(models))
            rows = cursor.fetchall()
        for row in rows:
            price = from_row(ModelPrice, row)
            self._by_model.setdefault(price.model, []).append(price)

    def in_effect(self, model: str, at: datetime) -> ModelPrice | None:
        for price in self._by_model.get(model, ()):
            if price.effective_from <= at and (
                price.effective_to is None or price.effective_to > at
            ):
                return price
        return None


def _debit_batch(new: list[_Pending], debit: bool, now: datetime) -> dict[int, Decimal]:
    """Debit each company once (companies in id order: the lock order), and give
    every event the balance right after its own debit, as one by one would.

    On PostgreSQL all companies are debited together in a constant number of
    statements (see post_usage_debits_many) and the alerts read the month-to-date
    spend of every limited company in one query.
    """
    by_company: dict[uuid.UUID, list[_Pending]] = {}
    for p in new:
        by_company.setdefault(p.company.pk, []).append(p)
    debited = {
        c for c, ps in by_company.items() if debit and any(p.usage.cost is not None for p in ps)
    }
    start = _current_balances(set(by_company) - debited)
    if connection.vendor == "postgresql":
        start.update(_debit_companies(by_company, debited, now))
    balances: dict[int, Decimal] = {}
    for company_id in sorted(by_company, key=str):
        ps = by_company[company_id]
        running = start.get(company_id, Decimal(0))
        if company_id in debited:
            if connection.vendor != "postgresql":
                after = _debit_rows(ps[0].company, [p.usage for p in ps], now)
                running = after + _priced_total([p.usage for p in ps])
        for p in ps:
            if company_id in debited and p.usage.cost is not None:
                running -= p.usage.cost
            balances[p.index] = running
    return balances


def _priced_total(rows: list[QuestionGenerationUsage]) -> Decimal:
    return sum((r.cost for r in rows if r.cost is not None), Decimal(0))


def _debit_companies(
    by_company: dict[uuid.UUID, list[_Pending]], debited: set, now: datetime
) -> dict[uuid.UUID, Decimal]:
    """Every debited company at once; returns each one's balance BEFORE the batch
    (what the per-event running balances start from), after raising its alerts."""
    companies = {c: by_company[c][0].company for c in debited}
    rows = {c: [p.usage for p in by_company[c]] for c in debited}
    debits = {
        c: [(r.pk, r.cost, usage_reason(r)) for r in rows[c] if r.cost is not None] for c in debited
    }
    after = post_usage_debits_many(companies=companies, debits=debits)
    totals = {c: _priced_total(rows[c]) for c in debited}
    limited = [
        companies[c]
        for c in sorted(debited, key=str)
        if companies[c].monthly_spend_limit is not None and totals[c]
    ]
    spend = month_to_date_spend_by_company(limited, now)
    for c in sorted(debited, key=str):
        if totals[c]:
            evaluate_alerts(
                company=companies[c],
                balance_before=after[c] + totals[c],
                balance_after=after[c],
                month_to_date_spend=spend.get(c),
                now=now,
            )
    return {c: after[c] + totals[c] for c in debited}


def _current_balances(company_ids: set) -> dict:
    if not company_ids:
        return {}
    rows = CreditBalance.objects.filter(company_id__in=company_ids)
    return dict(rows.values_list("company_id", "balance"))


def _balances_after_debits(usages: list[QuestionGenerationUsage]) -> dict[uuid.UUID, Decimal]:
    """:func:`balance_after_debit` for many rows in two queries at most."""
    after = dict(
        LedgerEntry.objects.filter(
            usage_id__in=[u.pk for u in usages], kind=LedgerEntry.Kind.USAGE
        ).values_list("usage_id", "balance_after")
    )
    current = _current_balances({u.company_id for u in usages if u.pk not in after})
    return {u.pk: after.get(u.pk, current.get(u.company_id, Decimal(0))) for u in usages}


def _answer_replays(pending: list[_Pending], outcomes: list, debit: bool, now: datetime) -> None:
    """Events whose key a committed row already holds: replay or conflict."""
    if not pending:
        return
    existing = {
        (u.company_id, u.idempotency_key): u
        for u in QuestionGenerationUsage.objects.filter(
            company_id__in={p.company.pk for p in pending},
            idempotency_key__in={p.event.idempotency_key for p in pending},
        )
    }
    balances = _balances_after_debits(list(existing.values()))
    for p in pending:
        usage = existing.get((p.company.pk, p.event.idempotency_key))
        try:
            if usage is None:  # its writer rolled back meanwhile: record it alone
                outcomes[p.index] = record_usage(p.event, company=p.company, debit=debit, now=now)
                continue
            _check_same_request(usage, p.event.idempotency_key, p.fp)
            outcomes[p.index] = RecordResult(usage=usage, created=False, balance=balances[usage.pk])
        except BillingError as exc:
            outcomes[p.index] = exc


def _repeat_outcome(
    p: _Pending, first_outcome: Outcome | None, debit: bool, now: datetime
) -> Outcome:
    """A key used again in the same batch answers as it would after the first, one by one."""
    try:
        if isinstance(first_outcome, RecordResult):
            _check_same_request(first_outcome.usage, p.event.idempotency_key, p.fp)
            return RecordResult(
                usage=first_outcome.usage, created=False, balance=first_outcome.balance
            )
        # The first recorded nothing (rare): this one is on its own, exactly as alone.
        return record_usage(p.event, company=p.company, debit=debit, now=now)
    except BillingError as exc:
        return exc


def _evaluate_alerts(company: Company, cost: Decimal, balance: Decimal, now: datetime) -> None:
    """Alerts after a debit: no query unless a line is crossed or the company has a limit."""
    limit = company.monthly_spend_limit
    spend = month_to_date_spend(company, now) if limit is not None else None
    evaluate_alerts(
        company=company,
        balance_before=balance + cost,
        balance_after=balance,
        month_to_date_spend=spend,
        now=now,
    )


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

    Idempotent on the job id. Matches draft usage of this company only, under
    the draft id and under the job's own id (usage sent with a not-yet-saved
    job_id is stored as a draft under that id).
    """
    now = now or timezone.now()
    job_uuid = _as_uuid(str(job_id)) if job_id else uuid.uuid4()
    if job_id and job_uuid is None:
        raise UsageValidationError("job_id must be a UUID.", fields={"job_id": "must be a UUID"})
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


def link_drafts(*, company: Company, job: Job, now: datetime | None = None) -> int:
    """Link this company's pending (or abandoned) draft usage of `job` to it.

    Returns the number of rows linked. Moves their rollup buckets to `linked`.
    """
    now = now or timezone.now()
    draft_keys = [str(job.pk)] + ([job.draft_id] if job.draft_id else [])
    table = QuestionGenerationUsage._meta.db_table
    placeholders = ", ".join(["%s"] * len(draft_keys))
    sql = f"""
        UPDATE {table}
           SET job_id = %s, status = 'linked', reconciled_at = %s
         WHERE company_id = %s AND job_id IS NULL AND draft_job_id IN ({placeholders})
     RETURNING company_id, occurred_on, model, question_count, prompt_tokens,
               cached_prompt_tokens, completion_tokens, cost, abandoned_at
    """
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                param(QuestionGenerationUsage, "job", job.pk),
                param(QuestionGenerationUsage, "reconciled_at", now),
                param(QuestionGenerationUsage, "company", company.pk),
                *draft_keys,
            ],
        )
        rows = cursor.fetchall()
    deltas = rollup.Deltas()
    for row in rows:
        values = _returned_row(company, row)
        deltas.add({**values, "status": "abandoned" if row[8] else "draft"}, -1)
        deltas.add({**values, "status": "linked"}, +1)
    rollup.apply(deltas)
    return len(rows)


def _returned_row(company: Company, row: tuple) -> dict:
    occurred_on = row[1]
    if isinstance(occurred_on, str):  # SQLite returns text
        occurred_on = datetime.fromisoformat(occurred_on).date()
    cost = row[7]
    return {
        "company_id": company.pk,
        "occurred_on": occurred_on,
        "model": row[2],
        "question_count": row[3],
        "prompt_tokens": row[4],
        "cached_prompt_tokens": row[5],
        "completion_tokens": row[6],
        "cost": None if cost is None else Decimal(str(cost)),
    }

"""Recording question generations and saving jobs: every path goes through here.

The API, the batch endpoint, the importer, the admin and the demo all call
:func:`record_usage`; saving a job (API, admin, service) calls :func:`save_job`.
Each is one transaction: the usage row, its rollup bucket and its debit commit
together or not at all.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.alerts import evaluate_alerts
from billing.dbutil import param
from billing.models import Company, LedgerEntry, ModelPrice
from billing.money import AmountError, price_cost, quantize_amount
from billing.services import (
    BillingError,
    IdempotencyConflict,
    current_balance,
    post_entry,
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
from usage.selectors import month_to_date_spend


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
    if event.cost is None or event.cost == "":
        return None
    try:
        cost = quantize_amount(event.cost)
    except AmountError as exc:
        errors["cost"] = str(exc)
        return None
    if cost < 0:
        errors["cost"] = "must not be negative"
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
        "occurred_at": event.occurred_at.isoformat() if event.occurred_at else None,
        "metadata": event.metadata,
        "processing_time_ms": event.processing_time_ms,
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


# --- Pricing --------------------------------------------------------------------


def price_in_effect(model: str, at: datetime) -> ModelPrice | None:
    """The price period of `model` that covers the instant `at`, if any."""
    return (
        ModelPrice.objects.filter(model=model, effective_from__lte=at)
        .exclude(effective_to__lte=at)
        .order_by("-effective_from")
        .first()
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


def find_job_for(company: Company, *, job_id: str | None, draft_job_id: str | None) -> Job | None:
    """The saved job an event belongs to, decided by existence, never by id shape.

    Raises CrossTenantJob when `job_id` is a saved job of another company.
    """
    job_uuid = _as_uuid(job_id)
    if job_uuid is not None:
        job = Job.objects.filter(pk=job_uuid).only("id", "company_id").first()
        if job is not None:
            if job.company_id != company.pk:
                raise CrossTenantJob(
                    f"Job {job_id} belongs to another company; usage is never linked across companies.",
                    fields={"job_id": "belongs to another company"},
                )
            return job
    for draft in {d for d in (draft_job_id, job_id) if d}:
        job = Job.objects.filter(company=company, draft_id=draft).only("id", "company_id").first()
        if job is not None:
            return job
    return None


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
    """
    now = now or timezone.now()
    company = company or resolve_company(event.company)
    reported_cost = validate_event(event, now=now)
    fp = fingerprint(event, company, reported_cost)
    replay = _replay(company, event.idempotency_key, fp)
    if replay is not None:
        return replay
    try:
        with transaction.atomic():
            usage = _insert_usage(event, company, reported_cost, fp, now)
            rollup.add_rows([usage])
            balance = _debit(usage, company) if debit else current_balance(company)
            if debit and usage.cost:
                _evaluate_alerts(company, usage.cost, balance, now)
    except IntegrityError:
        replay = _replay(company, event.idempotency_key, fp)
        if replay is None:
            raise
        return replay
    return RecordResult(usage=usage, created=True, balance=balance)


def _replay(company: Company, key: str, fp: str) -> RecordResult | None:
    usage = QuestionGenerationUsage.objects.filter(company=company, idempotency_key=key).first()
    if usage is None:
        return None
    if usage.request_fingerprint and usage.request_fingerprint != fp:
        raise IdempotencyConflict(
            f"Idempotency key {key!r} was already used for a different usage event.",
            fields={"idempotency_key": "already used with a different payload"},
        )
    return RecordResult(usage=usage, created=False, balance=current_balance(company))


def _insert_usage(
    event: UsageEvent, company: Company, reported_cost: Decimal | None, fp: str, now: datetime
) -> QuestionGenerationUsage:
    occurred_at = event.occurred_at or now
    job = find_job_for(company, job_id=event.job_id, draft_job_id=event.draft_job_id)
    draft_id = event.draft_job_id or (event.job_id if job is None else None)
    if reported_cost is not None:
        cost, price, source = reported_cost, None, CostSource.REPORTED
    else:
        cost, price = cost_for(
            model=event.model,
            at=occurred_at,
            prompt_tokens=event.prompt_tokens,
            cached_prompt_tokens=event.cached_prompt_tokens,
            completion_tokens=event.completion_tokens,
        )
        source = CostSource.PRICED if price is not None else CostSource.UNPRICED
    return QuestionGenerationUsage.objects.create(
        company=company,
        job=job,
        draft_job_id=draft_id,
        status=UsageStatus.LINKED if job else UsageStatus.DRAFT,
        reconciled_at=now if job is not None and draft_id else None,
        model=event.model,
        prompt_tokens=event.prompt_tokens,
        cached_prompt_tokens=event.cached_prompt_tokens,
        completion_tokens=event.completion_tokens,
        question_count=event.question_count,
        cost=cost,
        cost_source=source,
        price=price,
        idempotency_key=event.idempotency_key,
        request_fingerprint=fp,
        occurred_at=occurred_at,
        occurred_on=local_day(company, occurred_at),
        metadata=event.metadata or {},
        processing_time_ms=event.processing_time_ms,
    )


def _debit(usage: QuestionGenerationUsage, company: Company) -> Decimal:
    if usage.cost is None:  # unpriced: debited when reprice_usage prices it
        return current_balance(company)
    posting = post_entry(
        company=company,
        kind=LedgerEntry.Kind.USAGE,
        amount=-usage.cost,
        idempotency_key=f"usage:{usage.pk}",
        usage_id=usage.pk,
        reason=f"{usage.model}: {usage.question_count} questions",
    )
    return posting.entry.balance_after


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
            existing.draft_id = draft_job_id
            existing.save(update_fields=["draft_id", "updated_at"])
        return existing, False
    by_draft = draft_job_id and Job.objects.filter(company=company, draft_id=draft_job_id).first()
    if by_draft:
        raise IdempotencyConflict(
            f"Draft {draft_job_id!r} was already saved as job {by_draft.pk}.",
            fields={"draft_job_id": f"already saved as job {by_draft.pk}"},
        )
    try:
        with transaction.atomic():
            job = Job.objects.create(
                id=job_uuid, company=company, title=title, draft_id=draft_job_id or None
            )
    except IntegrityError:
        job = Job.objects.filter(pk=job_uuid, company=company).first()
        if job is None:
            raise
        return job, False
    return job, True


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

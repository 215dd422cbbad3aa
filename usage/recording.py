"""Recording question generations: every path goes through here.

The API (single posts, grouped by usage.grouping, and the batch endpoint), the
importer, the rejected-events inbox, the admin and the demo all call
:func:`record_usage_batch`; :func:`record_usage` is the batch of one. A batch is
one transaction: its usage rows, their rollup buckets and their debits commit
together or not at all, and each event gets the outcome it would have had
alone (one bad event loses no other).

Exactly once: each event is idempotent on (company, idempotency_key). The
insert is tried first (`ON CONFLICT DO NOTHING`), so new events, the common
case, cost no look-up of the key; an event whose key a committed row holds is
answered as a replay (the same row, and the balance right after its debit),
or as an IdempotencyConflict if its payload differs. Usage is never refused
for lack of credit: it already happened.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from billing.alerts import evaluate_alerts, evaluate_key_alerts
from billing.companies import company_not_found, resolve_companies
from billing.ledger import post_usage_debits
from billing.models import Company, CreditBalance, LedgerEntry, ModelPrice, Reservation
from billing.prices import PriceBook, charge_for
from core.errors import IdempotencyConflict, ServiceError
from core.ids import uuid7
from core.sql import recordset_insert
from usage import rollup
from usage.budgets import key_spend
from usage.events import UsageEvent, fingerprint, validate_event
from usage.jobs import JobIndex, draft_key_of, event_draft_keys, job_index, lock_drafts
from usage.models import CostSource, Job, QuestionGenerationUsage, UsageStatus
from usage.reservations import claim_holds, settle_holds
from usage.selectors import month_to_date_spend_by_company

ZERO = Decimal(0)


@dataclass(frozen=True)
class RecordResult:
    usage: QuestionGenerationUsage
    created: bool
    balance: Decimal


Outcome = RecordResult | ServiceError


def record_usage(
    event: UsageEvent,
    *,
    company: Company | None = None,
    debit: bool = True,
    now: datetime | None = None,
) -> RecordResult:
    """Record one generation exactly once, price it, and debit its cost: the batch of one.

    `company` is the company the caller already resolved (and authorized) for
    the event's reference; without it the reference is resolved here. Raises
    the event's ServiceError.
    """
    companies = None if company is None else {str(event.company or "").strip(): company}
    (outcome,) = record_usage_batch([event], debit=debit, now=now, companies=companies)
    if isinstance(outcome, ServiceError):
        raise outcome
    return outcome


@dataclass
class _Pending:
    """One event of a batch on its way in."""

    index: int
    event: UsageEvent
    company: Company
    reported_cost: Decimal | None
    fp: str
    usage: QuestionGenerationUsage | None = None
    hold: Reservation | None = None  # the reservation this event settles


def record_usage_batch(
    events: list[UsageEvent],
    *,
    debit: bool = True,
    now: datetime | None = None,
    companies: dict[str, Company] | None = None,
) -> list[Outcome]:
    """Record many generations, set-based; one outcome per event, in order.

    An outcome is a RecordResult (created or replayed) or the ServiceError that
    event would have raised alone. Companies, jobs and prices are read in one
    query each, the rows go in with their rollup buckets in one statement, and
    every company's balance moves in one more. `companies` maps company
    references to the companies the caller resolved (the API authorizes them
    first); a reference missing from it is an unknown company. `debit=False`
    records history paid for outside this system (`prepaid`: never debited).
    """
    now = now or timezone.now()
    outcomes: list[Outcome | None] = [None] * len(events)
    if companies is None:
        companies = resolve_companies([e.company for e in events])
    pending = _validated(events, companies, outcomes, now)
    firsts, repeats = _split_repeats(pending)
    with transaction.atomic():
        firsts = _with_holds(firsts, outcomes)
        _build_rows(firsts, outcomes, now, prepaid=not debit)
        building = [p for p in firsts if p.usage is not None]
        inserted = insert_usage_rows([p.usage for p in building])
        new = [p for p in building if p.usage.pk in inserted]
        settle_holds([(p.hold, p.usage) for p in new if p.hold is not None], now)
        balances = _debit(new, debit, now)
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
        except ServiceError as exc:
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


def _with_holds(pending: list[_Pending], outcomes: list) -> list[_Pending]:
    """Lock the reservations the events name (usage.reservations.claim_holds) before any
    other row; an event whose hold refuses it gets that error and goes no further."""
    answers = claim_holds([(p.index, p.event, p.company) for p in pending])
    kept = []
    for p in pending:
        answer = answers.get(p.index)
        if isinstance(answer, ServiceError):
            outcomes[p.index] = answer
            continue
        p.hold = answer
        kept.append(p)
    return kept


# --- Building the rows ------------------------------------------------------------------


def _jobs_of(pending: list[_Pending]) -> JobIndex:
    """The saved jobs of a batch's events, draft locks taken only where they matter.

    An event whose job is already saved is linked to it: nothing can race it.
    Only events left without a job (kept as drafts) can race the save of their
    job, so only they take their draft locks (usage.jobs.lock_drafts), and
    their jobs are looked up again under the locks. Locking every event's keys
    made concurrent batches naming the same jobs wait for each other's commit.
    """
    jobs = job_index([_job_reference(p) for p in pending])
    drafts = [p for p in pending if _left_as_draft(jobs, p)]
    if not drafts:
        return jobs
    lock_drafts([(p.company.pk, k) for p in drafts for k in _lock_keys(p.event)])
    again = job_index([_job_reference(p) for p in drafts])
    return JobIndex([*jobs.by_id.values(), *again.by_id.values()])


def _job_reference(p: _Pending) -> tuple[uuid.UUID, str | None, str | None]:
    return p.company.pk, p.event.job_id, p.event.draft_job_id


def _lock_keys(event: UsageEvent) -> list[str]:
    """The draft keys whose job's save this event must not race: every key it may
    belong to a job by (the job's save locks its own id and its draft id)."""
    return event_draft_keys(event.job_id, event.draft_job_id)


def _left_as_draft(jobs: JobIndex, p: _Pending) -> bool:
    try:
        return (
            jobs.job_for(p.company, job_id=p.event.job_id, draft_job_id=p.event.draft_job_id)
            is None
        )
    except ServiceError:  # refused (another company's job): recorded as nothing
        return False


def _build_rows(pending: list[_Pending], outcomes: list, now: datetime, *, prepaid: bool) -> None:
    jobs = _jobs_of(pending)
    prices = PriceBook({p.event.model for p in pending if p.reported_cost is None})
    for p in pending:
        event = p.event
        try:
            job = jobs.job_for(p.company, job_id=event.job_id, draft_job_id=event.draft_job_id)
        except ServiceError as exc:
            outcomes[p.index] = exc
            continue
        price = None
        if p.reported_cost is None:
            price = prices.in_effect(event.model, event.occurred_at or now, event.service_tier)
        p.usage = build_usage(
            event, p.company, job, p.reported_cost, price, p.fp, now, prepaid=prepaid
        )


def local_day(company: Company, at: datetime):
    """The company's local date of an instant: the day its usage is reported under."""
    return timezone.localtime(at, company.tz).date()


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
    """The row an event becomes (not saved).

    `prepaid` marks history recorded without a debit (paid outside this system).
    """
    occurred_at = event.occurred_at or now
    draft_id = event.draft_job_id or (draft_key_of(event.job_id, None) if job is None else None)
    if reported_cost is not None:
        cost, price, source = reported_cost, None, CostSource.REPORTED
    elif price is not None:
        cost, source = charge_for(price, event.tokens()).total, CostSource.PRICED
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
        "cache_write_5m_tokens": event.cache_write_5m_tokens,
        "cache_write_1h_tokens": event.cache_write_1h_tokens,
        "reasoning_tokens": event.reasoning_tokens,
        "service_tier": event.service_tier,
        "provider": event.provider,
        "provider_usage": event.provider_usage,
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
        "api_key_id": event.api_key.pk if event.api_key is not None else None,
    }
    # Positional arguments in field order are Django's fast path (the one from_db
    # takes): a third of the keyword path's cost, which a 1,000-event batch felt.
    usage = QuestionGenerationUsage(*[values[name] for name in _USAGE_ATTNAMES])
    for relation, obj in (("company", company), ("job", job), ("price", price)):
        if obj is not None:
            QuestionGenerationUsage._meta.get_field(relation).set_cached_value(usage, obj)
    return usage


_USAGE_ATTNAMES = [f.attname for f in QuestionGenerationUsage._meta.concrete_fields]


_ON_KEY_CONFLICT = "ON CONFLICT (company_id, idempotency_key) DO NOTHING"
_ROLLED_UP = "id, company_id, occurred_on, model, status, question_count, prompt_tokens, cached_prompt_tokens, completion_tokens, cost, api_key_id"  # fmt: skip


def insert_usage_rows(rows: list[QuestionGenerationUsage]) -> set[uuid.UUID]:
    """Insert the rows and add them to their rollup buckets, in one statement.

    `INSERT ... ON CONFLICT (company, idempotency_key) DO NOTHING RETURNING`:
    returns the ids actually inserted; a row missing from it has a key that a
    committed (or concurrently committing) row already holds. Rows are inserted
    in key order so that concurrent batches lock keys in the same order; one
    round trip, and the hot bucket rows are locked one round trip later than
    with a second statement.
    """
    rows = sorted(rows, key=lambda r: (str(r.company_id), r.idempotency_key))
    if not rows:
        return set()
    insert, params = recordset_insert(QuestionGenerationUsage, rows)
    sql = (
        f"WITH inserted AS ({insert} {_ON_KEY_CONFLICT} RETURNING {_ROLLED_UP}),"
        f" buckets AS ({rollup.FROM_INSERTED}),"
        f" key_buckets AS ({rollup.KEY_FROM_INSERTED}) SELECT id FROM inserted"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0] for row in cursor.fetchall()}


# --- Debits, replays and repeats ---------------------------------------------------------


def usage_reason(usage: QuestionGenerationUsage) -> str:
    return f"{usage.model}: {usage.question_count} questions"


def _debit(new: list[_Pending], debit: bool, now: datetime) -> dict[int, Decimal]:
    """Debit every company's new priced rows at once (billing.ledger.post_usage_debits),
    raise the alerts the debits crossed, and give every event the balance right after
    its own debit, as one by one would. Unpriced rows are debited once priced."""
    by_company: dict[uuid.UUID, list[_Pending]] = {}
    for p in new:
        by_company.setdefault(p.company.pk, []).append(p)
    debits = {
        c: [
            (p.usage.pk, p.usage.cost, usage_reason(p.usage))
            for p in ps
            if p.usage.cost is not None
        ]
        for c, ps in by_company.items()
        if debit
    }
    debits = {c: d for c, d in debits.items() if d}
    start = _current_balances(set(by_company) - set(debits))
    if debits:
        after = post_usage_debits(debits=debits, now=now)
        start.update(_raise_alerts(by_company, debits, after, now))
        _raise_key_alerts([p for c in debits for p in by_company[c]], after, now)
    balances: dict[int, Decimal] = {}
    for company_id, ps in by_company.items():
        running = start.get(company_id, ZERO)
        for p in ps:
            if company_id in debits and p.usage.cost is not None:
                running -= p.usage.cost
            balances[p.index] = running
    return balances


def _raise_alerts(by_company: dict, debits: dict, after: dict, now: datetime) -> dict:
    """The alerts each debited company's move crossed (the month-to-date spend of the
    limited ones read in one query); returns each one's balance BEFORE the batch."""
    companies = {c: by_company[c][0].company for c in debits}
    totals = {c: sum((cost for _, cost, _ in debits[c]), ZERO) for c in debits}
    limited = [c for c in debits if companies[c].monthly_spend_limit is not None and totals[c]]
    spend = month_to_date_spend_by_company([companies[c] for c in limited], now)
    for c in sorted(debits, key=str):
        if not totals[c]:
            continue  # a zero cost crosses no line
        evaluate_alerts(
            company=companies[c],
            balance_before=after[c] + totals[c],
            balance_after=after[c],
            month_to_date_spend=spend.get(c),
            now=now,
        )
    return {c: after[c] + totals[c] for c in debits}


def _raise_key_alerts(debited: list[_Pending], after: dict, now: datetime) -> None:
    """The 80 % / 100 % alerts of the limited keys whose spend these debits moved (the
    keys came authenticated with their limits: no query unless one has a limit)."""
    by_key: dict[int, list[_Pending]] = {}
    for p in debited:
        key = p.event.api_key
        if key is not None and key.has_limits and key.company_id == p.company.pk and p.usage.cost:
            by_key.setdefault(key.pk, []).append(p)
    for ps in by_key.values():
        company, key = ps[0].company, ps[0].event.api_key
        today = local_day(company, now)
        this_month = [p for p in ps if today.replace(day=1) <= p.usage.occurred_on <= today]
        day, month = key_spend(company, key, now)
        evaluate_key_alerts(
            company=company,
            key=key,
            day_spend=day,
            month_spend=month,
            added_today=sum(
                (p.usage.cost for p in this_month if p.usage.occurred_on == today), ZERO
            ),
            added_this_month=sum((p.usage.cost for p in this_month), ZERO),
            balance=after[company.pk],
            now=now,
        )


def _current_balances(company_ids: set) -> dict:
    if not company_ids:
        return {}
    rows = CreditBalance.objects.filter(company_id__in=company_ids)
    return dict(rows.values_list("company_id", "balance"))


def _balances_after_debits(usages: list[QuestionGenerationUsage]) -> dict[uuid.UUID, Decimal]:
    """The balance right after each row's debit (so a replay answers as the first time
    did); the current balance for a row without a debit. Two queries at most."""
    after = dict(
        LedgerEntry.objects.filter(
            usage_id__in=[u.pk for u in usages], kind=LedgerEntry.Kind.USAGE
        ).values_list("usage_id", "balance_after")
    )
    current = _current_balances({u.company_id for u in usages if u.pk not in after})
    return {u.pk: after.get(u.pk, current.get(u.company_id, ZERO)) for u in usages}


def _check_same_request(usage: QuestionGenerationUsage, key: str, fp: str) -> None:
    if usage.request_fingerprint and usage.request_fingerprint != fp:
        raise IdempotencyConflict(
            f"Idempotency key {key!r} was already used for a different usage event.",
            fields={"idempotency_key": "already used with a different payload"},
        )


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
        except ServiceError as exc:
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
    except ServiceError as exc:
        return exc

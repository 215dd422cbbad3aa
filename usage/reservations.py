"""Holds on budget before a generation starts: admitted race-free, settled by its usage.

A hold (billing.models.Reservation) is never money; this module is the only
writer of its rows.

- :func:`reserve` admits a hold under the company's balance row lock
  (billing.ledger.lock_balance), the lock every debit of the company takes:
  admissions of one company are serialised with each other and with its
  debits, so every check after a hold sees it, and fifty generations that
  start at once cannot all pass a budget that covers only some of them. It
  takes no other lock before a write (see "Lock order" below).
- A usage event that names the hold settles it (usage.recording, with
  :func:`claim_holds` and :func:`settle_holds`) in the transaction that
  debits the usage's actual cost, whatever it is. A hold past its expiry,
  marked or not, still settles: the generation happened, and the hold had
  stopped counting anyway. A released hold, one settled by another usage, or
  one of another company is refused, naming `reservation_id`.
- :func:`release` closes a hold (idempotent); :func:`expire_due` marks the
  expired ones with a conditional UPDATE, safe on several hosts at once.

Lock order: recording locks the holds its events name (sorted by id) before
its usage rows, rollup and balance; an admission locks the balance row and
then only inserts; release and expiry lock hold rows only. No cycle.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from billing.ledger import lock_balance
from billing.models import APIKey, Company, Reservation, ServiceTier
from billing.money import AmountError, plain, quantize_amount
from billing.prices import PriceBook, Tokens, charge_for
from core.errors import IdempotencyConflict, InvalidInput, ServiceError
from core.sql import json_rows, recordset
from usage.budgets import REASONS, read_budget
from usage.errors import BudgetExceeded, PriceNotFound, ReservationClosed, ReservationNotFound
from usage.events import (
    COUNT_FIELDS,
    SERVICE_TIERS,
    UsageEvent,
    _check_count,
    is_canonical_uuid,
)
from usage.models import QuestionGenerationUsage

Status = Reservation.Status
TOKEN_FIELDS = ("prompt_tokens", "cached_prompt_tokens", "completion_tokens")


@dataclass(frozen=True)
class Estimate:
    """What a generation is expected to cost: a cost, or a model and its expected tokens."""

    cost: Decimal | str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    service_tier: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: str(v) if k == "cost" else v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class ReserveResult:
    reservation: Reservation
    created: bool


def reserve(
    *,
    company: Company,
    api_key: APIKey | None,
    estimate: Estimate,
    idempotency_key: str,
    job_id: str | None = None,
    draft_job_id: str | None = None,
    ttl_seconds: int | None = None,
    now: datetime | None = None,
) -> ReserveResult:
    """Hold the estimate's cost, or raise BudgetExceeded naming every line it would cross.

    Idempotent on (company, idempotency_key): the same request answers the same
    hold; another request with the key is an IdempotencyConflict. A refusal
    writes nothing (the key stays free for a later try).
    """
    now = now or timezone.now()
    ttl = _check_request(idempotency_key, job_id, draft_job_id, ttl_seconds)
    amount = estimate_cost(estimate, now)
    fp = _fingerprint(estimate, api_key, job_id, draft_job_id, ttl)
    with transaction.atomic():
        balance = lock_balance(company.pk)
        existing = Reservation.objects.filter(
            company=company, idempotency_key=idempotency_key
        ).first()
        if existing is not None:
            if existing.request_fingerprint != fp:
                raise IdempotencyConflict(
                    f"Idempotency key {idempotency_key!r} was already used for another reservation.",
                    fields={"idempotency_key": "already used with a different payload"},
                )
            return ReserveResult(existing, created=False)
        budget = read_budget(company, key=api_key, balance=balance, now=now)
        if reasons := budget.refusals(amount):
            raise BudgetExceeded(
                f"A hold of {plain(amount)} does not fit: "
                + "; ".join(REASONS[r] for r in reasons)
                + ".",
                reasons=reasons,
                fields={"estimate": "does not fit the budget"},
            )
        hold = Reservation.objects.create(
            company=company,
            api_key=api_key,
            amount=amount,
            job_id=job_id,
            draft_job_id=draft_job_id,
            idempotency_key=idempotency_key,
            request_fingerprint=fp,
            estimate=estimate.as_json(),
            expires_at=now + timedelta(seconds=ttl),
        )
    return ReserveResult(hold, created=True)


def _check_request(
    idempotency_key: str, job_id: str | None, draft_job_id: str | None, ttl: int | None
) -> int:
    errors: dict[str, str] = {}
    if not (idempotency_key or "").strip():
        errors["idempotency_key"] = "is required"
    elif len(idempotency_key) > 255:
        errors["idempotency_key"] = "must be at most 255 characters"
    for name, value in (("job_id", job_id), ("draft_job_id", draft_job_id)):
        if value is not None and len(value) > 255:
            errors[name] = "must be at most 255 characters"
    ttl = settings.RESERVATION_DEFAULT_TTL_SECONDS if ttl is None else ttl
    longest = settings.RESERVATION_MAX_TTL_SECONDS
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= longest:
        errors["ttl_seconds"] = f"must be a whole number of seconds from 1 to {longest}"
    if errors:
        raise _invalid(errors)
    return ttl


def _invalid(errors: dict[str, str]) -> InvalidInput:
    detail = "; ".join(f"{k} {v}" for k, v in errors.items())
    return InvalidInput(f"Invalid reservation: {detail}", fields=errors)


def estimate_cost(estimate: Estimate, now: datetime) -> Decimal:
    """The estimate's amount: its cost, or its tokens at the price in effect now."""
    tokens_given = [n for n in ("model", *TOKEN_FIELDS) if getattr(estimate, n) is not None]
    if estimate.cost is not None:
        if tokens_given:
            raise _invalid({"estimate": "a cost, or a model with tokens, not both"})
        try:
            cost = quantize_amount(estimate.cost)
        except AmountError as exc:
            raise _invalid({"estimate.cost": str(exc)})
        if cost < 0 or cost > settings.USAGE_MAX_EVENT_COST:
            raise _invalid({"estimate.cost": f"must be from 0 to {settings.USAGE_MAX_EVENT_COST}"})
        return cost
    return _priced(estimate, now)


def _priced(estimate: Estimate, now: datetime) -> Decimal:
    errors: dict[str, str] = {}
    if not (estimate.model or "").strip():
        errors["estimate.model"] = "is required without a cost"
    for name in ("prompt_tokens", "completion_tokens"):
        if getattr(estimate, name) is None:
            errors[f"estimate.{name}"] = "is required without a cost"
    for name in TOKEN_FIELDS:
        if (value := getattr(estimate, name)) is not None and name in COUNT_FIELDS:
            _check_count(f"estimate.{name}", value, errors)
    tier = estimate.service_tier or ServiceTier.STANDARD
    if tier not in SERVICE_TIERS:
        errors["estimate.service_tier"] = f"must be one of {', '.join(sorted(SERVICE_TIERS))}"
    cached = estimate.cached_prompt_tokens or 0
    if not errors and cached > estimate.prompt_tokens:
        errors["estimate.cached_prompt_tokens"] = "must not exceed prompt_tokens"
    if errors:
        raise _invalid(errors)
    price = PriceBook({estimate.model}).in_effect(estimate.model, now, tier)
    if price is None:
        raise PriceNotFound(
            f"No price of {estimate.model!r} ({tier}) is in effect now: send the estimate as a cost.",
            fields={"estimate.model": "has no price in effect now; send a cost"},
        )
    tokens = Tokens(
        prompt=estimate.prompt_tokens, completion=estimate.completion_tokens, cached=cached
    )
    return charge_for(price, tokens).total


def _fingerprint(
    estimate: Estimate, key: APIKey | None, job_id: str | None, draft: str | None, ttl: int
) -> str:
    payload = {
        "estimate": estimate.as_json(),
        "api_key": key.pk if key else None,
        "job_id": job_id,
        "draft_job_id": draft,
        "ttl_seconds": ttl,
    }
    encoded = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


# --- Settling: called by usage.recording inside its transaction ------------------------


def claim_holds(
    named: list[tuple[int, UsageEvent, Company]],
) -> dict[int, Reservation | ServiceError]:
    """Lock the holds these events name (in id order) and answer, per event index,
    the hold it settles or the error that refuses it.

    An event missing from the answer settles nothing: it names no hold, or it is
    the replay of the usage that settled its hold (recording answers it as a
    replay).
    """
    named = [(i, e, c) for i, e, c in named if e.reservation_id]
    if not named:
        return {}
    ids = sorted({e.reservation_id.lower() for _, e, _ in named})
    locked = Reservation.objects.select_for_update().filter(pk__in=ids).order_by("pk")
    holds = {str(h.pk): h for h in locked}
    settled_by = dict(
        QuestionGenerationUsage.objects.filter(
            pk__in=[h.settled_usage_id for h in holds.values() if h.settled_usage_id]
        ).values_list("pk", "idempotency_key")
    )
    claimed: dict[str, str] = {}
    answers: dict[int, Reservation | ServiceError] = {}
    for index, event, company in named:
        hold = holds.get(event.reservation_id.lower())
        answer = _claim(hold, event, company, settled_by, claimed)
        if answer is not None:
            answers[index] = answer
    return answers


def _claim(
    hold: Reservation | None,
    event: UsageEvent,
    company: Company,
    settled_by: dict,
    claimed: dict[str, str],
) -> Reservation | ServiceError | None:
    field = "reservation_id"
    if hold is None or hold.company_id != company.pk:
        return ReservationNotFound(
            f"No reservation {event.reservation_id} of this company.",
            fields={field: "no such reservation for this company"},
        )
    if hold.status == Status.RELEASED:
        return ReservationClosed(
            f"Reservation {hold.pk} was released; record the usage without it.",
            fields={field: "released"},
        )
    if hold.status == Status.SETTLED:
        if settled_by.get(hold.settled_usage_id) == event.idempotency_key:
            return None  # the replay of the usage that settled it
        return ReservationClosed(
            f"Reservation {hold.pk} was settled by another usage event.",
            fields={field: "already settled by another usage event"},
        )
    key = str(hold.pk)
    if claimed.setdefault(key, event.idempotency_key) != event.idempotency_key:
        return ReservationClosed(
            f"Reservation {hold.pk} is named by another event of this batch.",
            fields={field: "named by another event of this batch"},
        )
    return hold  # open, or past its expiry: it settles


_SETTLE = f"""
UPDATE {Reservation._meta.db_table} h
   SET status = 'settled', settled_usage_id = rows.usage_id, settled_cost = rows.cost,
       closed_at = %s
  FROM {recordset("%s", [("id", "uuid"), ("usage_id", "uuid"), ("cost", "numeric")])}
 WHERE h.id = rows.id"""


def settle_holds(settled: list[tuple[Reservation, QuestionGenerationUsage]], now: datetime) -> None:
    """Close each hold as settled by its (just inserted) usage row, in one statement."""
    if not settled:
        return
    rows = json_rows([(h.pk, u.pk, u.cost) for h, u in settled])
    with connection.cursor() as cursor:
        cursor.execute(_SETTLE, [now, rows])


# --- Release and expiry ---------------------------------------------------------------


def release(
    *, reservation_id: str, company_id: uuid.UUID | None, now: datetime | None = None
) -> Reservation:
    """Release an open hold; idempotent (a closed hold answers as it is).

    `company_id` scopes the look-up (a company key sees only its own holds).
    """
    now = now or timezone.now()
    hold = _scoped(reservation_id, company_id)
    Reservation.objects.filter(pk=hold.pk, status=Status.OPEN).update(
        status=Status.RELEASED, closed_at=now
    )
    hold.refresh_from_db()
    return hold


def get_reservation(*, reservation_id: str, company_id: uuid.UUID | None) -> Reservation:
    return _scoped(reservation_id, company_id)


def _scoped(reservation_id: str, company_id: uuid.UUID | None) -> Reservation:
    missing = ReservationNotFound(
        f"No reservation {reservation_id}.", fields={"reservation_id": "not found"}
    )
    if not is_canonical_uuid(reservation_id):
        raise missing
    holds = Reservation.objects.filter(pk=reservation_id)
    if company_id is not None:
        holds = holds.filter(company_id=company_id)
    hold = holds.first()
    if hold is None:
        raise missing
    return hold


_EXPIRE = f"""
UPDATE {Reservation._meta.db_table} SET status = 'expired', closed_at = %(now)s
 WHERE id IN (SELECT id FROM {Reservation._meta.db_table}
               WHERE status = 'open' AND expires_at <= %(now)s
               ORDER BY expires_at LIMIT %(batch)s FOR UPDATE SKIP LOCKED)
   AND status = 'open'
RETURNING company_id, amount"""


def expire_due(*, now: datetime | None = None, dry_run: bool = False, batch: int = 1000) -> dict:
    """Mark open holds past their expiry as expired, in batches; a summary.

    Each batch is one conditional UPDATE (`status = 'open' AND expires_at <=
    now`, rows another transaction holds skipped), so two hosts running it at
    once mark each hold once, and a hold being settled or released meanwhile is
    left to that. Checks never wait for it: they already treat these holds as
    released. A dry run is the same statements, rolled back.
    """
    now = now or timezone.now()
    if dry_run:  # the real statements, rolled back: one transaction sees its own marks
        with transaction.atomic():
            rows = _expire_batches(now, batch)
            transaction.set_rollback(True)
    else:
        rows = _expire_batches(now, batch)
    return _summary(rows, now, dry_run=dry_run)


def _expire_batches(now: datetime, batch: int) -> list[tuple[uuid.UUID, Decimal]]:
    """One transaction a batch (a savepoint each inside a dry run's)."""
    rows: list[tuple[uuid.UUID, Decimal]] = []
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_EXPIRE, {"now": now, "batch": batch})
            got = cursor.fetchall()
        rows += got
        if len(got) < batch:
            return rows


def _summary(rows: list[tuple[uuid.UUID, Decimal]], now: datetime, *, dry_run: bool) -> dict:
    per_company: dict[str, Decimal] = {}
    for company_id, amount in rows:
        per_company[str(company_id)] = per_company.get(str(company_id), Decimal(0)) + amount
    return {
        "dry_run": dry_run,
        "now": now.isoformat(),
        "holds": len(rows),
        "amount": plain(sum(per_company.values(), Decimal(0))),
        "companies": {c: plain(a) for c, a in sorted(per_company.items())},
    }

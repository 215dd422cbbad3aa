"""Operator services that move credit: grants, purchases, refunds, adjustments, expiry.

Each is one transaction that posts through billing.ledger (so lots, debt and
the balance stay consistent), records an audit event in the same transaction,
and evaluates the low-balance alert (a credit may re-arm it, a debit fire it).

Where credit goes (see billing.ledger): purchases, refunds, positive adjustments
and positive usage corrections open a *paid* lot that never expires; grants a
*promotional* lot; purchases and grants may carry an expiry. Every new lot first
pays off the company's debt. Negative adjustments consume credit like usage.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from billing.alerts import evaluate_alerts
from billing.audit import record_audit
from billing.ledger import Posting, post_entry, write_off_lot
from billing.models import Company, CreditLot, LedgerEntry
from billing.money import plain, quantize_amount
from core.errors import InvalidInput

Kind = LedgerEntry.Kind
CREDIT_KINDS = (Kind.PURCHASE, Kind.GRANT)


def grant_credits(
    *,
    company: Company,
    amount: Decimal | str,
    kind: str = Kind.PURCHASE,
    reason: str,
    actor=None,
    actor_label: str = "",
    expires_at: datetime | None = None,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> Posting:
    """Add paid (`purchase`) or promotional (`grant`) credit, optionally expiring."""
    if kind not in CREDIT_KINDS:
        raise InvalidInput("kind must be purchase or grant.", fields={"kind": "purchase or grant"})
    if expires_at is not None and expires_at <= (now or timezone.now()):
        raise InvalidInput(
            "expires_at must be in the future.", fields={"expires_at": "must be in the future"}
        )
    return _operator_posting(
        company=company,
        kind=kind,
        amount=_positive(amount),
        reason=reason,
        actor=actor,
        actor_label=actor_label,
        expires_at=expires_at,
        idempotency_key=idempotency_key,
    )


def refund_credits(
    *,
    company: Company,
    amount: Decimal | str,
    reason: str,
    actor=None,
    actor_label: str = "",
    idempotency_key: str | None = None,
) -> Posting:
    """Give credit back (e.g. for failed generations): a paid, never-expiring lot."""
    return _operator_posting(
        company=company,
        kind=Kind.REFUND,
        amount=_positive(amount),
        reason=reason,
        actor=actor,
        actor_label=actor_label,
        idempotency_key=idempotency_key,
    )


def adjust_credits(
    *,
    company: Company,
    amount: Decimal | str,
    reason: str,
    actor=None,
    actor_label: str = "",
    idempotency_key: str | None = None,
) -> Posting:
    """A manual correction, + or -: positive opens a paid lot, negative consumes credit."""
    value = _amount(amount)
    if value == 0:
        raise InvalidInput("amount must not be zero.", fields={"amount": "not zero"})
    return _operator_posting(
        company=company,
        kind=Kind.ADJUSTMENT,
        amount=value,
        reason=reason,
        actor=actor,
        actor_label=actor_label,
        idempotency_key=idempotency_key,
    )


def post_credit(
    *,
    company: Company,
    kind: str,
    amount: Decimal | str,
    reason: str,
    actor=None,
    actor_label: str = "",
    expires_at: datetime | None = None,
    idempotency_key: str | None = None,
) -> Posting:
    """One entry point for forms: dispatch a purchase, grant, refund or adjustment."""
    common = dict(
        company=company,
        amount=amount,
        reason=reason,
        actor=actor,
        actor_label=actor_label,
        idempotency_key=idempotency_key,
    )
    if kind in CREDIT_KINDS:
        return grant_credits(kind=kind, expires_at=expires_at, **common)
    if expires_at is not None:
        raise InvalidInput(
            "Only purchases and grants can expire.", fields={"expires_at": "not for this kind"}
        )
    if kind == Kind.REFUND:
        return refund_credits(**common)
    if kind == Kind.ADJUSTMENT:
        return adjust_credits(**common)
    raise InvalidInput(f"Unknown kind {kind!r}.", fields={"kind": "unknown"})


def _amount(amount: Decimal | str) -> Decimal:
    try:
        return quantize_amount(amount)
    except ValueError as exc:
        raise InvalidInput(str(exc), fields={"amount": str(exc)})


def _positive(amount: Decimal | str) -> Decimal:
    value = _amount(amount)
    if value <= 0:
        raise InvalidInput("amount must be positive.", fields={"amount": "must be > 0"})
    return value


def _operator_posting(
    *,
    company: Company,
    kind: str,
    amount: Decimal,
    reason: str,
    actor,
    actor_label: str,
    idempotency_key: str | None,
    expires_at: datetime | None = None,
) -> Posting:
    if not (reason or "").strip():
        raise InvalidInput("A reason is required.", fields={"reason": "is required"})
    key = idempotency_key or f"{kind}:{uuid.uuid4()}"
    with transaction.atomic():
        posting = post_entry(
            company=company,
            kind=kind,
            amount=amount,
            idempotency_key=key,
            reason=reason.strip(),
            actor=actor if getattr(actor, "pk", None) else None,
            expires_at=expires_at,
        )
        if posting.created:
            entry = posting.entry
            _audit_and_alert(entry, company, actor=actor, actor_label=actor_label)
    return posting


def _audit_and_alert(entry: LedgerEntry, company: Company, *, actor, actor_label: str) -> None:
    record_audit(
        action=f"credit.{entry.kind}",
        actor=actor,
        actor_label=actor_label,
        company=company,
        obj=entry,
        after={
            "amount": plain(entry.amount),
            "balance_after": plain(entry.balance_after),
            "reason": entry.reason,
            "expires_at": entry.expires_at.isoformat() if entry.expires_at else None,
        },
    )
    evaluate_alerts(
        company=company,
        balance_before=entry.balance_after - entry.amount,
        balance_after=entry.balance_after,
    )


# --- Expiry ---------------------------------------------------------------------


@dataclass(frozen=True)
class Expiry:
    lot_id: int
    company_id: uuid.UUID
    amount: Decimal  # written off (positive); what would be, on a dry run
    entry_id: int | None


def due_lots(*, now: datetime, company: Company | None = None) -> QuerySet[CreditLot]:
    """Lots whose expiry has passed and that still hold credit (partial index)."""
    lots = CreditLot.objects.filter(remaining__gt=0, expires_at__lte=now)
    if company is not None:
        lots = lots.filter(company=company)
    return lots.order_by("expires_at", "id")


def expire_lot(*, lot_id: int, now: datetime | None = None) -> Expiry | None:
    """Write off what is left of one expired lot (billing.ledger.write_off_lot), audited,
    with its low-balance alert; None when there is nothing (left) to write off."""
    now = now or timezone.now()
    with transaction.atomic():
        posting = write_off_lot(lot_id, now=now)
        if posting is None:
            return None
        entry = posting.entry
        record_audit(
            action="credit.expiry",
            actor_label="expire_credits",
            company=entry.company,
            obj=entry,
            after={"lot": lot_id, "amount": plain(entry.amount)},
        )
        evaluate_alerts(
            company=entry.company,
            balance_before=entry.balance_after - entry.amount,
            balance_after=entry.balance_after,
        )
    return Expiry(lot_id, entry.company_id, -entry.amount, entry.pk)

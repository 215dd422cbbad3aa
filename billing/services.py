"""Writes that move money or define tenants. One transaction each.

Lock order, everywhere in the code base: usage rows, then rollup rows, then
the company's CreditBalance row. Keeping one order means concurrent
recordings, reconciliations and postings cannot deadlock one another.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.dbutil import param
from billing.models import APIKey, AuditEvent, Company, CreditBalance, LedgerEntry, ModelPrice
from billing.money import AmountError, parse_price, quantize_amount


class BillingError(Exception):
    """Base for errors a caller can act on. `code` is stable, `fields` names inputs."""

    code = "billing_error"

    def __init__(self, message: str, *, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class CompanyNotFound(BillingError):
    code = "company_not_found"


class IdempotencyConflict(BillingError):
    code = "idempotency_conflict"


def resolve_company(ref: str | uuid.UUID | Company) -> Company:
    """A company by its UUID or its external id (UUID first, then external id)."""
    if isinstance(ref, Company):
        return ref
    text = str(ref).strip()
    company = None
    try:
        company = Company.objects.filter(pk=uuid.UUID(text)).first()
    except ValueError:
        pass
    if company is None and text:
        company = Company.objects.filter(external_id=text).first()
    if company is None:
        raise CompanyNotFound(
            f"No company has the id or external id {text!r}.", fields={"company": "unknown company"}
        )
    return company


# --- The ledger ---------------------------------------------------------------


@dataclass(frozen=True)
class Posting:
    entry: LedgerEntry
    created: bool


def _apply_to_balance(company_id: uuid.UUID, delta: Decimal) -> Decimal:
    """`balance = balance + delta` on the company's row (locking it); the new balance."""
    if connection.vendor != "postgresql":
        return _apply_to_balance_in_python(company_id, delta)
    table = CreditBalance._meta.db_table
    sql = f"UPDATE {table} SET balance = balance + %s, updated_at = %s WHERE company_id = %s RETURNING balance"
    params = [
        param(CreditBalance, "balance", delta),
        param(CreditBalance, "updated_at", timezone.now()),
        param(CreditBalance, "company", company_id),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
        if row is None:
            CreditBalance.objects.bulk_create(
                [CreditBalance(company_id=company_id)], ignore_conflicts=True
            )
            cursor.execute(sql, params)
            row = cursor.fetchone()
    return Decimal(row[0])


def _apply_to_balance_in_python(company_id: uuid.UUID, delta: Decimal) -> Decimal:
    """SQLite (the demo database) adds NUMERIC columns as floats, so add in Decimal.

    Safe there because SQLite has one writer at a time: the first UPDATE takes
    the database write lock before the balance is read.
    """
    CreditBalance.objects.bulk_create([CreditBalance(company_id=company_id)], ignore_conflicts=True)
    rows = CreditBalance.objects.filter(company_id=company_id)
    rows.update(updated_at=timezone.now())
    balance = rows.values_list("balance", flat=True).get() + delta
    rows.update(balance=balance)
    return balance


def post_entry(
    *,
    company: Company,
    kind: str,
    amount: Decimal | str,
    idempotency_key: str,
    reason: str = "",
    actor=None,
    usage_id: uuid.UUID | None = None,
    expires_at: datetime | None = None,
    metadata: dict | None = None,
) -> Posting:
    """Append one ledger entry and move the balance by exactly its amount.

    Idempotent on (company, idempotency_key): a replay returns the first entry.
    A replay with a different kind or amount is an IdempotencyConflict.
    """
    amount = quantize_amount(amount)
    with transaction.atomic():
        existing = LedgerEntry.objects.filter(
            company=company, idempotency_key=idempotency_key
        ).first()
        if existing is not None:
            return Posting(_same_posting(existing, kind, amount), created=False)
        try:
            with transaction.atomic():
                balance = _apply_to_balance(company.pk, amount)
                entry = LedgerEntry.objects.create(
                    company=company,
                    kind=kind,
                    amount=amount,
                    balance_after=balance,
                    reason=reason,
                    actor=actor,
                    idempotency_key=idempotency_key,
                    usage_id=usage_id,
                    expires_at=expires_at,
                    metadata=metadata or {},
                )
        except IntegrityError:
            existing = LedgerEntry.objects.filter(
                company=company, idempotency_key=idempotency_key
            ).first()
            if existing is None:
                raise
            return Posting(_same_posting(existing, kind, amount), created=False)
    return Posting(entry, created=True)


def _same_posting(entry: LedgerEntry, kind: str, amount: Decimal) -> LedgerEntry:
    if entry.kind != kind or entry.amount != amount:
        raise IdempotencyConflict(
            f"Idempotency key {entry.idempotency_key!r} was already used for a "
            f"{entry.kind} of {entry.amount}.",
            fields={"idempotency_key": "already used with a different posting"},
        )
    return entry


def current_balance(company: Company) -> Decimal:
    row = CreditBalance.objects.filter(company=company).values_list("balance", flat=True).first()
    return row if row is not None else Decimal(0)


# --- API keys -----------------------------------------------------------------

API_KEY_PREFIX = "qg"


def hash_api_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def create_api_key(
    *, name: str, company: Company | None = None, created_by=None
) -> tuple[APIKey, str]:
    """Create a key; returns it and the secret, which is never stored or shown again."""
    prefix = secrets.token_hex(4)
    secret = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    key = APIKey.objects.create(
        name=name,
        prefix=prefix,
        key_hash=hash_api_key(secret),
        company=company,
        created_by=created_by,
    )
    record_audit(
        action="api_key.create",
        actor=created_by,
        company=company,
        obj=key,
        after={"name": name, "prefix": prefix, "platform": company is None},
    )
    return key, secret


def record_audit(
    *,
    action: str,
    actor=None,
    actor_label: str = "",
    company: Company | None = None,
    obj=None,
    before: dict | None = None,
    after: dict | None = None,
) -> AuditEvent:
    """Write who did what; call inside the transaction of the change itself."""
    return AuditEvent.objects.create(
        action=action,
        actor=actor if getattr(actor, "pk", None) else None,
        actor_label=actor_label,
        company=company,
        object_type=type(obj).__name__ if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        before=before,
        after=after,
    )


# --- Model prices -----------------------------------------------------------------


class PriceError(BillingError):
    code = "invalid_price"


class PriceOverlap(BillingError):
    code = "price_overlap"


def set_model_price(
    *,
    model: str,
    input_per_million: Decimal | str,
    output_per_million: Decimal | str,
    cached_input_per_million: Decimal | str | None = None,
    effective_from: datetime,
    actor=None,
    actor_label: str = "",
) -> ModelPrice:
    """Add a price period of `model` from `effective_from`, closing its open period there.

    Prices are USD per million tokens, at most 6 decimal places (never rounded).
    Without a cached input price, cached tokens cost the input price. Refuses a
    start at or before an existing period's start, or inside a closed period
    (PriceOverlap); the database's exclusion constraint refuses the same.
    """
    model = (model or "").strip()
    if not model or len(model) > 100:
        raise PriceError("The model name is required (at most 100 characters).")
    if timezone.is_naive(effective_from):
        raise PriceError("effective_from must carry a UTC offset.")
    prices = _parse_prices(input_per_million, output_per_million, cached_input_per_million)
    try:
        with transaction.atomic():
            closed = _close_open_period(model, effective_from)
            price = ModelPrice.objects.create(
                model=model, effective_from=effective_from, created_by=_user(actor), **prices
            )
            record_audit(
                action="model_price.set",
                actor=actor,
                actor_label=actor_label,
                obj=price,
                before=closed,
                after={"model": model, "effective_from": effective_from.isoformat()}
                | {name: str(value) for name, value in prices.items()},
            )
    except IntegrityError as exc:  # a concurrent writer got there first
        raise PriceOverlap(f"A price period of {model} overlaps {effective_from}: {exc}") from exc
    return price


def _parse_prices(input_price, output_price, cached_price) -> dict[str, Decimal]:
    raw = {
        "input_per_million": input_price,
        "output_per_million": output_price,
        "cached_input_per_million": input_price if cached_price is None else cached_price,
    }
    prices, errors = {}, {}
    for name, value in raw.items():
        try:
            prices[name] = parse_price(value)
        except AmountError as exc:
            errors[name] = str(exc)
    if errors:
        raise PriceError("Invalid price: " + "; ".join(errors.values()), fields=errors)
    return prices


def _close_open_period(model: str, start: datetime) -> dict | None:
    """End the open period at `start`; refuse when `start` is not after every period."""
    periods = list(
        ModelPrice.objects.select_for_update().filter(model=model).order_by("effective_from")
    )
    for period in periods:
        ends_after_start = period.effective_to is not None and period.effective_to > start
        if period.effective_from >= start or ends_after_start:
            raise PriceOverlap(
                f"{model} already has a price from {period.effective_from.isoformat()}"
                f" to {period.effective_to.isoformat() if period.effective_to else 'open'}; "
                f"a new period must start after every existing one.",
                fields={"effective_from": "overlaps an existing price period"},
            )
    open_period = next((p for p in periods if p.effective_to is None), None)
    if open_period is None:
        return None
    open_period.effective_to = start
    open_period.save(update_fields=["effective_to"])
    return {"closed_price_id": open_period.pk, "effective_to": None}


def _user(actor):
    return actor if getattr(actor, "pk", None) else None

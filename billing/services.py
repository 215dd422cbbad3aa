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

from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.dbutil import param
from billing.models import (
    APIKey,
    AuditEvent,
    Company,
    CreditBalance,
    LedgerEntry,
    Membership,
)
from billing.money import quantize_amount


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


# --- Members (who may see a company's billing page) ------------------------------


@dataclass(frozen=True)
class MemberResult:
    membership: Membership
    user_created: bool
    created: bool
    role_changed: bool


def add_member(
    *,
    company: Company,
    username: str,
    role: str = Membership.Role.ADMIN,
    password: str | None = None,
    email: str = "",
    actor=None,
    actor_label: str = "",
) -> MemberResult:
    """Make `username` an admin or viewer of `company`, creating the user if needed.

    Idempotent: adding an existing member again changes nothing (or only the
    role). A password is set only on a user created here; existing users keep
    theirs. Members are never staff: they see only their company's page.
    """
    if role not in Membership.Role.values:
        raise BillingError(f"Unknown role {role!r}.", fields={"role": "must be admin or viewer"})
    if not username.strip():
        raise BillingError("A username is required.", fields={"username": "is required"})
    user_model = get_user_model()
    with transaction.atomic():
        user, user_created = user_model.objects.get_or_create(
            username=username, defaults={"email": email}
        )
        if user_created:
            if password:
                user.set_password(password)
            else:
                user.set_unusable_password()
            user.save(update_fields=["password"])
        membership, created = Membership.objects.get_or_create(
            user=user, company=company, defaults={"role": role}
        )
        role_changed = not created and membership.role != role
        if role_changed:
            membership.role = role
            membership.save(update_fields=["role"])
        if created or role_changed:
            record_audit(
                action="member.add" if created else "member.role",
                actor=actor,
                actor_label=actor_label,
                company=company,
                obj=membership,
                after={"username": username, "role": role, "user_created": user_created},
            )
    return MemberResult(membership, user_created, created, role_changed)

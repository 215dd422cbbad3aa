"""Writes that move money or define tenants. One transaction each.

Lock order, everywhere in the code base: usage rows, then rollup rows, then
the company's CreditBalance row. Keeping one order means concurrent
recordings, reconciliations and postings cannot deadlock one another.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from billing import lots
from billing.dbutil import (
    from_row,
    insert_rows,
    is_postgres,
    json_rows,
    param,
    recordset,
    select_list,
)
from billing.models import (
    APIKey,
    AuditEvent,
    Company,
    CreditBalance,
    LedgerEntry,
    Membership,
    ModelPrice,
    validate_timezone,
)
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


class AuthenticationFailed(BillingError):
    code = "unauthorized"


class NotPermitted(BillingError):
    code = "forbidden"


class InvalidInput(BillingError):
    code = "validation_error"


def resolve_company(ref: str | uuid.UUID | Company) -> Company:
    """A company by its UUID or its external id (UUID first, then external id)."""
    if isinstance(ref, Company):
        return ref
    text = str(ref).strip()
    company = resolve_companies([text]).get(text)
    if company is None:
        raise company_not_found(text)
    return company


def resolve_companies(refs: list[str]) -> dict[str, Company]:
    """Companies by UUID or external id, in one hand-written query (it runs on API
    requests); a UUID match wins over an external id that looks like one."""
    texts = {str(r).strip() for r in refs if r is not None and str(r).strip()}
    uuids = {u for u in (_as_uuid(t) for t in texts) if u is not None}
    if not texts:
        return {}
    sql = f"SELECT {select_list(Company, 'c')} FROM {Company._meta.db_table} c WHERE "
    if is_postgres():  # two JSON texts (encoded in C) instead of one parameter per reference
        by_id = "c.id IN (SELECT jsonb_array_elements_text(%s::jsonb)::uuid)"
        by_external = "c.external_id IN (SELECT jsonb_array_elements_text(%s::jsonb))"
        sql = f"{sql}{by_id} UNION ALL {sql}{by_external}"  # each on its unique index
        params = [json.dumps([str(u) for u in uuids]), json.dumps(list(texts))]
    else:
        conditions, params = [], []
        for column, values in (("id", uuids), ("external_id", texts)):
            if values:
                conditions.append(f"c.{column} IN ({', '.join(['%s'] * len(values))})")
                params += [param(Company, column, v) for v in values]
        sql += " OR ".join(conditions)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        found = [from_row(Company, row) for row in cursor.fetchall()]
    by_pk = {c.pk: c for c in found}
    by_external = {c.external_id: c for c in found if c.external_id}
    result = {}
    for text in texts:
        company = by_pk.get(_as_uuid(text)) or by_external.get(text)
        if company is not None:
            result[text] = company
    return result


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def company_not_found(ref: str) -> CompanyNotFound:
    return CompanyNotFound(
        f"No company has the id or external id {ref!r}.", fields={"company": "unknown company"}
    )


# --- The ledger ---------------------------------------------------------------


@dataclass(frozen=True)
class Posting:
    entry: LedgerEntry
    created: bool


def _apply_to_balance(
    company_id: uuid.UUID, delta: Decimal, *, consume: bool = True, now: datetime | None = None
) -> Decimal:
    """`balance = balance + delta` on the company's row (locking it); the new balance.

    The one choke point for balance moves. A negative delta is consumption and
    is allocated to the company's credit lots here, under the same row lock
    (billing.lots.consume: soonest-expiring credit first, the rest becomes
    debt). Positive deltas get their lot from post_entry, which knows the entry.
    Only expiry write-offs pass `consume=False` (they empty one given lot).
    """
    balance = _move_balance(company_id, delta)
    if consume and delta < 0:
        lots.consume(company_id, -delta, now=now or timezone.now())
    return balance


def _move_balance(company_id: uuid.UUID, delta: Decimal) -> Decimal:
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
    A positive posting opens a credit lot (paying off debt first); a negative
    one consumes credit (see `_apply_to_balance`). Expiry entries are written
    by billing.credits.expire_lot only, since they empty one particular lot.
    """
    if kind == LedgerEntry.Kind.EXPIRY:
        raise BillingError("Expiry entries are posted by billing.credits.expire_lot only.")
    return _post(
        company=company,
        kind=kind,
        amount=quantize_amount(amount),
        idempotency_key=idempotency_key,
        fields={
            "reason": reason,
            "actor": actor,
            "usage_id": usage_id,
            "expires_at": expires_at,
            "metadata": metadata or {},
        },
    )


def _post(
    *, company: Company, kind: str, amount: Decimal, idempotency_key: str, fields: dict
) -> Posting:
    """post_entry's body; expiry write-offs call it directly (no consumption)."""
    is_expiry = kind == LedgerEntry.Kind.EXPIRY
    with transaction.atomic():
        existing = LedgerEntry.objects.filter(
            company=company, idempotency_key=idempotency_key
        ).first()
        if existing is not None:
            return Posting(_same_posting(existing, kind, amount), created=False)
        try:
            with transaction.atomic():
                now = timezone.now()
                balance = _apply_to_balance(company.pk, amount, consume=not is_expiry, now=now)
                entry = LedgerEntry.objects.create(
                    company=company,
                    kind=kind,
                    amount=amount,
                    balance_after=balance,
                    idempotency_key=idempotency_key,
                    **fields,
                )
                if amount > 0:
                    lots.open_lot(entry, now=now)
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


def post_usage_debits(*, company: Company, debits: list[tuple[uuid.UUID, Decimal, str]]) -> Decimal:
    """Debit many usage rows of one company at once; returns the balance after the last.

    One balance update for the batch total and one bulk insert of a USAGE entry
    per usage row (key `usage:<usage_id>`, running `balance_after` in the order
    given), inside the caller's transaction. The caller inserted the usage rows
    in that same transaction, so none has a debit yet; the unique debit per
    usage row in the database guards against a double debit regardless.
    """
    if not debits:
        return current_balance(company)
    total = sum((cost for _, cost, _ in debits), Decimal(0))
    if connection.vendor == "postgresql":
        return _debit_usage_sql(company, debits, total)
    balance_after = _apply_to_balance(company.pk, -total)
    running = balance_after + total
    entries = []
    for usage_id, cost, reason in debits:
        running -= cost
        entries.append(
            LedgerEntry(
                company=company,
                kind=LedgerEntry.Kind.USAGE,
                amount=-cost,
                balance_after=running,
                reason=reason,
                idempotency_key=f"usage:{usage_id}",
                usage_id=usage_id,
            )
        )
    insert_rows(LedgerEntry, entries)
    return balance_after


# The balance UPDATE (which takes the company's row lock) and the ledger entries in
# one statement: the entries use the balance RETURNING gives, i.e. the value after
# any concurrent writer committed, exactly as a separate UPDATE ... RETURNING would.
_USAGE_DEBITS_SQL = f"""
WITH moved AS (
    UPDATE {CreditBalance._meta.db_table}
       SET balance = balance - %(total)s, updated_at = %(now)s
     WHERE company_id = %(company)s
 RETURNING balance
), entries AS (
    INSERT INTO {LedgerEntry._meta.db_table}
        (company_id, kind, amount, balance_after, reason, idempotency_key, usage_id, metadata, created_at)
    SELECT %(company)s, %(kind)s, -d.cost,
           moved.balance + %(total)s - sum(d.cost) OVER (ORDER BY d.n ROWS UNBOUNDED PRECEDING),
           d.reason, 'usage:' || d.usage_id::text, d.usage_id, '{{}}'::jsonb, %(now)s
      FROM moved,
           unnest(%(usage_ids)s::uuid[], %(costs)s::numeric[], %(reasons)s::text[])
           WITH ORDINALITY AS d(usage_id, cost, reason, n)
)
SELECT balance FROM moved
"""


def _debit_usage_sql(
    company: Company, debits: list[tuple[uuid.UUID, Decimal, str]], total: Decimal
) -> Decimal:
    """The portable path's balance move and entries in one round trip (running balance
    computed in SQL: three arrays travel instead of one object per entry), then the
    lot allocation under the row lock that statement took. Returns the balance after."""
    now = timezone.now()
    params = {
        "company": company.pk,
        "kind": LedgerEntry.Kind.USAGE.value,
        "total": total,
        "now": now,
        "usage_ids": [usage_id for usage_id, _, _ in debits],
        "costs": [cost for _, cost, _ in debits],
        "reasons": [reason for _, _, reason in debits],
    }
    with connection.cursor() as cursor:
        cursor.execute(_USAGE_DEBITS_SQL, params)
        row = cursor.fetchone()
        if row is None:  # no balance row yet: create it, then the same statement
            CreditBalance.objects.bulk_create(
                [CreditBalance(company_id=company.pk)], ignore_conflicts=True
            )
            cursor.execute(_USAGE_DEBITS_SQL, params)
            row = cursor.fetchone()
    if total > 0:
        lots.consume(company.pk, total, now=now)
    return Decimal(row[0])


# Several companies' debits in one statement: the balance rows are locked in
# company-id order first (ORDER BY ... FOR UPDATE locks as it sorts), then moved by
# each company's total; every entry's balance_after runs per company in the order
# given, from the balance RETURNING gives (the value after any concurrent writer).
_MANY_USAGE_DEBITS_SQL = f"""
WITH d AS (
    SELECT * FROM {
    recordset(
        "%(rows)s",
        [
            ("company_id", "uuid"),
            ("usage_id", "uuid"),
            ("cost", "numeric"),
            ("reason", "text"),
            ("n", "int"),
        ],
    )
}
), totals AS (
    SELECT company_id, SUM(cost) AS total FROM d GROUP BY company_id
), locked AS (
    SELECT company_id FROM {CreditBalance._meta.db_table}
     WHERE company_id = ANY(%(companies)s::uuid[])
  ORDER BY company_id FOR UPDATE
), moved AS (
    UPDATE {CreditBalance._meta.db_table} AS b
       SET balance = b.balance - t.total, updated_at = %(now)s
      FROM locked l JOIN totals t ON t.company_id = l.company_id
     WHERE b.company_id = l.company_id
 RETURNING b.company_id, b.balance
), entries AS (
    INSERT INTO {LedgerEntry._meta.db_table}
        (company_id, kind, amount, balance_after, reason, idempotency_key, usage_id, metadata, created_at)
    SELECT d.company_id, %(kind)s, -d.cost,
           m.balance + t.total - sum(d.cost) OVER (
               PARTITION BY d.company_id ORDER BY d.n ROWS UNBOUNDED PRECEDING),
           d.reason, 'usage:' || d.usage_id::text, d.usage_id, '{{}}'::jsonb, %(now)s
      FROM d JOIN moved m ON m.company_id = d.company_id
             JOIN totals t ON t.company_id = d.company_id
  ORDER BY d.n
)
SELECT company_id, balance FROM moved
"""

UsageDebits = dict[uuid.UUID, list[tuple[uuid.UUID, Decimal, str]]]


def post_usage_debits_many(*, companies: dict[uuid.UUID, Company], debits: UsageDebits) -> dict:
    """:func:`post_usage_debits` for several companies at once; balance after, per company.

    On PostgreSQL a constant number of statements whatever the number of
    companies: one locks the balance rows (company-id order), moves them and
    inserts the entries; one allocates every company's total to its lots (issued
    after the locks are held, so it reads the lots the last writer left). Other
    databases debit company by company, in the same order.
    """
    debits = {c: d for c, d in debits.items() if d}
    order = sorted(debits, key=str)
    if connection.vendor != "postgresql":
        return {c: post_usage_debits(company=companies[c], debits=debits[c]) for c in order}
    now = timezone.now()
    after = _debit_many_sql(debits, order, now)
    missing = [c for c in order if c not in after]
    if missing:  # no balance row yet: create them, then the same statement for those
        CreditBalance.objects.bulk_create(
            [CreditBalance(company_id=c) for c in missing], ignore_conflicts=True
        )
        after.update(_debit_many_sql(debits, missing, now))
    totals = {c: sum((cost for _, cost, _ in debits[c]), Decimal(0)) for c in order}
    lots.consume_many(totals, now=now)
    return after


def _debit_many_sql(debits: UsageDebits, order: list[uuid.UUID], now: datetime) -> dict:
    rows = [(c, *debit) for c in order for debit in debits[c]]
    params = {
        "companies": order,
        "rows": json_rows([(*row, n) for n, row in enumerate(rows)]),
        "kind": LedgerEntry.Kind.USAGE.value,
        "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(_MANY_USAGE_DEBITS_SQL, params)
        return {_as_company_id(c): Decimal(b) for c, b in cursor.fetchall()}


def _as_company_id(value: object) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


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


def authenticate_api_key(secret: str, *, now: datetime | None = None) -> APIKey:
    """The active key whose secret this is, or AuthenticationFailed.

    The prefix finds the row; the hash is compared in constant time. The same
    error for every failure, so a caller learns nothing about which part was wrong.
    `last_used_at` is written at most once a minute per key, not on every request.
    """
    failure = AuthenticationFailed("Invalid or revoked API key.")
    parts = (secret or "").strip().split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1]:
        raise failure
    key = _key_with_company(parts[1])
    if key is None or not hmac.compare_digest(key.key_hash, hash_api_key(secret.strip())):
        raise failure
    if key.revoked_at is not None:
        raise failure
    now = now or timezone.now()
    stale = now - timedelta(minutes=1)
    if key.last_used_at is None or key.last_used_at < stale:
        APIKey.objects.filter(pk=key.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale)
        ).update(last_used_at=now)
        key.last_used_at = now
    return key


@functools.cache
def _key_sql() -> str:
    key_table, company_table = APIKey._meta.db_table, Company._meta.db_table
    return (
        f"SELECT {select_list(APIKey, 'k')}, {select_list(Company, 'c')} FROM {key_table} k"
        f" LEFT JOIN {company_table} c ON c.id = k.company_id WHERE k.prefix = %s"
    )


def _key_with_company(prefix: str) -> APIKey | None:
    """The key with this prefix and its company (None for a platform key), in one
    hand-written query: it runs on every API request."""
    with connection.cursor() as cursor:
        cursor.execute(_key_sql(), [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    key = from_row(APIKey, row)
    company = from_row(Company, row, len(APIKey._meta.concrete_fields)) if key.company_id else None
    APIKey._meta.get_field("company").set_cached_value(key, company)
    return key


@transaction.atomic
def revoke_api_key(*, prefix: str, actor=None, actor_label: str = "") -> tuple[APIKey, bool]:
    """Revoke the key with this prefix; returns it and whether it was active until now."""
    key = APIKey.objects.select_for_update().filter(prefix=prefix).first()
    if key is None:
        raise BillingError(f"No API key has the prefix {prefix!r}.", fields={"prefix": "unknown"})
    if key.revoked_at is not None:
        return key, False
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    record_audit(
        action="api_key.revoke",
        actor=actor,
        actor_label=actor_label,
        company=key.company,
        obj=key,
        before={"revoked_at": None},
        after={"revoked_at": key.revoked_at.isoformat()},
    )
    return key, True


# --- Tenants from the main product --------------------------------------------


def _company_fields(company: Company) -> dict:
    return {"name": company.name, "external_id": company.external_id, "timezone": company.timezone}


def upsert_company(
    *, external_id: str, name: str, timezone_name: str = "UTC", actor_label: str = ""
) -> tuple[Company, bool]:
    """Create or update the company of a tenant of the main product, by external id.

    Idempotent: the same call twice changes nothing the second time (and audits
    nothing). Returns the company and whether it was created.
    """
    errors = _company_input_errors(external_id, name, timezone_name)
    if errors:
        raise InvalidInput(
            "Invalid company: " + "; ".join(f"{k} {v}" for k, v in errors.items()), fields=errors
        )
    wanted = {"name": name.strip(), "external_id": external_id.strip(), "timezone": timezone_name}
    with transaction.atomic():
        company = (
            Company.objects.select_for_update().filter(external_id=wanted["external_id"]).first()
        )
        created = company is None
        if created:
            try:
                with transaction.atomic():
                    company = Company.objects.create(**wanted)
            except IntegrityError:  # created by a concurrent call: update that one
                company = Company.objects.select_for_update().get(external_id=wanted["external_id"])
                created = False
        before = _company_fields(company)
        if not created and before == wanted:
            return company, False
        if not created and company.timezone != timezone_name:
            refuse_timezone_change_with_usage(company)
        if not created:
            for name_, value in wanted.items():
                setattr(company, name_, value)
            company.save(update_fields=[*wanted, "updated_at"])
        record_audit(
            action="company.create" if created else "company.update",
            actor_label=actor_label,
            company=company,
            obj=company,
            before=None if created else before,
            after=wanted,
        )
    return company, created


TIMEZONE_CHANGE_HINT = (
    "its usage is already bucketed into days and months of its current time zone; "
    "change it with `manage.py change_company_timezone`, which re-buckets that usage"
)


def refuse_timezone_change_with_usage(company: Company) -> None:
    """A time zone change would silently move report days, monthly spend and limits."""
    if company.usage.exists():  # reverse relation: billing imports nothing of usage
        raise InvalidInput(
            f"The time zone of {company.name} cannot change here: {TIMEZONE_CHANGE_HINT}.",
            fields={"timezone": "cannot change once usage is recorded"},
        )


def _company_input_errors(external_id: str, name: str, timezone_name: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not (external_id or "").strip():
        errors["external_id"] = "is required"
    elif len(external_id.strip()) > 200:
        errors["external_id"] = "must be at most 200 characters"
    if not (name or "").strip():
        errors["name"] = "is required"
    elif len(name.strip()) > 200:
        errors["name"] = "must be at most 200 characters"
    try:
        validate_timezone(timezone_name)
    except ValidationError:
        errors["timezone"] = "must be an IANA time zone such as Europe/Berlin"
    return errors


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


def snapshot(obj, fields: list[str]) -> dict[str, Any]:
    """JSON-safe values of `fields` on `obj` (Decimals and datetimes as exact strings)."""
    return {name: _json_safe(getattr(obj, name)) for name in fields}


def _json_safe(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")  # canonical: 10.000000 and 10 compare equal
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def audit_changes(
    *,
    action: str,
    actor=None,
    obj,
    before: dict[str, Any],
    after: dict[str, Any],
    company: Company | None = None,
) -> AuditEvent | None:
    """Record only the fields that changed, before and after; nothing if none did.

    For staff edits in the admin (credit policy, model prices); call it in the
    transaction of the change (the admin wraps each save in one).
    """
    changed = [name for name in after if before.get(name) != after[name]]
    if not changed:
        return None
    return record_audit(
        action=action,
        actor=actor,
        company=company,
        obj=obj,
        before={name: before.get(name) for name in changed} if before else None,
        after={name: after[name] for name in changed},
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

"""The ledger's writer: the only code that writes balance, ledger and credit-lot rows.

Every movement of credit is one append-only LedgerEntry, and the company's
CreditBalance moves by exactly its amount in the same transaction:

- :func:`post_entry`: one entry (purchase, grant, refund, adjustment, usage
  correction, a late usage debit), idempotent per company;
- :func:`post_usage_debits`: the USAGE entries of freshly recorded usage rows,
  many companies in a constant number of statements;
- :func:`write_off_lot`: the EXPIRY entry that empties one expired lot.

Credit lives in lots (CreditLot, one per positive posting). A consumption draws
from the open, unexpired lots, soonest expiry first, never-expiring last,
oldest first among equals; what no lot covers becomes `CreditBalance.debt`,
which the next lot pays off first. Lot rows need no locks of their own: every
writer of a company's lots holds its balance row, taken by the balance UPDATE
before any lot is read. So at every commit
`balance == sum(remaining) - debt`, and each lot's
`remaining == amount - consumed - expired`.

Lock order, everywhere in the code base: usage rows, then rollup rows, then
the company's CreditBalance row. Keeping one order means concurrent
recordings, reconciliations and postings cannot deadlock one another.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.models import Company, CreditBalance, CreditLot, LedgerEntry
from billing.money import quantize_amount
from core.errors import IdempotencyConflict, ServiceError
from core.sql import json_rows, recordset

ZERO = Decimal(0)
PROMOTIONAL_KINDS = {LedgerEntry.Kind.GRANT}

_BALANCE = CreditBalance._meta.db_table
_LEDGER = LedgerEntry._meta.db_table
_LOT = CreditLot._meta.db_table


@dataclass(frozen=True)
class Posting:
    entry: LedgerEntry
    created: bool


def current_balance(company: Company) -> Decimal:
    row = CreditBalance.objects.filter(company=company).values_list("balance", flat=True).first()
    return row if row is not None else ZERO


def lock_balance(company_id: uuid.UUID) -> Decimal:
    """Lock the company's balance row (creating it on first use); its balance.

    The admission of a hold (usage.reservations) serialises here with every
    posting of the company: a debit moves the balance under this row lock, so
    an admission that got it sees every committed debit and hold before it.
    Call it inside a transaction.
    """
    for _ in range(2):
        row = (
            CreditBalance.objects.select_for_update()
            .filter(company_id=company_id)
            .values_list("balance", flat=True)
            .first()
        )
        if row is not None:
            return row
        _ensure_balance_rows([company_id])
    raise RuntimeError(f"no balance row for {company_id}")  # pragma: no cover


def _ensure_balance_rows(company_ids: list[uuid.UUID]) -> None:
    """A company gets its balance row on its first posting (the API creates none)."""
    CreditBalance.objects.bulk_create(
        [CreditBalance(company_id=c) for c in company_ids], ignore_conflicts=True
    )


# --- One entry ------------------------------------------------------------------------

_MOVE_BALANCE = f"""
UPDATE {_BALANCE} SET balance = balance + %(delta)s, updated_at = %(now)s
 WHERE company_id = %(company)s RETURNING balance
"""


def _move_balance(company_id: uuid.UUID, delta: Decimal, now: datetime) -> Decimal:
    """`balance = balance + delta` on the company's row, locking it; the new balance."""
    params = {"delta": delta, "now": now, "company": company_id}
    with connection.cursor() as cursor:
        cursor.execute(_MOVE_BALANCE, params)
        row = cursor.fetchone()
        if row is None:
            _ensure_balance_rows([company_id])
            cursor.execute(_MOVE_BALANCE, params)
            row = cursor.fetchone()
    return row[0]


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
    one consumes credit. Expiry entries are written by :func:`write_off_lot`
    only, since they empty one particular lot.
    """
    if kind == LedgerEntry.Kind.EXPIRY:
        raise ServiceError("Expiry entries are posted by billing.ledger.write_off_lot only.")
    fields = {
        "reason": reason,
        "actor": actor if getattr(actor, "pk", None) else None,
        "usage_id": usage_id,
        "expires_at": expires_at,
        "metadata": metadata or {},
    }
    return _post(company, kind, quantize_amount(amount), idempotency_key, fields)


def _post(company: Company, kind: str, amount: Decimal, key: str, fields: dict) -> Posting:
    with transaction.atomic():
        existing = LedgerEntry.objects.filter(company=company, idempotency_key=key).first()
        if existing is not None:
            return Posting(_same_posting(existing, kind, amount), created=False)
        try:
            with transaction.atomic():
                entry = _append(company, kind, amount, key, fields)
        except IntegrityError:
            existing = LedgerEntry.objects.filter(company=company, idempotency_key=key).first()
            if existing is None:
                raise
            return Posting(_same_posting(existing, kind, amount), created=False)
    return Posting(entry, created=True)


def _append(company: Company, kind: str, amount: Decimal, key: str, fields: dict) -> LedgerEntry:
    now = timezone.now()
    balance = _move_balance(company.pk, amount, now)
    if amount < 0 and kind != LedgerEntry.Kind.EXPIRY:
        _consume({company.pk: -amount}, now)
    entry = LedgerEntry.objects.create(
        company=company,
        kind=kind,
        amount=amount,
        balance_after=balance,
        idempotency_key=key,
        **fields,
    )
    if amount > 0:
        _open_lot(entry, now)
    return entry


def _same_posting(entry: LedgerEntry, kind: str, amount: Decimal) -> LedgerEntry:
    if entry.kind != kind or entry.amount != amount:
        raise IdempotencyConflict(
            f"Idempotency key {entry.idempotency_key!r} was already used for a "
            f"{entry.kind} of {entry.amount}.",
            fields={"idempotency_key": "already used with a different posting"},
        )
    return entry


# --- Usage debits ------------------------------------------------------------------------

# Several companies' debits in one statement: the balance rows are locked in
# company-id order first (ORDER BY ... FOR UPDATE locks as it sorts), then moved by
# each company's total; every entry's balance_after runs per company in the order
# given, from the balance RETURNING gives (the value after any concurrent writer).
_USAGE_DEBITS = f"""
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
    SELECT company_id FROM {_BALANCE}
     WHERE company_id = ANY(%(companies)s::uuid[])
  ORDER BY company_id FOR UPDATE
), moved AS (
    UPDATE {_BALANCE} AS b
       SET balance = b.balance - t.total, updated_at = %(now)s
      FROM locked l JOIN totals t ON t.company_id = l.company_id
     WHERE b.company_id = l.company_id
 RETURNING b.company_id, b.balance
), entries AS (
    INSERT INTO {_LEDGER}
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


def post_usage_debits(*, debits: UsageDebits, now: datetime | None = None) -> dict:
    """One USAGE entry per usage row (key `usage:<usage_id>`); the balance after, per company.

    `debits` maps a company id to its (usage id, cost, reason) triples, in the
    order their running `balance_after` follows. A constant number of
    statements whatever the number of companies: one locks the balance rows
    (company-id order), moves each by its total and inserts the entries; one
    allocates every company's total to its lots (issued after the locks are
    held, so it reads the lots the last writer left). Call it inside the
    transaction that inserted the usage rows: none has a debit yet, and the
    unique debit per usage row in the database refuses a second one regardless.
    """
    debits = {c: d for c, d in debits.items() if d}
    order = sorted(debits, key=str)
    if not order:
        return {}
    now = now or timezone.now()
    after = _debit(debits, order, now)
    missing = [c for c in order if c not in after]
    if missing:  # no balance row yet: create them, then the same statement for those
        _ensure_balance_rows(missing)
        after.update(_debit(debits, missing, now))
    _consume({c: sum((cost for _, cost, _ in debits[c]), ZERO) for c in order}, now)
    return after


def _debit(debits: UsageDebits, order: list[uuid.UUID], now: datetime) -> dict:
    rows = [(c, *debit) for c in order for debit in debits[c]]
    params = {
        "companies": order,
        "rows": json_rows([(*row, n) for n, row in enumerate(rows)]),
        "kind": LedgerEntry.Kind.USAGE.value,
        "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(_USAGE_DEBITS, params)
        return dict(cursor.fetchall())


# --- Credit lots ---------------------------------------------------------------------------

# The allocation for one or several companies in one statement: the open lots in
# allocation order with the running total before each lot (restarting per
# company), take from each lot until the amount is covered, and add what was not
# covered to the debt (only touching rows that have some). Run it only while every
# company's balance row is locked, in a statement issued after the locks were
# taken, so that it reads the lots as the last writer left them.
_CONSUME = f"""
WITH amounts AS (
    SELECT * FROM unnest(%(companies)s::uuid[], %(amounts)s::numeric[]) AS a(company_id, amount)
),
open_lots AS (
    SELECT lot.id, lot.company_id, lot.remaining, a.amount,
           SUM(lot.remaining) OVER (
               PARTITION BY lot.company_id ORDER BY lot.expires_at ASC NULLS LAST, lot.id
           ) - lot.remaining AS before
      FROM {_LOT} lot JOIN amounts a ON a.company_id = lot.company_id
     WHERE lot.remaining > 0 AND (lot.expires_at IS NULL OR lot.expires_at > %(now)s)
),
taken AS (
    UPDATE {_LOT} AS lot
       SET consumed = lot.consumed + LEAST(o.remaining, o.amount - o.before),
           remaining = lot.remaining - LEAST(o.remaining, o.amount - o.before),
           last_consumed_at = %(now)s
      FROM open_lots o
     WHERE lot.id = o.id AND o.before < o.amount
 RETURNING lot.company_id, LEAST(o.remaining, o.amount - o.before) AS took
),
covered AS (
    SELECT a.company_id, a.amount - COALESCE(SUM(t.took), 0) AS uncovered
      FROM amounts a LEFT JOIN taken t ON t.company_id = a.company_id
  GROUP BY a.company_id, a.amount
)
UPDATE {_BALANCE} AS b
   SET debt = b.debt + c.uncovered
  FROM covered c
 WHERE b.company_id = c.company_id AND c.uncovered > 0
"""


def _consume(amounts: dict[uuid.UUID, Decimal], now: datetime) -> None:
    """Allocate each company's consumption to its lots, the rest to its debt."""
    amounts = {company_id: amount for company_id, amount in amounts.items() if amount > 0}
    if not amounts:
        return
    companies = sorted(amounts, key=str)
    params = {"companies": companies, "amounts": [amounts[c] for c in companies], "now": now}
    with connection.cursor() as cursor:
        cursor.execute(_CONSUME, params)


def _open_lot(entry: LedgerEntry, now: datetime) -> CreditLot:
    """A lot for a positive posting; it pays off the company's debt first.

    Credit that is already expired when posted pays nothing off (that would be
    consuming it after its expiry); expire_credits writes it off.
    """
    funding = (
        CreditLot.Funding.PROMOTIONAL if entry.kind in PROMOTIONAL_KINDS else CreditLot.Funding.PAID
    )
    balance_row = CreditBalance.objects.filter(company_id=entry.company_id)
    usable = entry.expires_at is None or entry.expires_at > now
    debt = balance_row.values_list("debt", flat=True).get() if usable else ZERO
    paid_off = min(debt, entry.amount)
    if paid_off > 0:
        balance_row.update(debt=debt - paid_off)
    return CreditLot.objects.create(
        company_id=entry.company_id,
        entry=entry,
        funding=funding,
        amount=entry.amount,
        consumed=paid_off,
        remaining=entry.amount - paid_off,
        expires_at=entry.expires_at,
        last_consumed_at=now if paid_off > 0 else None,
    )


def write_off_lot(lot_id: int, *, now: datetime) -> Posting | None:
    """Write off what is left of one expired lot with one `expiry:<lot>` entry.

    Takes the company's balance row lock before reading the lot, so it cannot
    race a consumption, and a second host running the same expiry finds the
    lot empty (and the idempotency key taken) and does nothing. None when the
    lot holds nothing to write off. Call it inside a transaction.
    """
    company_id = CreditLot.objects.values_list("company_id", flat=True).get(pk=lot_id)
    CreditBalance.objects.select_for_update().filter(company_id=company_id).exists()
    lot = CreditLot.objects.select_related("company").get(pk=lot_id)
    if lot.remaining <= 0 or lot.expires_at is None or lot.expires_at > now:
        return None
    posting = _post(
        lot.company,
        LedgerEntry.Kind.EXPIRY,
        -lot.remaining,
        f"expiry:{lot.pk}",
        {
            "reason": f"Unused credit of lot {lot.pk} expired at {lot.expires_at:%Y-%m-%d %H:%M} UTC",
            "metadata": {"lot": lot.pk, "source_entry": lot.entry_id},
        },
    )
    CreditLot.objects.filter(pk=lot.pk, remaining=lot.remaining).update(
        expired=lot.expired + lot.remaining, remaining=ZERO
    )
    return posting

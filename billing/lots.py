"""Credit lots: which credit a consumption draws from, and what a new credit pays off.

Called only from billing.services while the company's CreditBalance row is
locked (the UPDATE in `_apply_to_balance` takes that lock first), so lot rows
need no locks of their own: every writer of a company's lots holds its balance
row. See CreditLot for the invariants.

- :func:`consume`: allocate a consumption to the open, unexpired lots, soonest
  expiry first, never-expiring last, oldest first among equals; what no lot
  covers becomes `CreditBalance.debt`. On PostgreSQL one statement.
- :func:`open_lot`: turn a positive posting into a lot, paying off debt first.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from django.db import connection
from django.db.models import F, Q

from billing.dbutil import is_postgres, param
from billing.models import CreditBalance, CreditLot, LedgerEntry

ZERO = Decimal(0)
PROMOTIONAL_KINDS = {LedgerEntry.Kind.GRANT}

_LOT = CreditLot._meta.db_table
_BALANCE = CreditBalance._meta.db_table
# The statement reads the open lots in allocation order with the running total
# before each lot, takes from each lot until the amount is covered, and adds
# what was not covered to the debt (only touching the row when there is some).
_CONSUME_SQL = f"""
WITH open_lots AS (
    SELECT id, remaining,
           SUM(remaining) OVER (ORDER BY expires_at ASC NULLS LAST, id) - remaining AS before
      FROM {_LOT}
     WHERE company_id = %(company)s AND remaining > 0
       AND (expires_at IS NULL OR expires_at > %(now)s)
),
taken AS (
    UPDATE {_LOT} AS lot
       SET consumed = lot.consumed + LEAST(o.remaining, %(amount)s - o.before),
           remaining = lot.remaining - LEAST(o.remaining, %(amount)s - o.before),
           last_consumed_at = %(now)s
      FROM open_lots o
     WHERE lot.id = o.id AND o.before < %(amount)s
 RETURNING LEAST(o.remaining, %(amount)s - o.before) AS took
)
UPDATE {_BALANCE}
   SET debt = debt + (%(amount)s - (SELECT COALESCE(SUM(took), 0) FROM taken))
 WHERE company_id = %(company)s
   AND %(amount)s > (SELECT COALESCE(SUM(took), 0) FROM taken)
"""


def consume(company_id: uuid.UUID, amount: Decimal, *, now: datetime) -> None:
    """Allocate a consumption of `amount` (> 0) to the company's lots, rest to debt."""
    if amount <= 0:
        return
    if is_postgres():
        with connection.cursor() as cursor:
            cursor.execute(
                _CONSUME_SQL,
                {"company": param(CreditLot, "company", company_id), "amount": amount, "now": now},
            )
        return
    _consume_in_python(company_id, amount, now)


def _consume_in_python(company_id: uuid.UUID, amount: Decimal, now: datetime) -> None:
    """SQLite (one writer at a time): the same allocation, lot by lot."""
    left = amount
    open_lots = (
        CreditLot.objects.filter(company_id=company_id, remaining__gt=0)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by(F("expires_at").asc(nulls_last=True), "id")
    )
    for lot in open_lots:
        take = min(lot.remaining, left)
        CreditLot.objects.filter(pk=lot.pk).update(
            consumed=lot.consumed + take, remaining=lot.remaining - take, last_consumed_at=now
        )
        left -= take
        if not left:
            return
    row = CreditBalance.objects.filter(company_id=company_id)
    row.update(debt=row.values_list("debt", flat=True).get() + left)


def open_lot(entry: LedgerEntry, *, now: datetime) -> CreditLot:
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


# The same allocation for several companies in one statement: the running total
# restarts per company (PARTITION BY company_id). Run it only while every
# company's balance row is locked, in a statement issued after the locks were
# taken, so that it reads the lots as the last writer left them.
_CONSUME_MANY_SQL = f"""
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


def consume_many(amounts: dict[uuid.UUID, Decimal], *, now: datetime) -> None:
    """:func:`consume` for several companies at once (PostgreSQL: one statement).

    The caller holds every one of these companies' balance row locks.
    """
    amounts = {company_id: amount for company_id, amount in amounts.items() if amount > 0}
    if not amounts:
        return
    if not is_postgres():
        for company_id in sorted(amounts, key=str):
            _consume_in_python(company_id, amounts[company_id], now)
        return
    companies = sorted(amounts, key=str)
    with connection.cursor() as cursor:
        cursor.execute(
            _CONSUME_MANY_SQL,
            {"companies": companies, "amounts": [amounts[c] for c in companies], "now": now},
        )

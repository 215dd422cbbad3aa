"""Leases: one run of a cron command at a time, across hosts and through PgBouncer.

A command that works in many short transactions (reconcile_drafts,
expire_credits) cannot hold a transaction-level lock across them, and a
session-level advisory lock does not survive transaction pooling: PgBouncer
gives the server connection, and the lock with it, to another client after
each transaction. So the run claims a row of `ops_command_lease`:

- claimed by a conditional ``INSERT ... ON CONFLICT DO NOTHING`` or, when the
  row is there, ``UPDATE ... WHERE expires_at <= now``: of two runs at once
  exactly one gets it, the other is told who holds it and until when, and
  skips;
- renewed while the run works (:meth:`Lease.keep_alive`, called between
  batches), and deleted when it ends;
- left to expire when its run crashed or lost its database, so the next run
  after at most `seconds` takes over without anyone clearing it.

Times are the database's clock, so hosts whose clocks disagree still agree on
who holds a lease. A lease only saves duplicate work: each command's
correctness still comes from its row locks, conditional updates and
idempotency keys.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from django.db import DatabaseError, connection

from ops.models import CommandLease

logger = logging.getLogger(__name__)

# A crashed run keeps the next runs out for at most this long; a live run renews
# every quarter of it, so a run survives a stall of three quarters of it.
DEFAULT_SECONDS = 120.0
_TABLE = CommandLease._meta.db_table

# Two statements, so that a run which does not get the lease locks nothing:
# INSERT for a lease never taken, else UPDATE of an expired one. Of two runs at
# once, the second INSERT waits for the first and does nothing; the second
# UPDATE re-checks `expires_at` on the row the first just renewed and matches
# nothing.
_INSERT = f"""
INSERT INTO {_TABLE} (name, token, holder, acquired_at, expires_at)
VALUES (%(name)s, %(token)s, %(holder)s, clock_timestamp(),
        clock_timestamp() + make_interval(secs => %(seconds)s))
ON CONFLICT (name) DO NOTHING
RETURNING expires_at"""
_TAKE_OVER = f"""
UPDATE {_TABLE}
   SET token = %(token)s, holder = %(holder)s, acquired_at = clock_timestamp(),
       expires_at = clock_timestamp() + make_interval(secs => %(seconds)s)
 WHERE name = %(name)s AND expires_at <= clock_timestamp()
RETURNING expires_at"""
_HOLDER = f"SELECT holder, expires_at FROM {_TABLE} WHERE name = %(name)s"
_RENEW = f"""
UPDATE {_TABLE} SET expires_at = clock_timestamp() + make_interval(secs => %(seconds)s)
 WHERE name = %(name)s AND token = %(token)s
RETURNING expires_at"""
_RELEASE = f"DELETE FROM {_TABLE} WHERE name = %(name)s AND token = %(token)s"


class LeaseLost(RuntimeError):
    """The lease expired and another run took it: this run must stop."""


class Lease:
    """A claim on `name`: `acquired`, or else who holds it (`holder`) until `expires_at`."""

    def __init__(self, name: str, seconds: float) -> None:
        self.name, self.seconds = name, seconds
        self.token = uuid.uuid4()
        self.acquired = False
        self.holder = f"{socket.gethostname()} pid {os.getpid()}"
        self.expires_at: datetime | None = None
        self._renewed = 0.0

    def describe(self) -> str:
        until = f"{self.expires_at:%Y-%m-%d %H:%M:%S %Z}" if self.expires_at else "now"
        return f"{self.holder}, until {until}"

    def keep_alive(self) -> None:
        """Renew if a quarter of the lease has passed since the last renewal (cheap to call
        after every batch); raises LeaseLost if another run has taken it over."""
        if time.monotonic() - self._renewed >= self.seconds / 4:
            self.renew()

    def renew(self) -> None:
        row = _one(_RENEW, self._params())
        if row is None:
            raise LeaseLost(
                f"the lease {self.name!r} expired and another run took it over: stopping. "
                "What this run committed stays; the other run does the rest."
            )
        self.expires_at = row[0]
        self._renewed = time.monotonic()

    def _claim(self) -> None:
        for _ in range(2):  # the holder may finish between the claim and the look-up
            row = _one(_INSERT, self._params()) or _one(_TAKE_OVER, self._params())
            if row is not None:
                self.acquired, self.expires_at = True, row[0]
                self._renewed = time.monotonic()
                return
            held = _one(_HOLDER, {"name": self.name})
            if held is not None:
                self.holder, self.expires_at = held
                return

    def _release(self) -> None:
        try:
            _one(_RELEASE, self._params(), fetch=False)
        except DatabaseError as exc:  # it expires by itself
            logger.warning("lease %s not released (%s); it expires at %s", self.name, exc, self.expires_at)  # fmt: skip

    def _params(self) -> dict:
        return {
            "name": self.name,
            "token": self.token,
            "holder": self.holder,
            "seconds": self.seconds,
        }


@contextmanager
def command_lease(name: str, *, seconds: float = DEFAULT_SECONDS) -> Iterator[Lease]:
    """Claim the lease `name` for the block; the Lease says whether this run got it.

    The run that did not get it should skip, saying who holds it. Call
    `lease.keep_alive()` between the units of work.
    """
    lease = Lease(name, seconds)
    lease._claim()
    try:
        yield lease
    finally:
        if lease.acquired:
            lease._release()


def _one(sql: str, params: dict, *, fetch: bool = True) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() if fetch else None

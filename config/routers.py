"""Send the billing page's read queries to a read replica, when there is one and it is fresh.

Reads go to the replica only where code opts in with :func:`use_replica`
(a context manager and decorator) *and* a `replica` database is configured
(REPLICA_DATABASE_URL) *and* the replica is fresh: its replay lag is at most
REPLICA_MAX_LAG_SECONDS and it answers. Otherwise the block reads the primary,
so a page shows current money instead of stale money or an error. Everything
else, every write, and every migration use the primary. Opting in per block,
rather than routing all reads, keeps read-your-own-writes everywhere else.

Only wrap code that reads (report selectors, CSV exports); never wrap a block
that reads what it has just written in the same request, nor the balance or
quota check (a decision on a stale balance would admit spending already gone).

Freshness is measured on the replica itself, at most once per
REPLICA_CHECK_SECONDS per process, and the verdict changing is logged once
(`qg.replica`: "falling back to the primary", "back on the replica"), not
on every request.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from contextlib import ContextDecorator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

REPLICA_ALIAS = "replica"
logger = logging.getLogger("qg.replica")
_reads_on_replica: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "reads_on_replica", default=None
)

# Seconds behind the primary. Received == replayed means nothing is waiting to
# be applied, however long ago the primary last wrote (on a primary, or a mirror
# in tests, both are NULL: no lag). Otherwise the lag is the age of the last
# replayed commit; NULL there (nothing replayed yet) counts as unknown.
LAG_SQL = """
SELECT CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn()
            THEN 0
            ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())
       END"""
# A replica that does not answer is not asked again for this long, so pages do
# not each wait for its connect timeout.
UNREACHABLE_RETRY_SECONDS = 10.0


def replica_configured() -> bool:
    return REPLICA_ALIAS in connections.settings


@dataclass(frozen=True)
class Verdict:
    fresh: bool
    reason: str
    retry_after: float  # seconds until the next check


def measure_replica() -> Verdict:
    """Ask the replica how far behind it is."""
    check = settings.REPLICA_CHECK_SECONDS
    try:
        with connections[REPLICA_ALIAS].cursor() as cursor:
            cursor.execute(LAG_SQL)
            lag = cursor.fetchone()[0]
    except DatabaseError as exc:
        connections[REPLICA_ALIAS].close()  # reconnect on the next check
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Verdict(False, f"the replica does not answer ({first_line})", UNREACHABLE_RETRY_SECONDS)  # fmt: skip
    limit = settings.REPLICA_MAX_LAG_SECONDS
    if lag is None:
        return Verdict(False, "the replica has not replayed anything yet", check)
    if float(lag) > limit:
        return Verdict(False, f"replay lag {float(lag):.1f} s exceeds REPLICA_MAX_LAG_SECONDS={limit:g}", check)  # fmt: skip
    return Verdict(True, f"replay lag {float(lag):.1f} s", check)


class ReplicaHealth:
    """This process's view of the replica: fresh or not, re-checked when due."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fresh = True  # until a check says otherwise; the first bad check logs
        self._next_check = 0.0

    def fresh(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next_check:
                return self._fresh
            # One thread checks; the others keep the last verdict meanwhile.
            self._next_check = now + UNREACHABLE_RETRY_SECONDS
        verdict = measure_replica()
        with self._lock:
            self._next_check = time.monotonic() + verdict.retry_after
            changed, self._fresh = verdict.fresh != self._fresh, verdict.fresh
        if changed and verdict.fresh:
            logger.info("report reads back on the replica: %s", verdict.reason)
        elif changed:
            logger.warning("report reads falling back to the primary: %s", verdict.reason)
        return verdict.fresh


health = ReplicaHealth()


class use_replica(ContextDecorator):  # noqa: N801 - used like a function
    """Within this block (or decorated function), reads go to the replica if it is
    configured and fresh. A nested block keeps the outer block's decision."""

    def _recreate_cm(self) -> use_replica:
        # A decorated view runs on many threads at once: each call gets its own
        # instance, so one thread never resets another thread's token.
        return type(self)()

    def __enter__(self) -> use_replica:
        decided = _reads_on_replica.get()
        if decided is None:
            decided = replica_configured() and health.fresh()
        self._tokens = getattr(self, "_tokens", [])
        self._tokens.append(_reads_on_replica.set(decided))
        return self

    def __exit__(self, *exc: Any) -> None:
        _reads_on_replica.reset(self._tokens.pop())


class ReplicaRouter:
    """Reads in a use_replica() block -> replica (when fresh); everything else -> default."""

    def db_for_read(self, model, **hints) -> str | None:
        if _reads_on_replica.get() and replica_configured():
            return REPLICA_ALIAS
        return None

    def db_for_write(self, model, **hints) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints) -> bool:
        return True  # the replica holds the same rows as the primary

    def allow_migrate(self, db: str, app_label: str, **hints) -> bool | None:
        return False if db == REPLICA_ALIAS else None

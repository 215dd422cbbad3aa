"""Send the billing page's read queries to a read replica, when there is one.

Reads go to the replica only where code opts in with :func:`use_replica`
(a context manager and decorator) *and* a `replica` database is configured
(REPLICA_DATABASE_URL). Everything else, every write, and every migration use
the primary. Opting in per block, rather than routing all reads, keeps
read-your-own-writes everywhere else: a replica lags the primary by a moment,
which a monthly report tolerates and a just-recorded usage row does not.

Only wrap code that reads (report selectors, CSV exports); never wrap a block
that reads what it has just written in the same request.
"""

from __future__ import annotations

import contextvars
from contextlib import ContextDecorator
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

REPLICA_ALIAS = "replica"
_reads_on_replica: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "reads_on_replica", default=False
)


def replica_configured() -> bool:
    return REPLICA_ALIAS in connections.settings


class use_replica(ContextDecorator):  # noqa: N801 - used like a function
    """Within this block (or decorated function), reads go to the replica if configured."""

    def __enter__(self) -> use_replica:
        self._tokens = getattr(self, "_tokens", [])
        self._tokens.append(_reads_on_replica.set(True))
        return self

    def __exit__(self, *exc: Any) -> None:
        _reads_on_replica.reset(self._tokens.pop())


class ReplicaRouter:
    """Reads in a use_replica() block -> replica; everything else -> default."""

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

"""Transaction-level PostgreSQL advisory locks: mutual exclusion that survives any pooler."""

from __future__ import annotations

from django.db import connection


def advisory_xact_lock(name: str) -> bool:
    """Try the transaction-level advisory lock `name`; return whether this transaction got it.

    For work that is one transaction (`reprice_usage --apply`): the lock is held
    until that transaction commits or rolls back, or its connection drops, and
    never longer. Under PgBouncer's transaction pooling the transaction is the
    only span a server session is ours, which is why a session-level lock does
    not fit. Work spread over many transactions takes a lease instead
    (ops.leases).
    """
    if not connection.in_atomic_block:
        raise RuntimeError("advisory_xact_lock() must be called inside transaction.atomic()")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", [name])
        return bool(cursor.fetchone()[0])

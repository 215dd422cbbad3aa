"""PostgreSQL advisory locks: one run of a cron command at a time, across hosts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


@contextmanager
def advisory_lock(name: str) -> Iterator[bool]:
    """Try a session-level advisory lock named `name`; yield whether we got it.

    For cron commands that must not run twice at once (several hosts, one
    database): the run that does not get it skips instead of waiting. The lock
    is held across the command's many short transactions and released at the
    end. It only saves duplicate work: each command's correctness comes from
    its row locks and idempotency keys.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [name])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])

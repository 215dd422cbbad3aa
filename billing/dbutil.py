"""Small helpers for the few raw SQL statements (upserts, UPDATE ... RETURNING) and locks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection
from django.db.models import Model


def param(model: type[Model], field_name: str, value: Any) -> Any:
    """`value` as the database driver expects it for that column (UUIDs on SQLite, ...)."""
    field = model._meta.get_field(field_name)
    return field.get_db_prep_value(value, connection, prepared=False)


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@contextmanager
def advisory_lock(name: str) -> Iterator[bool]:
    """Try a session-level PostgreSQL advisory lock named `name`; yield whether we got it.

    For cron commands that must not run twice at once (several hosts, one
    database). The lock is held across the command's many short transactions
    and released at the end. On SQLite (one writer anyway) it always succeeds.
    """
    if not is_postgres():
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [name])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])

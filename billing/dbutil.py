"""Small helpers for the few raw SQL statements (upserts, UPDATE ... RETURNING, bulk
inserts) and advisory locks."""

from __future__ import annotations

import functools
import json
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


def _insert_value(field: Any, obj: Model) -> Any:
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        if getattr(obj, field.attname) is None:
            return field.pre_save(obj, True)
    return getattr(obj, field.attname)


def insert_rows(model: type[Model], rows: list[Model], *, suffix: str = "") -> list[tuple]:
    """INSERT unsaved instances in one statement; returns the rows of `suffix`'s RETURNING.

    On PostgreSQL the values travel as one array per column through `unnest`:
    a handful of parameters whatever the row count, so neither Django's
    per-value preparation nor the driver's placeholder parsing grows with the
    batch (bulk_create of 1,000 rows spent most of its time there). `suffix`
    is e.g. `ON CONFLICT (...) DO NOTHING RETURNING id`. Auto-increment keys
    are left to the database. SQLite gets a multi-row VALUES.
    """
    if not rows:
        return []
    fields, columns, casts = _insert_shape(model)
    table = model._meta.db_table
    if is_postgres():
        sql, arrays = unnest_insert(model, rows)
        return _execute(f"{sql} {suffix}", arrays)
    result: list[tuple] = []
    per_statement = max(1, 30_000 // len(fields))
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        params = [
            f.get_db_prep_save(_insert_value(f, r), connection) for r in chunk for f in fields
        ]
        row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
        values = ", ".join([row_sql] * len(chunk))
        result += _execute(f"INSERT INTO {table} ({columns}) VALUES {values} {suffix}", params)
    return result


def unnest_insert(model: type[Model], rows: list[Model]) -> tuple[str, list[list]]:
    """PostgreSQL: `INSERT INTO t (...) SELECT * FROM unnest(...)` and its column arrays,
    for callers that wrap the insert in a larger statement (a data-modifying CTE)."""
    fields, columns, casts = _insert_shape(model)
    arrays = [[_insert_value(f, r) for r in rows] for f in fields]
    for i, field in enumerate(fields):
        if field.get_internal_type() == "JSONField":
            arrays[i] = [None if v is None else json.dumps(v) for v in arrays[i]]
    sql = f"INSERT INTO {model._meta.db_table} ({columns}) SELECT * FROM unnest({casts})"
    return sql, arrays


@functools.cache
def _insert_shape(model: type[Model]) -> tuple[list, str, str]:
    """The inserted fields (all but an auto-increment key), their column list and array casts."""
    fields = [f for f in model._meta.concrete_fields if not (f.primary_key and f.db_returning)]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    casts = ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields)
    return fields, columns, casts


def _execute(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


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

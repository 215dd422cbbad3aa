"""Small helpers for the few raw SQL statements (upserts, UPDATE ... RETURNING)."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import Model


def param(model: type[Model], field_name: str, value: Any) -> Any:
    """`value` as the database driver expects it for that column (UUIDs on SQLite, ...)."""
    field = model._meta.get_field(field_name)
    return field.get_db_prep_value(value, connection, prepared=False)


def is_postgres() -> bool:
    return connection.vendor == "postgresql"

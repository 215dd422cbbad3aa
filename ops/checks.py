"""The schema doctor as a Django system check tagged `database`.

`manage.py check --database default` lists every drift as a warning (add
`--fail-level WARNING` to make it fail). Warnings, not errors, on purpose:
`migrate` runs the database checks before migrating, and an error would stop
the very command that repairs a database whose migrations are not applied.
"""

from __future__ import annotations

from django.core.checks import Tags, Warning, register
from django.db import DatabaseError, connections

from ops.doctor import diagnose, unapplied_migrations


@register(Tags.database)
def schema_matches_models(app_configs=None, databases=None, **kwargs) -> list[Warning]:
    messages = []
    for alias in databases or []:
        try:
            pending = unapplied_migrations(connections[alias])
            if pending:
                # Before (or during) `migrate` every table looks missing: say it once.
                messages.append(_pending_warning(alias, pending))
                continue
            findings = diagnose(alias)
        except DatabaseError as exc:
            messages.append(
                Warning(f"schema doctor could not read {alias!r}: {exc}", id="ops.W000")
            )
            continue
        for finding in findings:
            messages.append(
                Warning(
                    f"[{alias}] {finding.problem} {finding.impact}",
                    hint=f"{finding.fix} " + " ".join(finding.sql),
                    obj=f"{finding.table}.{finding.name}",
                    id=f"ops.W{_CODES.get(finding.code, 99):03d}",
                )
            )
    return messages


def _pending_warning(alias: str, pending: list[tuple[str, str]]) -> Warning:
    names = ", ".join(f"{app}.{name}" for app, name in pending[:5])
    more = f" and {len(pending) - 5} more" if len(pending) > 5 else ""
    return Warning(
        f"[{alias}] {len(pending)} migration(s) not applied: {names}{more}.",
        hint="Run `python manage.py migrate`, then `python manage.py schema_doctor`.",
        id="ops.W001",
    )


_CODES = {
    "unapplied_migration": 1,
    "missing_table": 2,
    "missing_column": 3,
    "column_type": 4,
    "nullability": 5,
    "missing_foreign_key": 6,
    "wrong_foreign_key": 7,
    "missing_unique": 8,
    "missing_check": 9,
    "missing_constraint": 10,
    "missing_index": 11,
    "missing_guard": 12,
    "extra_column": 13,
    "wrong_storage_parameter": 14,
}

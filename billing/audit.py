"""Who did what to money, prices and tenants: the append-only audit trail.

Call these inside the transaction of the change itself, so the change and its
audit event commit together or not at all.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from billing.models import AuditEvent, Company


def record_audit(
    *,
    action: str,
    actor=None,
    actor_label: str = "",
    company: Company | None = None,
    obj=None,
    before: dict | None = None,
    after: dict | None = None,
) -> AuditEvent:
    """Write who did what; call inside the transaction of the change itself."""
    return AuditEvent.objects.create(
        action=action,
        actor=actor if getattr(actor, "pk", None) else None,
        actor_label=actor_label,
        company=company,
        object_type=type(obj).__name__ if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        before=before,
        after=after,
    )


def snapshot(obj, fields: list[str]) -> dict[str, Any]:
    """JSON-safe values of `fields` on `obj` (Decimals and datetimes as exact strings)."""
    return {name: _json_safe(getattr(obj, name)) for name in fields}


def _json_safe(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")  # canonical: 10.000000 and 10 compare equal
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def audit_changes(
    *,
    action: str,
    actor=None,
    obj,
    before: dict[str, Any],
    after: dict[str, Any],
    company: Company | None = None,
) -> AuditEvent | None:
    """Record only the fields that changed, before and after; nothing if none did.

    For staff edits in the admin (credit policy, model prices); call it in the
    transaction of the change (the admin wraps each save in one).
    """
    changed = [name for name in after if before.get(name) != after[name]]
    if not changed:
        return None
    return record_audit(
        action=action,
        actor=actor,
        company=company,
        obj=obj,
        before={name: before.get(name) for name in changed} if before else None,
        after={name: after[name] for name in changed},
    )

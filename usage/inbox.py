"""The rejected-events inbox: events that could not be recorded, kept for replay.

An event for a company that does not exist (yet) is refused to its caller but
not lost: it is kept here with its payload and reason. After an admin fixes the
mapping (adds the external id to a company, creates the company), replaying
records it through the same service as the API, idempotently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from billing.audit import record_audit
from core.errors import ServiceError
from usage.models import RejectedEvent
from usage.recording import record_usage
from usage.schemas import event_from_payload


def _rejected(payload: Any, error: ServiceError, source: str) -> RejectedEvent:
    body = payload if isinstance(payload, dict) else {"payload": payload}
    return RejectedEvent(
        source=source,
        company_ref=str(body.get("company") or "")[:255],
        idempotency_key=str(body.get("idempotency_key") or "")[:255],
        error_code=error.code,
        reason=error.message,
        payload=body,
    )


def reject(*, payload: Any, error: ServiceError, source: str = "api") -> RejectedEvent:
    """Keep one refused event (call it when the refusal is a mapping problem)."""
    rejected = _rejected(payload, error, source)
    rejected.save()
    return rejected


def reject_many(items: list[tuple[Any, ServiceError]], *, source: str) -> None:
    RejectedEvent.objects.bulk_create([_rejected(p, e, source) for p, e in items])


@dataclass(frozen=True)
class ReplaySummary:
    replayed: int
    failed: int


def replay(events: Iterable[RejectedEvent], *, actor=None) -> ReplaySummary:
    """Re-record open rejected events; each one is its own transaction.

    A success marks the event replayed and links the usage row; a failure stays
    open with the new reason. Replaying twice is harmless: recording is
    idempotent and only an open event is marked (a conditional update).
    """
    replayed = failed = 0
    for rejected in events:
        if rejected.state != RejectedEvent.State.OPEN:
            continue
        if _replay_one(rejected, actor=actor):
            replayed += 1
        else:
            failed += 1
    return ReplaySummary(replayed=replayed, failed=failed)


def _replay_one(rejected: RejectedEvent, *, actor) -> bool:
    try:
        with transaction.atomic():
            # As of its arrival: an event without occurred_at happened then, not now.
            event = event_from_payload(rejected.payload)
            result = record_usage(event, now=rejected.received_at)
            RejectedEvent.objects.filter(pk=rejected.pk, state=RejectedEvent.State.OPEN).update(
                state=RejectedEvent.State.REPLAYED, resolved_at=timezone.now(), usage=result.usage
            )
            record_audit(
                action="rejected_event.replay",
                actor=actor,
                company=result.usage.company,
                obj=rejected,
                after={"usage_id": str(result.usage.pk), "created": result.created},
            )
    except ServiceError as exc:
        RejectedEvent.objects.filter(pk=rejected.pk, state=RejectedEvent.State.OPEN).update(
            error_code=exc.code, reason=exc.message
        )
        return False
    return True

"""Group commit for single usage posts: concurrent requests of a process share one transaction.

A single post's transaction is mostly fixed cost: the job and price look-ups,
the balance row lock held until COMMIT, COMMIT's flush to disk. A web process
serves several requests at once on its threads (gunicorn gthread). When
several of them record usage at the same moment, the first becomes the
leader: it takes every event waiting, records them together with
:func:`usage.recording.record_usage_batch` in one transaction, and hands each
thread its own outcome.

- No timer: a group is whatever arrived while the previous group was being
  written, so a lone request is never delayed, and under load groups grow by
  themselves.
- Durable as before: a thread answers only after the commit that holds its
  event.
- Isolated as before: the batch gives every event its own outcome (a bad event
  fails alone); if the group's transaction itself fails, each thread records its
  own event alone, as without grouping. (Should the batch fail after its
  commit, while answering replays, its events answer as replays of themselves:
  recorded once, a 200 instead of a 201.)
- Semantics are :func:`record_usage`'s: replays, conflicts, drafts, balances
  after each event's own debit, alerts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

from django.conf import settings
from django.db import connection

from billing.models import Company
from core.errors import ServiceError
from usage.events import UsageEvent
from usage.recording import Outcome, RecordResult, record_usage, record_usage_batch

logger = logging.getLogger(__name__)


class _Slot:
    __slots__ = ("event", "company", "outcome", "done")

    def __init__(self, event: UsageEvent, company: Company) -> None:
        self.event, self.company = event, company
        self.outcome: Outcome | None = None  # None once done: record alone
        self.done = False


class GroupCommit:
    """Records events from many threads of one process, in groups of up to `max_group`."""

    def __init__(
        self,
        max_group: int = 64,
        record_many: Callable[..., list[Outcome]] = record_usage_batch,
    ) -> None:
        self.max_group = max_group
        self._record_many = record_many
        self._cond = threading.Condition()
        self._waiting: list[_Slot] = []
        self._leading = False

    def waiting(self) -> int:
        """Events queued behind the group being written."""
        with self._cond:
            return len(self._waiting)

    def record(self, event: UsageEvent, company: Company) -> RecordResult:
        """Record `event` for `company` (already authorized); raises its ServiceError.

        Inside a caller's transaction the event is recorded alone: a group's
        commit would otherwise wait for that transaction, and the other threads
        would answer before their events were durable.
        """
        if connection.in_atomic_block:
            return record_usage(event, company=company)
        slot = _Slot(event, company)
        with self._cond:
            self._waiting.append(slot)
        while True:  # groups are taken in arrival order: this slot's turn comes
            with self._cond:
                while self._leading and not slot.done:
                    self._cond.wait()
                if slot.done:
                    break
                self._leading = True
                group = self._waiting[: self.max_group]
                del self._waiting[: self.max_group]
            self._lead(group)
        if slot.outcome is None:  # the group's transaction failed: alone, as ungrouped
            return record_usage(event, company=company)
        if isinstance(slot.outcome, ServiceError):
            raise slot.outcome
        return slot.outcome

    def _lead(self, group: list[_Slot]) -> None:
        outcomes: list[Outcome | None] = [None] * len(group)
        try:
            # Each event names its company by primary key: two callers' references
            # (an external id, a UUID) could spell different companies alike.
            events = [replace(s.event, company=str(s.company.pk)) for s in group]
            companies = {str(s.company.pk): s.company for s in group}
            outcomes = list(self._record_many(events, companies=companies))
        except Exception:  # noqa: BLE001 - every thread then records alone and meets its own error
            logger.warning(
                "group of %d usage events failed; recording each alone", len(group), exc_info=True
            )
        finally:
            with self._cond:
                for slot, outcome in zip(group, outcomes, strict=True):
                    slot.outcome, slot.done = outcome, True
                self._leading = False
                self._cond.notify_all()


_group_commit = GroupCommit()


def record_one(event: UsageEvent, company: Company) -> RecordResult:
    """Record one event for the API: grouped with concurrent ones (USAGE_GROUP_COMMIT),
    or alone."""
    if settings.USAGE_GROUP_COMMIT:
        return _group_commit.record(event, company)
    return record_usage(event, company=company)

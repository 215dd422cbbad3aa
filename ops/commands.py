"""One JSON log line per management command run: name, outcome, duration, summary.

Use it as the base of a command instead of BaseCommand (it is one):

    class Command(LoggedCommand): ...

and, to put the command's result in the line, set ``self.summary = {...}`` in
``handle()`` (counts, not secrets). Cron output is then searchable like the
API's request log.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

logger = logging.getLogger("qg.commands")


class LoggedCommand(BaseCommand):
    summary: dict[str, Any] | None = None

    def execute(self, *args: Any, **options: Any) -> Any:
        started = time.monotonic()
        self.summary = None
        outcome, error = "ok", None
        try:
            return super().execute(*args, **options)
        except CommandError as exc:
            outcome, error = "failed", str(exc)
            raise
        except BaseException as exc:
            outcome, error = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._log(outcome, error, started)

    def _log(self, outcome: str, error: str | None, started: float) -> None:
        name = type(self).__module__.rsplit(".", 1)[-1]
        event = {
            "event": "command_run",
            "command": name,
            "outcome": outcome,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "summary": self.summary,
            "error": error,
        }
        level = logging.INFO if outcome == "ok" else logging.ERROR
        logger.log(level, "command %s %s", name, outcome, extra={"event": event})

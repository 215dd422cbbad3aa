"""Structured logs: one JSON object per line, and no secrets in them.

`JsonFormatter` renders every record as JSON with the time, level, logger,
message, the request id of the API request being served (if any) and the
record's `event` dict (passed as ``extra={"event": {...}}``). It redacts on
the way out: values under secret-looking keys, and anything that looks like an
API key secret (``qg_<prefix>_<random>``) or a bearer token in any string, so
that a careless ``logger.info(f"... {secret}")`` still cannot leak a key.

LOG_FORMAT=json (the default with DEBUG off) or text (the default with DEBUG on).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

REDACTED = "[redacted]"
_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|authorization|api_?key$|cookie", re.I)
_SECRET_VALUES = [
    # Our API keys: keep the public prefix (it identifies the key), drop the secret part.
    (re.compile(r"\b(qg_[0-9a-f]{8})_[A-Za-z0-9_\-]{8,}"), r"\1_" + REDACTED),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]+"), r"\1 " + REDACTED),
]


def redact(value: Any, key: str = "") -> Any:
    """`value` with secrets replaced, recursively through dicts and lists."""
    if key and _SECRET_KEYS.search(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        for pattern, replacement in _SECRET_VALUES:
            value = pattern.sub(replacement, value)
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            payload["request_id"] = request_id
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            payload.update(event)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(redact(payload), default=str, ensure_ascii=False)


class RedactingTextFormatter(logging.Formatter):
    """Plain text for developers, with the same redaction."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            text += " " + json.dumps(event, default=str, ensure_ascii=False)
        return redact(text)


def logging_config(*, level: str, fmt: str) -> dict[str, Any]:
    """The LOGGING setting: everything to stderr, JSON or text."""
    formatter = "json" if fmt == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": JsonFormatter},
            "text": {
                "()": RedactingTextFormatter,
                "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
            },
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": formatter}},
        "root": {"handlers": ["console"], "level": level},
        # The per-request JSON line replaces Django's own request log lines.
        "loggers": {"django.server": {"level": "WARNING"}},
    }

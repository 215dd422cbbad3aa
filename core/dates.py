"""Parsing dates and instants typed by operators (command-line arguments)."""

from __future__ import annotations

from datetime import UTC, datetime, time

from django.utils.dateparse import parse_date, parse_datetime


def parse_instant(text: str) -> datetime:
    """`2026-12-01` is UTC midnight; `2026-12-01T09:00+01:00` keeps its offset.

    A date-time without an offset is refused: an operator's "09:00" is ambiguous.
    Raises ValueError with a message fit for the operator.
    """
    value = (text or "").strip()
    try:
        day = parse_date(value)
        if day is not None:
            return datetime.combine(day, time.min, tzinfo=UTC)
        instant = parse_datetime(value)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date: {exc}") from exc
    if instant is None:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 date-time")
    if instant.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset; add one (e.g. +00:00) or give a date")
    return instant

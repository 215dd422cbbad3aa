"""Dates and instants: parsing what operators type, and the one way instants are shown."""

from __future__ import annotations

from datetime import UTC, datetime, time, tzinfo

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


def format_instant(instant: datetime, tz: tzinfo, *, seconds: bool = False) -> str:
    """The one way an instant is shown: in `tz`, its zone named ('Dec 20, 2026 19:00 EST').

    Company-scoped pages and admin rows pass the company's zone, everything
    else UTC. The abbreviation (EST, CET, +0530's 'IST') tells DST apart.
    """
    local = instant.astimezone(tz)
    clock = "%H:%M:%S" if seconds else "%H:%M"
    return local.strftime(f"%b %-d, %Y {clock} %Z")

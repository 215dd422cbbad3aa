"""The one rule for text that enters the system, whatever the entry point.

A string from outside (a JSON body at any depth, a path or query parameter, a
form field, an admin search, an imported CSV or JSONL field, a replayed
rejected event) must be storable by PostgreSQL before anything else looks at
it: no NUL (text and jsonb cannot hold it) and no lone UTF-16 surrogate
(`json.loads('"\\ud800"')` yields one, and psycopg then fails to encode the
string: a 500, and in a batch a failure of every event sent with it). Lengths
are the field's own (`check_text(max_length=...)`). A decimal is written in
ASCII digits only: Python reads `Decimal("١٢")` as 12, and `Decimal("1_0")`
as 10, which no caller means.

Reasons are phrased to follow the field's name ("model must not contain ...")
in the error shape's `fields`.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from core.errors import InvalidInput

NUL_REASON = "must not contain NUL (\\u0000) characters"
SURROGATE_REASON = "must not contain lone UTF-16 surrogates (\\ud800-\\udfff)"

_SURROGATE = re.compile("[\ud800-\udfff]")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Leading and trailing blanks are forgiven, as Decimal() forgives them.
_BLANKS = " \t\r\n"


def text_problem(value: str) -> str | None:
    """Why PostgreSQL could not store `value`, or None when it can."""
    if "\x00" in value:
        return NUL_REASON
    # isascii() is O(1) in CPython: the search runs only on non-ASCII text.
    if not value.isascii() and _SURROGATE.search(value):
        return SURROGATE_REASON
    return None


def printable_name(name: str) -> str:
    """A field name (or path) safe to put in a message, a log line or JSON."""
    name = name.replace("\x00", "\\u0000")
    if not name.isascii():
        name = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", name)
    return name


def unstorable_path(
    value: Any, *, skip_keys: frozenset[str] = frozenset()
) -> tuple[str, str] | None:
    """(dotted path, reason) of the first string or key PostgreSQL cannot store.

    Walks dicts and lists at any depth, iteratively (deep nesting cannot
    exhaust the stack). `skip_keys` are top-level keys checked elsewhere (a
    batch checks each of its events itself, so one bad event loses no other).
    It runs on every event of every batch, so it is written for speed: the
    checks are inline, and a path is spelled out only for the one it reports.
    """
    # Each entry: (parent entry or None, key or index, value).
    top = value.items() if isinstance(value, dict) else [("", value)]
    stack: list[tuple[Any, Any, Any]] = [(None, k, v) for k, v in top if k not in skip_keys]
    while stack:
        entry = stack.pop()
        key, item = entry[1], entry[2]
        if isinstance(key, str) and (
            "\x00" in key or (not key.isascii() and _SURROGATE.search(key))
        ):
            return _path_of(entry), text_problem(key) or NUL_REASON
        if isinstance(item, str):
            if "\x00" in item or (not item.isascii() and _SURROGATE.search(item)):
                return _path_of(entry), text_problem(item) or NUL_REASON
        elif isinstance(item, dict):
            stack.extend((entry, k, v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((entry, i, v) for i, v in enumerate(item))
    return None


def _path_of(entry: tuple[Any, Any, Any]) -> str:
    parts = []
    while entry is not None:
        parts.append(str(entry[1]))
        entry = entry[0]
    return printable_name(".".join(p for p in reversed(parts) if p)) or "body"


def check_text(value: str, *, field: str, max_length: int | None = None) -> str:
    """`value` itself, or InvalidInput naming `field`."""
    problem = text_problem(value)
    if problem is None and max_length is not None and len(value) > max_length:
        problem = f"must be at most {max_length} characters"
    if problem is not None:
        raise InvalidInput(f"Invalid {field}: {field} {problem}.", fields={field: problem})
    return value


def parse_decimal(value: str | int | Decimal) -> Decimal:
    """A Decimal from a number or from text in ASCII digits; ValueError otherwise."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not a decimal number")
    if isinstance(value, int):
        return Decimal(value)
    text = value.strip(_BLANKS)
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"{value!r} is not a decimal number in ASCII digits")
    try:
        return Decimal(text)
    except InvalidOperation as exc:  # an exponent beyond the context
        raise ValueError(f"{value!r} is not a decimal number") from exc

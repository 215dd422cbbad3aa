"""How the admin shows amounts and instants: the billing pages' one rule, in columns.

Every amount goes through billing.money (cents, never $0.00 for a non-zero
amount, the currency named); read-only detail adds every stored digit. Every
instant of a company-scoped object is shown in the company's zone with the
zone named ('Dec 20, 2026 19:00 EST'), anything else in UTC, named too
(core.dates.format_instant). Each helper returns a callable for
`list_display` or `readonly_fields`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, tzinfo
from decimal import Decimal
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString

from billing.money import format_exact, money_html
from core.dates import format_instant


def _company_currency(obj: Any) -> str:
    company = getattr(obj, "company", None)
    return getattr(company, "currency", None) or getattr(obj, "currency", None) or "USD"


def _company_zone(obj: Any) -> tzinfo:
    company = getattr(obj, "company", None)
    return company.tz if company is not None else UTC


def money_column(
    field: str,
    description: str,
    *,
    currency: Callable[[Any], str] = _company_currency,
    ordering: str | None = None,
    empty: str = "—",
) -> Callable[[Any], SafeString | str]:
    """A list column: the amount by the display rule, in the object's currency."""

    def show(obj: Any) -> SafeString | str:
        value = _value(obj, field)
        return empty if value is None else money_html(value, currency(obj))

    show.short_description = description  # type: ignore[attr-defined]
    show.admin_order_field = ordering or field  # type: ignore[attr-defined]
    return show


def exact_money_field(
    field: str, description: str, *, currency: Callable[[Any], str] = _company_currency
) -> Callable[[Any], SafeString | str]:
    """Read-only detail: the rounded amount, then every stored digit."""

    def show(obj: Any) -> SafeString | str:
        value = _value(obj, field)
        if value is None:
            return "—"
        code = currency(obj)
        return format_html(
            '{} <span class="exact-detail">(exactly {} {})</span>',
            money_html(value, code),
            format_exact(value, code),
            code,
        )

    show.short_description = description  # type: ignore[attr-defined]
    return show


def time_column(
    field: str, description: str, *, zone: Callable[[Any], tzinfo] = _company_zone
) -> Callable[[Any], str]:
    """An instant in the company's zone (UTC for platform objects), the zone named."""

    def show(obj: Any) -> str:
        value = getattr(obj, field)
        return "—" if value is None else format_instant(value, zone(obj))

    show.short_description = description  # type: ignore[attr-defined]
    show.admin_order_field = field  # type: ignore[attr-defined]
    return show


def utc(obj: Any) -> tzinfo:
    return UTC


def _value(obj: Any, path: str) -> Decimal | None:
    for part in path.split("__"):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj

"""Template filters for money, times and counts on the billing pages (display only).

Amounts go through billing.money's one display rule (docs/ledger.md).
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo

from django import template
from django.utils.safestring import SafeString

from billing.money import format_exact, format_money, format_price, money_html
from core.dates import format_instant

register = template.Library()


@register.filter
def money(amount: Decimal | None, currency: str = "USD") -> SafeString:
    """`{{ amount|money:company.currency }}`: '$1,234.56', '$0.0015' (exact figure kept)."""
    return money_html(amount, currency or "USD")


@register.filter
def money_text(amount: Decimal | None, currency: str = "USD") -> str:
    """The same rule as plain text, for attributes and other text-only places."""
    return format_money(amount, currency or "USD")


@register.filter
def exact_money(amount: Decimal | None, currency: str = "USD") -> str:
    """Every stored digit: '$1,468.317968875' (read-only detail)."""
    return "—" if amount is None else format_exact(amount, currency or "USD")


@register.filter
def price(value: Decimal | None, currency: str = "USD") -> str:
    """A price per million tokens: '$2.50', '$0.075'."""
    return "—" if value is None else format_price(value, currency or "USD")


@register.filter
def local_time(instant: datetime | None, tz: tzinfo | str) -> str:
    """`{{ entry.created_at|local_time:company.tz }}`: 'Dec 20, 2026 19:00 EST'."""
    if instant is None:
        return ""
    return format_instant(instant, ZoneInfo(tz) if isinstance(tz, str) else tz)


@register.filter
def percent_change(current: Decimal, previous: Decimal) -> str:
    """'+12%' / '-3%' from previous to current; '' when there is nothing to compare."""
    if not previous:
        return ""
    change = (current - previous) * 100 / previous
    return f"{change:+.0f}%"


@register.filter
def share_of(used: Decimal, limit: Decimal) -> str:
    """'85%' of a limit used, rounded down ('<1%' for a little, never a misleading 0%)."""
    if not limit:
        return ""
    share = used * 100 / limit
    if 0 < share < 1:
        return "<1%"
    return f"{int(share)}%"


@register.filter
def get(row: dict, key: str):
    """`{{ row|get:col.key }}`: a table cell by its column's key."""
    return row.get(key)

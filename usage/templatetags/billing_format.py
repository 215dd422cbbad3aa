"""Template filters for money and counts on the billing pages (display only)."""

from __future__ import annotations

from decimal import Decimal

from django import template

from billing.money import format_money, plain

register = template.Library()


@register.filter
def money(amount: Decimal | None, currency: str = "USD") -> str:
    """`{{ amount|money:company.currency }}` -> '$1,234.56' (rounded for display only)."""
    return format_money(amount, currency or "USD")


@register.filter
def percent_change(current: Decimal, previous: Decimal) -> str:
    """'+12%' / '-3%' from previous to current; '' when there is nothing to compare."""
    if not previous:
        return ""
    change = (current - previous) * 100 / previous
    return f"{change:+.0f}%"


@register.filter
def get(row: dict, key: str):
    """`{{ row|get:col.key }}`: a table cell by its column's key."""
    return row.get(key)


@register.filter
def exact(amount: Decimal | None) -> str:
    """`{{ amount|exact }}`: the full-precision figure (e.g. for a title beside the rounded one)."""
    return plain(amount) or ""

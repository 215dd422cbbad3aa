"""Money: the one place where amounts are rounded, and how.

Every amount in the system is a ``Decimal``. An amount that enters from
outside (a cost reported by a caller, a credit typed by an operator, a limit)
is rounded once to twelve places by :func:`quantize_amount`, with
ROUND_HALF_EVEN (banker's rounding, so rounding errors do not drift in one
direction), and stored as NUMERIC(28, 12) where it is only ever typed.

Prices are per million tokens with at most twelve decimal places (LiteLLM's
table has prices such as 0.141953125 per million), so a priced cost
``tokens x price / 1_000_000`` has up to eighteen: it is never rounded. Every
column that holds a priced cost or sums costs (usage cost, rollup cost, ledger
amount and running balance, balance, debt, lots, alerts) is an unconstrained
NUMERIC (:class:`billing.models.ExactAmountField`), which stores any scale
exactly; docs/ledger.md says why that rather than a wider fixed scale.
Sums of stored amounts are exact.

Display has one rule too, :func:`format_money`, used by every page, the admin
and the alert emails (docs/ledger.md, "Showing amounts"): an amount of a cent
or more is rounded to the cent (ROUND_HALF_UP); a non-zero amount below half
a cent, which would read $0.00, shows two significant digits instead
($0.0015), and :func:`money_html` keeps its exact figure one hover or focus
away. Display never feeds back into a stored figure; the CSV and the API
carry full precision (:func:`plain`).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation

from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.text import parse_decimal

AMOUNT_MAX_DIGITS = 28
AMOUNT_DECIMAL_PLACES = 12
PRICE_MAX_DIGITS = 24
PRICE_DECIMAL_PLACES = 12
TOKENS_PER_PRICE_UNIT = 1_000_000

AMOUNT_QUANTUM = Decimal(1).scaleb(-AMOUNT_DECIMAL_PLACES)
PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_DECIMAL_PLACES)
CENT = Decimal("0.01")
ZERO = Decimal(0)
# Largest absolute amount a NUMERIC(28, 12) column holds.
AMOUNT_LIMIT = Decimal(10) ** (AMOUNT_MAX_DIGITS - AMOUNT_DECIMAL_PLACES)


class AmountError(ValueError):
    """An amount that cannot be stored: not a number, or too large."""


def quantize_amount(value: Decimal | str | int) -> Decimal:
    """Round an incoming amount to 12 places (ROUND_HALF_EVEN): the one rounding."""
    try:
        amount = parse_decimal(value)
    except ValueError as exc:
        raise AmountError(str(exc)) from exc
    if not amount.is_finite():
        raise AmountError(f"{value!r} is not a finite number")
    try:
        amount = amount.quantize(AMOUNT_QUANTUM, rounding=ROUND_HALF_EVEN)
    except InvalidOperation:  # more digits than the context holds: far beyond the limit
        amount = AMOUNT_LIMIT.copy_sign(amount)
    if abs(amount) >= AMOUNT_LIMIT:
        raise AmountError(f"{value!r} is larger than the {AMOUNT_LIMIT} an amount may hold")
    # -0 is stored as 0; keeping the sign would answer "-0.00" now and "0.00" when read back.
    return amount.copy_abs() if amount.is_zero() else amount


def to_cents(amount: Decimal) -> Decimal:
    """Display rounding to cents (ROUND_HALF_UP). Never stored."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


SIGNIFICANT_DIGITS = 2  # of an amount below half a cent: $0.0015, $0.000042


def display_amount(amount: Decimal) -> Decimal:
    """The figure the display rule shows: cents, or two significant digits below a cent.

    Never zero for a non-zero amount: 0.001534 shows 0.0015, not 0.00.
    """
    cents = to_cents(amount)
    if cents or not amount:
        return cents
    quantum = Decimal(1).scaleb(amount.adjusted() - SIGNIFICANT_DIGITS + 1)
    return amount.quantize(quantum, rounding=ROUND_HALF_UP)


def currency_symbol(currency: str) -> str:
    return "$" if currency == "USD" else f"{currency} "


def format_money(amount: Decimal | None, currency: str = "USD") -> str:
    """'$1,234.56', '-$3.10', '$0.0015' (below a cent); '—' for an unknown amount."""
    if amount is None:
        return "—"
    shown = display_amount(amount)
    sign = "-" if shown < 0 else ""
    if abs(shown) >= CENT or not shown:
        digits = f"{abs(shown):,.2f}"
    else:  # below a cent: its significant digits, no trailing zeros ($0.005, not $0.0050)
        digits = f"{abs(shown).normalize():f}"
    return f"{sign}{currency_symbol(currency)}{digits}"


def format_exact(amount: Decimal, currency: str = "USD") -> str:
    """Every stored digit, trailing zeros trimmed to the cent: '$1,468.317968875'."""
    text = plain(amount)
    sign, text = ("-", text[1:]) if text.startswith("-") else ("", text)
    whole, _, frac = text.partition(".")
    return f"{sign}{currency_symbol(currency)}{int(whole):,}.{frac}"


def is_shown_exactly(amount: Decimal) -> bool:
    return display_amount(amount) == amount


def money_html(amount: Decimal | None, currency: str = "USD") -> SafeString:
    """An amount for an HTML page: the display rule, with the exact figure kept.

    `data-amount` holds the exact amount (the browser tests check that no
    non-zero amount reads $0.00). An amount below a cent is focusable and
    carries its exact figure as text a screen reader reads and CSS shows on
    hover or focus; others carry it as a title.
    """
    if amount is None:
        return SafeString('<span class="money unknown">—</span>')
    text, exact = format_money(amount, currency), format_exact(amount, currency)
    if is_shown_exactly(amount) or to_cents(amount):
        title = "" if is_shown_exactly(amount) else exact
        return format_html(
            '<span class="money" data-amount="{}"{}>{}</span>',
            plain(amount),
            format_html(' title="{}"', title) if title else "",
            text,
        )
    return format_html(
        '<span class="money sub-cent" data-amount="{}" tabindex="0">{}'
        '<span class="exact"> (exactly {})</span></span>',
        plain(amount),
        text,
        exact,
    )


def format_price(price: Decimal, currency: str = "USD") -> str:
    """A price per million tokens as set (up to 6 places): '$2.50', '$0.075'."""
    text = plain(price)
    return f"{currency_symbol(currency)}{text}"


def plain(amount: Decimal | None) -> str | None:
    """The exact decimal string, without exponent or trailing zeros beyond cents.

    Never rounded: a priced cost may have up to eighteen places.
    """
    if amount is None:
        return None
    text = format(amount, "f")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"


PRICE_LIMIT = Decimal(10) ** (PRICE_MAX_DIGITS - PRICE_DECIMAL_PLACES)


def parse_price(value: Decimal | str | int) -> Decimal:
    """A price per million tokens as typed: never rounded, refused beyond 12 places.

    Refusing (instead of rounding) keeps every priced cost exact (see above).
    """
    try:
        price = parse_decimal(value)
    except ValueError as exc:
        raise AmountError(str(exc)) from exc
    if not price.is_finite() or price < 0:
        raise AmountError(f"{value!r} must be a non-negative number")
    if price != price.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN):
        raise AmountError(f"{value!r} has more than {PRICE_DECIMAL_PLACES} decimal places")
    if price >= PRICE_LIMIT:
        raise AmountError(f"{value!r} is larger than a price may be ({PRICE_LIMIT})")
    return price.quantize(PRICE_QUANTUM)

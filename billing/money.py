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
Sums of stored amounts are exact; display rounds to cents with ROUND_HALF_UP
in :func:`format_money` only, and never feeds back into a stored figure.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation

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
        amount = Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise AmountError(f"{value!r} is not a decimal number") from exc
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


def format_money(amount: Decimal | None, currency: str = "USD") -> str:
    """'$1,234.56' / '-$3.10' for display; '—' for an unknown amount."""
    if amount is None:
        return "—"
    cents = to_cents(amount)
    symbol = "$" if currency == "USD" else f"{currency} "
    sign = "-" if cents < 0 else ""
    return f"{sign}{symbol}{abs(cents):,.2f}"


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
        price = Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise AmountError(f"{value!r} is not a decimal number") from exc
    if not price.is_finite() or price < 0:
        raise AmountError(f"{value!r} must be a non-negative number")
    if price != price.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN):
        raise AmountError(f"{value!r} has more than {PRICE_DECIMAL_PLACES} decimal places")
    if price >= PRICE_LIMIT:
        raise AmountError(f"{value!r} is larger than a price may be ({PRICE_LIMIT})")
    return price.quantize(PRICE_QUANTUM)

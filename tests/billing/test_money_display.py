"""The one display rule for amounts: cents, and never $0.00 for a non-zero amount."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.money import format_exact, format_money, format_price, money_html


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("0", "$0.00"),
        ("0E-12", "$0.00"),
        ("1468.317968875", "$1,468.32"),
        ("0.005", "$0.01"),  # half a cent rounds up to a cent
        ("0.00999", "$0.01"),
        ("0.004999", "$0.005"),  # below half a cent: two significant digits
        ("0.001534125", "$0.0015"),
        ("0.000000000001", "$0.000000000001"),
        ("-0.0015", "-$0.0015"),
        ("-3.1", "-$3.10"),
    ],
)
def test_amounts_round_to_cents_and_a_non_zero_amount_never_reads_zero(amount, shown):
    assert format_money(Decimal(amount)) == shown


def test_other_currencies_name_their_code_and_unknown_amounts_a_dash():
    assert format_money(Decimal("12.5"), "EUR") == "EUR 12.50"
    assert format_money(None) == "—"


def test_exact_figure_keeps_every_stored_digit_and_never_an_exponent():
    assert format_exact(Decimal("1468.317968875000")) == "$1,468.317968875"
    assert format_exact(Decimal("0E-12")) == "$0.00"
    assert format_exact(Decimal("-0.000001")) == "-$0.000001"


def test_html_keeps_the_exact_amount_and_shows_it_on_focus_below_a_cent():
    small = str(money_html(Decimal("0.001534125")))
    assert 'data-amount="0.001534125"' in small and 'tabindex="0"' in small
    assert "$0.0015" in small and "exactly $0.001534125" in small
    rounded = str(money_html(Decimal("1468.317968875")))
    assert 'title="$1,468.317968875"' in rounded and ">$1,468.32<" in rounded
    assert "title" not in str(money_html(Decimal("3.10")))


def test_prices_show_their_own_places():
    assert format_price(Decimal("0.075000")) == "$0.075"
    assert format_price(Decimal("2.500000")) == "$2.50"

"""billing.money's one rounding at its edges."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.money import plain, quantize_amount


@pytest.mark.parametrize("value", ["-0", "-0.0", Decimal("-0E+5"), "-0.0000000000001"])
def test_quantize_amount_never_returns_negative_zero(value):
    amount = quantize_amount(value)
    assert amount == 0 and not amount.is_signed()
    assert plain(amount) == "0.00"

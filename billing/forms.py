"""Forms for staff: posting credit from the admin (through billing.credits)."""

from __future__ import annotations

import uuid

from django import forms

from billing.money import AMOUNT_DECIMAL_PLACES, AMOUNT_MAX_DIGITS
from core.forms import AsciiDecimalField


class CreditPostingForm(forms.Form):
    """A purchase, grant, refund or adjustment; the reason is required.

    The hidden idempotency key is minted when the form is shown, so a double
    submit (or a browser retry) posts once.
    """

    KINDS = [
        ("purchase", "Purchase (paid)"),
        ("grant", "Grant (promotional)"),
        ("refund", "Refund (paid credit back)"),
        ("adjustment", "Adjustment (+ or -)"),
    ]

    kind = forms.ChoiceField(choices=KINDS)
    amount = AsciiDecimalField(
        max_digits=AMOUNT_MAX_DIGITS,
        decimal_places=AMOUNT_DECIMAL_PLACES,
        help_text="Positive; an adjustment may be negative.",
    )
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)
    expires_at = forms.DateTimeField(
        required=False, help_text="Purchases and grants only: when the credit expires (UTC)."
    )
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=255)

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("initial", {}).setdefault("idempotency_key", f"admin:{uuid.uuid4()}")
        super().__init__(*args, **kwargs)

    def clean(self) -> dict:
        data = super().clean()
        kind, amount = data.get("kind"), data.get("amount")
        if data.get("expires_at") and kind not in ("purchase", "grant"):
            self.add_error("expires_at", "Only purchases and grants can expire.")
        if amount is not None and kind != "adjustment" and amount <= 0:
            self.add_error("amount", "Must be positive.")
        if amount is not None and amount == 0:
            self.add_error("amount", "Must not be zero.")
        return data

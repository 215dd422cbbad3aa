"""Forms for staff in the admin: posting credit (billing.credits) and adding a price
(billing.prices). Each form says one clear thing per field that is wrong."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time
from decimal import Decimal

from django import forms
from django.utils import timezone

from billing.models import Company
from billing.money import (
    AMOUNT_DECIMAL_PLACES,
    AMOUNT_MAX_DIGITS,
    PRICE_DECIMAL_PLACES,
    PRICE_MAX_DIGITS,
    plain,
)
from core.forms import AsciiDecimalField

CREDIT_KINDS = ("purchase", "grant")


class AmountFormField(AsciiDecimalField):
    """An amount typed into a form, shown as a person writes it: '25.00', never
    '25.000000000000' or '0E-12' (the stored NUMERIC(28, 12))."""

    widget = forms.TextInput(attrs={"inputmode": "decimal"})

    def prepare_value(self, value):
        return plain(value) if isinstance(value, Decimal) else value


class CreditPostingForm(forms.Form):
    """A purchase, grant, refund or adjustment; the reason is required.

    The hidden idempotency key is minted when the form is shown, so a double
    submit (or a browser retry) posts once. The expiry is a day in the
    company's time zone: the credit expires as that day begins there.
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
    expires_on = forms.DateField(
        required=False,
        label="Expires on",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=255)

    def __init__(self, *args, company: Company, **kwargs) -> None:
        kwargs.setdefault("initial", {}).setdefault("idempotency_key", f"admin:{uuid.uuid4()}")
        super().__init__(*args, **kwargs)
        self.company = company
        self.fields["amount"].label = f"Amount ({company.currency})"
        self.fields["expires_on"].help_text = (
            f"Purchases and grants only. The credit expires as this day begins in "
            f"{company.timezone} (00:00 there). Leave empty for credit that never expires."
        )

    def clean(self) -> dict:
        data = super().clean()
        kind, amount, day = data.get("kind"), data.get("amount"), data.get("expires_on")
        if amount is not None and kind == "adjustment" and amount == 0:
            self.add_error("amount", "An adjustment must not be zero.")
        elif amount is not None and kind != "adjustment" and amount <= 0:
            self.add_error("amount", "Enter an amount above zero.")
        if day is not None and kind not in CREDIT_KINDS:
            self.add_error("expires_on", "Only purchases and grants can expire.")
        elif day is not None and self.expires_at(day) <= timezone.now():
            self.add_error("expires_on", "Choose a day after today.")
        return data

    def expires_at(self, day=None) -> datetime | None:
        """The expiry instant: the start of the chosen day in the company's zone."""
        day = day if day is not None else self.cleaned_data.get("expires_on")
        return None if day is None else datetime.combine(day, time.min, tzinfo=self.company.tz)

    def posting(self) -> dict:
        """The keyword arguments of billing.credits.post_credit."""
        data = self.cleaned_data
        return {
            "kind": data["kind"],
            "amount": data["amount"],
            "reason": data["reason"],
            "expires_at": self.expires_at(),
            "idempotency_key": data["idempotency_key"],
        }

    def kind_label(self) -> str:
        return dict(self.KINDS)[self.cleaned_data["kind"]]

    def as_hidden_data(self) -> dict[str, str]:
        """The cleaned values as the form posts them, for the confirmation step."""
        data = self.cleaned_data
        day = data.get("expires_on")
        return {
            "kind": data["kind"],
            "amount": plain(data["amount"]),
            "reason": data["reason"],
            "expires_on": day.isoformat() if day else "",
            "idempotency_key": data["idempotency_key"],
        }


def _price_field(label: str, *, required: bool = True) -> forms.DecimalField:
    return AsciiDecimalField(
        label=label,
        max_digits=PRICE_MAX_DIGITS,
        decimal_places=PRICE_DECIMAL_PLACES,
        min_value=Decimal(0),
        required=required,
    )


class ModelPriceForm(forms.Form):
    """A new price period of a model, from an instant (UTC), per million tokens (USD)."""

    model = forms.CharField(max_length=100)
    input_per_million = _price_field("Uncached input, USD per 1M tokens")
    cached_input_per_million = _price_field("Cached input, USD per 1M tokens", required=False)
    output_per_million = _price_field("Output, USD per 1M tokens")
    effective_from = forms.DateTimeField(
        label="In effect from (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        help_text="Usage that occurred from this instant on is priced with it.",
    )

    def clean_effective_from(self) -> datetime:
        value = self.cleaned_data["effective_from"]
        # Typed without a zone, and labelled UTC: read it as UTC whatever the server's zone.
        return value.replace(tzinfo=UTC) if timezone.is_naive(value) else value.astimezone(UTC)

    def price(self) -> dict:
        """The keyword arguments of billing.prices.set_model_price."""
        data = self.cleaned_data
        return {
            "model": data["model"],
            "input_per_million": data["input_per_million"],
            "cached_input_per_million": data.get("cached_input_per_million"),
            "output_per_million": data["output_per_million"],
            "effective_from": data["effective_from"],
        }

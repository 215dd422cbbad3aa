"""Forms for staff in the admin: posting credit (billing.credits) and adding a price
(billing.prices). Each form says one clear thing per field that is wrong."""

from __future__ import annotations

import uuid
from datetime import datetime, time
from decimal import Decimal

from django import forms
from django.db import transaction
from django.utils import timezone

from billing.models import LONG_RATE_FIELDS, RATE_FIELDS, Company, ModelPrice, ServiceTier
from billing.money import (
    AMOUNT_DECIMAL_PLACES,
    AMOUNT_MAX_DIGITS,
    plain,
)
from billing.prices import LongContext, set_model_price
from core.errors import ServiceError
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


class ModelPriceForm(forms.ModelForm):
    """The admin's price form. A new price is checked by the service itself, run
    and rolled back in `clean` (overlaps, missing long-context rates), so its
    refusals show on the form; `set_price` then runs it for real."""

    class Meta:
        model = ModelPrice
        fields = [
            "model",
            "service_tier",
            "effective_from",
            "effective_to",
            *RATE_FIELDS,
            "long_context_threshold",
            *LONG_RATE_FIELDS,
        ]
        field_classes = dict.fromkeys([*RATE_FIELDS, *LONG_RATE_FIELDS], AsciiDecimalField)
        labels = {
            "effective_from": "In effect from (UTC)",
            "input_per_million": "Uncached input, USD per 1M tokens",
            "cached_input_per_million": "Cached input (cache reads), USD per 1M tokens",
            "cache_write_5m_per_million": "Cache writes (5 minutes), USD per 1M tokens",
            "cache_write_1h_per_million": "Cache writes (1 hour), USD per 1M tokens",
            "output_per_million": "Output, USD per 1M tokens",
            "reasoning_per_million": "Reasoning, USD per 1M tokens",
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # set_model_price fills these in when left empty (docs/ledger.md, "Prices").
        for name in ("service_tier", "cached_input_per_million"):
            if name in self.fields:
                self.fields[name].required = False

    def clean(self) -> dict:
        data = super().clean()
        if self.instance.pk is None and not self.errors:
            try:
                with transaction.atomic():
                    self.set_price(actor=None)
                    transaction.set_rollback(True)
            except ServiceError as exc:
                # One field at fault: the service's own sentence says most (which
                # period it overlaps); several: each field's reason.
                for name, reason in exc.fields.items():
                    text = exc.message if len(exc.fields) == 1 else reason
                    self.add_error(name if name in self.fields else None, text)
                if not exc.fields:
                    self.add_error(None, exc.message)
        return data

    def set_price(self, *, actor) -> ModelPrice:
        data = self.cleaned_data
        long_context = None
        if data.get("long_context_threshold") is not None:
            long_context = LongContext(
                threshold=data["long_context_threshold"],
                **{name.removeprefix("long_"): data.get(name) for name in LONG_RATE_FIELDS},
            )
        return set_model_price(
            model=data["model"],
            service_tier=data.get("service_tier") or ServiceTier.STANDARD,
            effective_from=data["effective_from"],
            long_context=long_context,
            actor=actor,
            actor_label="admin",
            **{name: data.get(name) for name in RATE_FIELDS},
        )

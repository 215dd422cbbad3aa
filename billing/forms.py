"""Forms for staff: posting credit (through billing.credits) and adding a model price
(through billing.prices.set_model_price)."""

from __future__ import annotations

import uuid

from django import forms
from django.db import transaction

from billing.models import LONG_RATE_FIELDS, RATE_FIELDS, ModelPrice
from billing.money import AMOUNT_DECIMAL_PLACES, AMOUNT_MAX_DIGITS
from billing.prices import LongContext, set_model_price
from core.errors import ServiceError


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
    amount = forms.DecimalField(
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

    def clean(self) -> dict:
        data = super().clean()
        if self.instance.pk is None and not self.errors:
            try:
                with transaction.atomic():
                    self.set_price(actor=None)
                    transaction.set_rollback(True)
            except ServiceError as exc:
                for name, reason in exc.fields.items():
                    self.add_error(name if name in self.fields else None, reason)
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
            service_tier=data["service_tier"],
            effective_from=data["effective_from"],
            long_context=long_context,
            actor=actor,
            actor_label="admin",
            **{name: data.get(name) for name in RATE_FIELDS},
        )

"""Form fields that apply core.text's rule where Django's own fields do not."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.core.exceptions import ValidationError

from core.text import parse_decimal


class AsciiDecimalField(forms.DecimalField):
    """A DecimalField that refuses digits other than ASCII (Django reads '١٢' as 12)."""

    def to_python(self, value) -> Decimal | None:
        if isinstance(value, str) and value.strip() not in self.empty_values:
            try:
                parse_decimal(value)
            except ValueError:
                raise ValidationError(self.error_messages["invalid"], code="invalid")
        return super().to_python(value)

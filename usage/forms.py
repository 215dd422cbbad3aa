"""The usage and credits tabs' filter forms (GET parameters, see contracts.md)."""

from __future__ import annotations

from datetime import date, timedelta

from django import forms

from billing.models import LedgerEntry
from usage.models import UsageStatus
from usage.selectors import UsageFilters, previous_month_start

PRESETS = [
    ("this_month", "This month"),
    ("last_month", "Last month"),
    ("last_7", "Last 7 days"),
    ("last_30", "Last 30 days"),
]
GROUPS = [("day", "Day"), ("job", "Job"), ("model", "Model"), ("generation", "Generation")]
MAX_RANGE_DAYS = 3 * 366
# Days a report can span: no usage is older than 1970 (usage.events), and the
# day after 9999-12-30 is the last date Python can compute with.
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9999, 12, 30)


def form_error_fields(form: forms.Form) -> dict[str, str]:
    """A bound form's errors as {field: first message} (the whole form is `filters`)."""
    return {
        ("filters" if name == "__all__" else name): str(errors[0])
        for name, errors in form.errors.items()
    }


def preset_range(preset: str, today: date) -> tuple[date, date]:
    """The local day range of a preset, ending today (or last month's last day)."""
    first = today.replace(day=1)
    if preset == "last_month":
        return previous_month_start(first), first - timedelta(days=1)
    if preset == "last_7":
        return today - timedelta(days=6), today
    if preset == "last_30":
        return today - timedelta(days=29), today
    return first, today


class BoundedDateField(forms.DateField):
    """An optional local day between FIRST_DAY and LAST_DAY (a date picker in the page)."""

    def __init__(self, **kwargs) -> None:
        widget = forms.DateInput({"type": "date", "min": FIRST_DAY, "max": LAST_DAY})
        super().__init__(required=False, widget=widget, **kwargs)

    def validate(self, value: date | None) -> None:
        super().validate(value)
        if value is not None and not FIRST_DAY <= value <= LAST_DAY:
            raise forms.ValidationError(f"Choose a day between {FIRST_DAY} and {LAST_DAY}.")


class DateRangeForm(forms.Form):
    """`from`/`to` inclusive local days, or a preset; the default is this month."""

    preset = forms.ChoiceField(choices=[("", "Custom")] + PRESETS, required=False, label="Period")
    from_ = BoundedDateField(label="From")
    to = BoundedDateField(label="To")

    def __init__(self, data, *, today: date, **kwargs) -> None:
        super().__init__(data, **kwargs)
        self.today = today
        self.fields["from"] = self.fields.pop("from_")
        self.order_fields(["preset", "from", "to"])

    def clean(self) -> dict:
        data = super().clean()
        start, end = data.get("from"), data.get("to")
        if data.get("preset") or not (start or end):
            start, end = preset_range(data.get("preset") or "this_month", self.today)
        start, end = start or end.replace(day=1), end or self.today
        if start > end:
            raise forms.ValidationError("The start date is after the end date.")
        if (end - start).days > MAX_RANGE_DAYS:
            raise forms.ValidationError("Choose a range of at most three years.")
        data["start"], data["end"] = start, end
        return data

    def range(self) -> tuple[date, date]:
        if self.is_valid():
            return self.cleaned_data["start"], self.cleaned_data["end"]
        return preset_range("this_month", self.today)


class UsageFilterForm(DateRangeForm):
    group = forms.ChoiceField(choices=GROUPS, required=False, label="Group by")
    model = forms.ChoiceField(choices=[("", "All models")], required=False, label="Model")
    status = forms.ChoiceField(
        choices=[("", "All statuses")] + list(UsageStatus.choices), required=False, label="Status"
    )
    job = forms.UUIDField(required=False, label="Job id", widget=forms.HiddenInput)

    def __init__(self, data, *, today: date, models: list[str], **kwargs) -> None:
        super().__init__(data, today=today, **kwargs)
        chosen = (data or {}).get("model") or ""
        names = sorted(set(models) | ({chosen} if chosen else set()))
        self.fields["model"].choices = [("", "All models")] + [(m, m) for m in names]

    def filters(self) -> UsageFilters:
        """The filters to apply; invalid input falls back to this month, unfiltered."""
        start, end = self.range()
        data = self.cleaned_data if self.is_valid() else {}
        return UsageFilters(
            start=start,
            end=end,
            group=data.get("group") or "day",
            model=data.get("model") or "",
            job_id=data.get("job"),
            status=data.get("status") or "",
        )


class CreditFilterForm(DateRangeForm):
    kind = forms.ChoiceField(
        choices=[("", "All kinds")] + list(LedgerEntry.Kind.choices), required=False, label="Kind"
    )

    def clean(self) -> dict:
        # The ledger shows all time unless a range is asked for.
        if not (self.data.get("from") or self.data.get("to") or self.data.get("preset")):
            data = forms.Form.clean(self)
            data["start"] = data["end"] = None
            return data
        return super().clean()

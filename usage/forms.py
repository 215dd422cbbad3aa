"""The usage and credits tabs' filter forms (GET parameters, see contracts.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

from django import forms

from billing.models import LedgerEntry
from usage.models import Provider, ProviderBucket, UsageStatus
from usage.selectors import UsageFilters, previous_month_start

PRESETS = [
    ("this_month", "This month"),
    ("last_month", "Last month"),
    ("last_7", "Last 7 days"),
    ("last_30", "Last 30 days"),
]
GROUPS = [
    ("day", "Day"),
    ("job", "Job"),
    ("model", "Model"),
    ("key", "API key"),
    ("generation", "Generation"),
]
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


class PresetSelect(forms.Select):
    """The period's choices, each carrying its date range (`data-from`, `data-to`):
    static/js/billing.js fills the date inputs with it when a preset is picked."""

    ranges: dict[str, tuple[date, date]] = {}

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        if value in self.ranges:
            start, end = self.ranges[value]
            option["attrs"].update({"data-from": start.isoformat(), "data-to": end.isoformat()})
        return option


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

    preset = forms.ChoiceField(
        choices=[("", "Custom")] + PRESETS, required=False, label="Period", widget=PresetSelect
    )
    from_ = BoundedDateField(label="From")
    to = BoundedDateField(label="To")

    def __init__(self, data, *, today: date, **kwargs) -> None:
        super().__init__(data, **kwargs)
        self.today = today
        self.fields["from"] = self.fields.pop("from_")
        self.order_fields(["preset", "from", "to"])
        self.fields["preset"].widget.ranges = {key: preset_range(key, today) for key, _ in PRESETS}

    def chose_period(self) -> bool:
        """Whether the request named a period (else the page shows its default)."""
        return any(self.data.get(name) for name in ("preset", "from", "to"))

    def shown_with(self, start: date, end: date, preset: str | None = None) -> DateRangeForm:
        """The same form, its date inputs showing the range in effect (a preset's too)."""
        data = self.data.copy()
        data["from"], data["to"] = start.isoformat(), end.isoformat()
        if preset is not None:
            data["preset"] = preset
        shown = type(self)(data, **self._shown_kwargs())
        if self.is_bound and not self.is_valid():
            shown._errors = self.errors  # keep saying what was wrong with the input
        return shown

    def _shown_kwargs(self) -> dict:
        return {"today": self.today, "auto_id": self.auto_id}

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
    key = forms.TypedChoiceField(
        choices=[("", "All API keys")],
        coerce=int,
        required=False,
        empty_value=None,
        label="API key",
    )

    def __init__(
        self,
        data,
        *,
        today: date,
        models: list[str],
        keys: Callable[[], list[tuple[int, str]]] = list,
        **kwargs,
    ) -> None:
        super().__init__(data, today=today, **kwargs)
        # By name only (a key's prefix is part of its secret); read when the field is
        # rendered or a key is chosen, so a CSV export without one costs no query.
        self.fields["key"].choices = lambda: (
            [("", "All API keys")] + [(str(k), n) for k, n in keys()]
        )
        self.keys = keys
        chosen = (data or {}).get("model") or ""
        names = sorted(set(models) | ({chosen} if chosen else set()))
        self.fields["model"].choices = [("", "All models")] + [(m, m) for m in names]
        self.models = models

    def _shown_kwargs(self) -> dict:
        return {**super()._shown_kwargs(), "models": self.models, "keys": self.keys}

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
            api_key_id=data.get("key"),
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


class ProviderReconciliationForm(forms.Form):
    """The admin's provider reconciliation page: which provider and UTC days."""

    provider = forms.ChoiceField(choices=Provider.choices, required=False)
    since = forms.DateField(
        required=False, label="From (UTC day)", widget=forms.DateInput({"type": "date"})
    )
    until = forms.DateField(
        required=False, label="To (UTC day)", widget=forms.DateInput({"type": "date"})
    )
    gaps = forms.BooleanField(required=False, label="Only differences")

    def days(self, default_since: date, default_until: date) -> tuple[date, date]:
        """The chosen days, filled in from the defaults; the defaults when they are wrong."""
        data = self.cleaned_data if self.is_valid() else {}
        since, until = data.get("since") or default_since, data.get("until") or default_until
        if until < since:
            self.add_error("until", "The last day is before the first.")
        elif (until - since).days >= MAX_RANGE_DAYS:
            self.add_error("since", f"At most {MAX_RANGE_DAYS} days at once.")
        else:
            return since, until
        return default_since, default_until


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one field (Django's documented pattern)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        one = super().clean
        return (
            [one(d, initial) for d in data]
            if isinstance(data, list | tuple)
            else [one(data, initial)]
        )


class ProviderImportForm(forms.Form):
    """The admin's upload of saved admin-API pages: the same import as the command."""

    provider = forms.ChoiceField(choices=Provider.choices)
    pages = MultipleFileField(
        label="Saved pages",
        help_text="The admin API's responses as saved: a .json file per page, or .jsonl with "
        "a page per line. Daily buckets grouped by model.",
    )
    report = forms.ChoiceField(
        choices=[("", "Told by the pages")] + ProviderBucket.Report.choices,
        required=False,
        help_text="Needed only for pages whose every day is empty.",
    )
    project_map = forms.FileField(
        required=False,
        help_text='Optional JSON {"ours": [ids], "exclude": [ids], "unlisted": "ours"|"exclude"}; '
        "stored and used by every comparison from now on.",
    )
    dry_run = forms.BooleanField(
        required=False, label="Dry run: check and report, store nothing", label_suffix=""
    )

"""Admin for platform staff: tenants, prices, keys, and the read-only ledger.

Money is never edited here: ledger entries and the balance are read-only,
and corrections are new entries posted through billing.ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import F
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.admin_display import exact_money_field, money_column, time_column, utc
from billing.admin_paging import CappedCountMixin
from billing.api_keys import check_limits_scope, parse_limit, set_api_key_limits
from billing.audit import audit_changes, snapshot
from billing.companies import TIMEZONE_CHANGE_HINT, refuse_ambiguous_external_id
from billing.credits import post_credit
from billing.forms import AmountFormField, CreditPostingForm, ModelPriceForm
from billing.models import (
    LONG_RATE_FIELDS,
    RATE_FIELDS,
    APIKey,
    AuditEvent,
    BillingAlert,
    Company,
    CreditBalance,
    CreditLot,
    LedgerEntry,
    Membership,
    ModelPrice,
    Reservation,
    Statement,
)
from billing.money import ZERO, format_money, format_price, money_html
from billing.selectors import company_ledger, credit_summary
from core.errors import InvalidInput, ServiceError
from core.forms import AsciiDecimalField

# Staff edits of these are recorded in the audit trail with before and after.
CREDIT_POLICY_FIELDS = ["low_balance_threshold", "overdraft_allowance", "monthly_spend_limit"]
PRICE_FIELDS = [
    "model",
    "service_tier",
    *RATE_FIELDS,
    "long_context_threshold",
    *LONG_RATE_FIELDS,
    "currency",
    "effective_from",
    "effective_to",
]


class AuditedAdmin(admin.ModelAdmin):
    """Records staff edits of `audited_fields` (before and after) in the audit trail.

    Runs inside the admin's transaction for the save, so the change and its
    audit event commit together.
    """

    audited_fields: list[str] = []
    # Amounts and prices are typed in ASCII digits (Django's own field reads '١٢' as 12).
    formfield_overrides = {models.DecimalField: {"form_class": AsciiDecimalField}}
    audit_prefix = ""  # e.g. "model_price" -> model_price.create / .change / .delete

    def audit_company(self, obj) -> Company | None:
        return None

    def save_model(self, request, obj, form, change: bool) -> None:
        fields = self.audited_fields
        before = snapshot(type(obj).objects.get(pk=obj.pk), fields) if change else {}
        super().save_model(request, obj, form, change)
        self._audit(request, obj, "change" if change else "create", before, snapshot(obj, fields))

    def delete_model(self, request, obj) -> None:
        before = snapshot(obj, self.audited_fields)
        self._audit(request, obj, "delete", before, dict.fromkeys(self.audited_fields))
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset) -> None:
        for obj in queryset:  # one audit event per deleted object
            self.delete_model(request, obj)

    def _audit(self, request, obj, verb: str, before: dict, after: dict) -> None:
        audit_changes(
            action=f"{self.audit_prefix}.{verb}",
            actor=request.user,
            obj=obj,
            company=self.audit_company(obj),
            before=before,
            after=after,
        )


class ReadOnlyAdmin(admin.ModelAdmin):
    """For append-only records: viewable, never added, changed or deleted here."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class MembershipInline(admin.TabularInline):
    """Staff add a company's admins and viewers here (or with `manage.py add_member`)."""

    model = Membership
    extra = 1
    verbose_name = "member (sees this company's billing page)"
    autocomplete_fields = ["user"]


LEDGER_PAGE = 50


class LowBalanceFilter(admin.SimpleListFilter):
    title = "low balance"
    parameter_name = "low_balance"

    def lookups(self, request, model_admin):
        return [("yes", "Below threshold"), ("no", "At or above threshold")]

    def queryset(self, request, queryset):
        below = {"credit_balance__balance__lt": F("low_balance_threshold")}
        if self.value() == "yes":
            return queryset.filter(**below)
        if self.value() == "no":
            return queryset.exclude(**below)
        return queryset


class CompanyAdminForm(forms.ModelForm):
    class Meta:
        model = Company
        fields = [  # the admin narrows these to its fieldsets
            "name",
            "external_id",
            "timezone",
            "currency",
            "is_active",
            "low_balance_threshold",
            "overdraft_allowance",
            "monthly_spend_limit",
            "billing_emails",
        ]
        field_classes = dict.fromkeys(CREDIT_POLICY_FIELDS, AmountFormField)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        currency = self.instance.currency or "USD"
        for name in CREDIT_POLICY_FIELDS:
            field = self.fields[name]
            field.label = f"{field.label} ({currency})"

    def clean_external_id(self) -> str | None:
        value = self.cleaned_data["external_id"]
        if value:
            try:
                refuse_ambiguous_external_id(value, company=self.instance)
            except ServiceError as exc:
                raise forms.ValidationError(exc.message)
        return value

    def clean_timezone(self) -> str:
        value = self.cleaned_data["timezone"]
        instance = self.instance
        if instance.pk and value != instance.timezone and instance.usage.exists():
            raise forms.ValidationError(
                f"Cannot change once usage is recorded: {TIMEZONE_CHANGE_HINT}."
            )
        return value


@admin.register(Company)
class CompanyAdmin(AuditedAdmin):
    form = CompanyAdminForm
    list_display = [
        "name",
        "external_id",
        "timezone",
        "balance_display",
        "month_to_date_spend_display",
        "low_balance_flag",
        "is_active",
        "created_local",
    ]
    list_filter = ["is_active", LowBalanceFilter, "timezone"]
    search_fields = ["name", "external_id", "id"]
    list_select_related = ["credit_balance"]
    readonly_fields = ["id", "billing_page", "created_local", "updated_local"]
    inlines = [MembershipInline]
    change_form_template = "admin/billing/company/change_form.html"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "billing_page",
                    "name",
                    "external_id",
                    "timezone",
                    "currency",
                    "is_active",
                ]
            },
        ),
        (
            "Credit policy",
            {
                "fields": [
                    "low_balance_threshold",
                    "overdraft_allowance",
                    "monthly_spend_limit",
                    "billing_emails",
                ]
            },
        ),
        ("Timestamps", {"fields": ["created_local", "updated_local"]}),
    ]

    audited_fields = CREDIT_POLICY_FIELDS
    created_local = staticmethod(time_column("created_at", "Created", zone=lambda c: c.tz))
    updated_local = staticmethod(time_column("updated_at", "Updated", zone=lambda c: c.tz))
    audit_prefix = "company.credit_policy"

    def audit_company(self, obj: Company) -> Company:
        return obj

    change_list_template = "admin/billing/company/change_list.html"

    def changelist_view(self, request, extra_context=None):
        # Spend leaves out unpriced usage: the list says so (one query, partial index).
        from usage.admin import unpriced_warning

        context = {**unpriced_warning(request), "unpriced_lead": "Spend leaves out"}
        return super().changelist_view(request, {**context, **(extra_context or {})})

    def get_changelist_instance(self, request):
        # Month-to-date spend for the whole page in one query over the daily
        # rollup (each company's own time zone), not one query per row. The
        # admin is the top layer, so it may read usage; billing's core never does.
        from usage.selectors import month_to_date_spend_by_company

        changelist = super().get_changelist_instance(request)
        page = list(changelist.result_list)
        spend = month_to_date_spend_by_company(page)
        for company in page:
            company.month_to_date_spend = spend[company.pk]
        return changelist

    @admin.display(description="Billing page")
    def billing_page(self, obj: Company) -> str:
        if obj.pk is None:
            return "—"
        url = reverse("billing:company", args=[obj.pk])
        return format_html('<a href="{}">Open the billing page</a> (usage, credits)', url)

    @admin.display(description="Balance", ordering="credit_balance__balance")
    def balance_display(self, obj: Company) -> str:
        return format_money(_balance_of(obj), obj.currency)

    @admin.display(description="Spend this month")
    def month_to_date_spend_display(self, obj: Company) -> str:
        return format_money(getattr(obj, "month_to_date_spend", None), obj.currency)

    @admin.display(description="Low balance", boolean=True)
    def low_balance_flag(self, obj: Company) -> bool:
        return _balance_of(obj) < obj.low_balance_threshold

    def get_urls(self):
        view = self.admin_site.admin_view(self.credits_view)
        return [
            path("<uuid:object_id>/credits/", view, name="billing_company_credits"),
            *super().get_urls(),
        ]

    def credits_view(self, request: HttpRequest, object_id) -> HttpResponse:
        """Post a purchase, grant, refund or adjustment after a confirmation step; the
        ledger with its running balance."""
        from usage.selectors import unpriced_of  # the admin is the top layer (see above)

        company = get_object_or_404(Company, pk=object_id)
        if not self.has_change_permission(request, company):
            raise PermissionDenied
        form = CreditPostingForm(request.POST or None, company=company)
        summary = credit_summary(company)
        confirm = None
        if request.method == "POST" and form.is_valid():
            if "confirm" in request.POST:
                posted = self._post_credit(request, company, form)
                if posted is not None:
                    return posted
            elif "edit" not in request.POST:
                confirm = _confirmation(form, company, summary)
        # Keyset pages (`?before=<id>`): a usage-heavy ledger is never counted.
        ledger = company_ledger(company)
        before = request.GET.get("before") or ""
        if before:
            # ASCII digits only: str.isdigit() also admits '²', which int() refuses.
            if not (before.isascii() and before.isdigit() and len(before) <= 18):
                raise InvalidInput(
                    "Invalid before.", fields={"before": "must be a ledger entry id"}
                )
            ledger = ledger.filter(id__lt=int(before))
        ledger = list(ledger[:LEDGER_PAGE])
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": company,
            "title": f"Credits of {company.name}",
            "form": form,
            "confirm": confirm,
            "summary": summary,
            "ledger": ledger,
            "older": ledger[-1].pk if len(ledger) == LEDGER_PAGE else None,
            "change_url": reverse("admin:billing_company_change", args=[company.pk]),
            "charge_base": reverse("billing:company", args=[company.pk]),
            "unpriced": unpriced_of(company),
            "unpriced_lead": "The balance leaves out",
        }
        with timezone.override(company.tz):
            return TemplateResponse(request, "admin/billing/company/credits.html", context)

    def _post_credit(self, request, company: Company, form: CreditPostingForm):
        try:
            posting = post_credit(company=company, actor=request.user, **form.posting())
        except ServiceError as exc:
            for field, message in (exc.fields or {}).items():
                if field in form.fields:
                    form.add_error(field, message)
            if not exc.fields or not set(exc.fields) & set(form.fields):
                form.add_error(None, exc.message)
            return None
        entry = posting.entry
        verb = "Posted" if posting.created else "Already posted"
        messages.success(
            request,
            f"{verb}: {entry.get_kind_display()} of "
            f"{format_money(entry.amount, company.currency)}; balance now "
            f"{format_money(entry.balance_after, company.currency)}.",
        )
        return HttpResponseRedirect(request.path)


@dataclass(frozen=True)
class CreditConfirmation:
    """What the confirmation step shows before anything is posted."""

    kind: str
    amount: Decimal
    reason: str
    expires_at: datetime | None
    balance_before: Decimal
    balance_after: Decimal
    debt_paid: Decimal  # of the company's debt, what this credit pays off first
    hidden: dict


def _confirmation(form: CreditPostingForm, company: Company, summary) -> CreditConfirmation:
    amount = form.cleaned_data["amount"]
    return CreditConfirmation(
        kind=form.kind_label(),
        amount=amount,
        reason=form.cleaned_data["reason"],
        expires_at=form.expires_at(),
        balance_before=summary.balance,
        # A posting adds exactly its amount to the balance (docs/ledger.md).
        balance_after=summary.balance + amount,
        debt_paid=min(summary.debt, amount) if amount > 0 else Decimal(0),
        hidden=form.as_hidden_data(),
    )


def _balance_of(company: Company):
    """The balance, zero for a company that has no balance row yet (made through the API)."""
    balance = getattr(company, "credit_balance", None)
    return balance.balance if balance is not None else ZERO


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "company", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__username", "user__email", "company__name", "company__external_id"]
    list_select_related = ["user", "company"]
    autocomplete_fields = ["user", "company"]


@admin.register(ModelPrice)
class ModelPriceAdmin(AuditedAdmin):
    """Adding a price goes through set_model_price (it closes the open period of the
    same model and tier, and fills in the documented defaults). A period's rates are
    fixed once written (the database refuses an edit): a wrong one is corrected with
    `manage.py set_model_price --correct ID`, then `reprice_usage --reprice-priced`."""

    form = ModelPriceForm
    list_display = [
        "model",
        "service_tier",
        "input_price",
        "cached_input_price",
        "cache_write_price",
        "output_price",
        "long_context_threshold",
        "effective_from_utc",
        "effective_to_utc",
        "superseded_at",
    ]
    list_filter = ["service_tier", ("superseded_at", admin.EmptyFieldListFilter)]
    search_fields = ["model", "source"]
    date_hierarchy = "effective_from"
    readonly_fields = [
        "currency",
        "source",
        "corrects",
        "superseded_at",
        "created_at",
        "created_by",
    ]
    fieldsets = [
        (None, {"fields": ["model", "service_tier", "currency", "effective_from", "effective_to"]}),
        ("Rates, USD per million tokens", {"fields": list(RATE_FIELDS)}),
        (
            "Long context: above the threshold these rates apply to the whole request",
            {"fields": ["long_context_threshold", *LONG_RATE_FIELDS]},
        ),
        (
            "Provenance",
            {"fields": ["source", "corrects", "superseded_at", "created_at", "created_by"]},
        ),
    ]

    audited_fields = PRICE_FIELDS
    audit_prefix = "model_price"
    effective_from_utc = staticmethod(time_column("effective_from", "In effect from", zone=utc))
    effective_to_utc = staticmethod(time_column("effective_to", "Until", zone=utc))

    @admin.display(description="Uncached input / 1M", ordering="input_per_million")
    def input_price(self, obj: ModelPrice) -> str:
        return format_price(obj.input_per_million, obj.currency)

    @admin.display(description="Cached input / 1M", ordering="cached_input_per_million")
    def cached_input_price(self, obj: ModelPrice) -> str:
        return format_price(obj.cached_input_per_million, obj.currency)

    @admin.display(description="Cache write 5m / 1M", ordering="cache_write_5m_per_million")
    def cache_write_price(self, obj: ModelPrice) -> str:
        return format_price(obj.cache_write_5m_per_million, obj.currency)

    @admin.display(description="Output / 1M", ordering="output_per_million")
    def output_price(self, obj: ModelPrice) -> str:
        return format_price(obj.output_per_million, obj.currency)

    def get_readonly_fields(self, request, obj: ModelPrice | None = None):
        if obj is None:
            return [*self.readonly_fields, "effective_to"]  # set_model_price opens a period
        # Only the end of a period that priced nothing may move; rates never do.
        fixed = [f for f in PRICE_FIELDS if f != "effective_to"]
        if obj.superseded_at is not None or obj.usage.exists():
            return [*self.readonly_fields, *PRICE_FIELDS]
        return [*self.readonly_fields, *fixed]

    def save_model(self, request, obj: ModelPrice, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        price = form.set_price(actor=request.user)
        obj.pk, obj.created_at, obj.created_by = price.pk, price.created_at, price.created_by


@admin.register(CreditBalance)
class CreditBalanceAdmin(ReadOnlyAdmin):
    list_display = ["company", "balance_shown", "debt_shown", "updated_local"]
    search_fields = ["company__name", "company__external_id"]
    list_select_related = ["company"]
    fields = readonly_fields = ["company", "balance_exact", "debt_exact", "updated_local"]
    balance_shown = staticmethod(money_column("balance", "Balance"))
    debt_shown = staticmethod(money_column("debt", "Debt"))
    balance_exact = staticmethod(exact_money_field("balance", "Balance"))
    debt_exact = staticmethod(exact_money_field("debt", "Debt"))
    updated_local = staticmethod(time_column("updated_at", "Updated"))


@admin.register(LedgerEntry)
class LedgerEntryAdmin(CappedCountMixin, ReadOnlyAdmin):
    # Who and when it expires are in the detail: Amount stays on screen at 1366 px.
    list_display = [
        "id",
        "created_local",
        "company",
        "kind",
        "amount_shown",
        "balance_after_shown",
        "charge",
        "reason",
    ]
    fields = readonly_fields = [
        "id",
        "company",
        "kind",
        "amount_exact",
        "balance_after_exact",
        "reason",
        "actor",
        "idempotency_key",
        "charge",
        "expires_local",
        "created_local",
        "metadata",
    ]
    created_local = staticmethod(time_column("created_at", "When"))
    expires_local = staticmethod(time_column("expires_at", "Expires"))
    amount_shown = staticmethod(money_column("amount", "Amount"))
    balance_after_shown = staticmethod(
        money_column("balance_after", "Balance after", ordering="id")
    )
    amount_exact = staticmethod(exact_money_field("amount", "Amount"))
    balance_after_exact = staticmethod(exact_money_field("balance_after", "Balance after"))

    @admin.display(description="Generation")
    def charge(self, obj: LedgerEntry) -> str:
        if obj.usage_id is None:
            return "—"
        url = reverse("billing:charge", args=[obj.company_id, obj.usage_id])
        return format_html('<a href="{}">Explain the charge</a>', url)

    list_filter = ["kind", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["company__name", "company__external_id", "idempotency_key", "=usage_id"]
    list_select_related = ["company", "actor"]
    # No date_hierarchy: it lists years with a DISTINCT over 10M entries;
    # the created_at list filter above offers the date ranges.


class APIKeyAdminForm(forms.ModelForm):
    daily_limit = AmountFormField(
        required=False, help_text=APIKey._meta.get_field("daily_limit").help_text
    )
    monthly_limit = AmountFormField(
        required=False, help_text=APIKey._meta.get_field("monthly_limit").help_text
    )

    class Meta:
        model = APIKey
        fields = ["name", "company", "daily_limit", "monthly_limit", "revoked_at"]

    def clean(self) -> dict:
        data = super().clean()
        company = data.get("company", self.instance.company if self.instance.pk else None)
        try:
            check_limits_scope(company, data.get("daily_limit"), data.get("monthly_limit"))
            for name in ("daily_limit", "monthly_limit"):
                parse_limit(data.get(name), name)
        except InvalidInput as exc:
            for name, reason in exc.fields.items():
                self.add_error(name, reason)
        return data


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    """Limits are changed through billing.api_keys.set_api_key_limits (its checks, its
    audit event), as `manage.py set_api_key_limits` does; what each key used of them is
    on the company's billing page."""

    form = APIKeyAdminForm
    list_display = [
        "name",
        "prefix",
        "company",
        "daily_limit_shown",
        "monthly_limit_shown",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "company__name", "company__external_id"]
    list_select_related = ["company"]
    autocomplete_fields = ["company"]
    readonly_fields = ["prefix", "key_hash", "created_at", "created_by", "last_used_at", "holds"]
    daily_limit_shown = staticmethod(money_column("daily_limit", "Daily limit", empty="none"))
    monthly_limit_shown = staticmethod(money_column("monthly_limit", "Monthly limit", empty="none"))

    def has_add_permission(self, request) -> bool:
        # Secrets are shown once; create keys with `manage.py create_api_key`.
        return False

    def get_readonly_fields(self, request, obj: APIKey | None = None):
        # The scope of a key is its secret's meaning: never moved to another company.
        return [*self.readonly_fields, "company"] if obj is not None else self.readonly_fields

    @admin.display(description="Open holds")
    def holds(self, obj: APIKey) -> str:
        now = timezone.now()
        held = (
            Reservation.objects.holding(now)
            .filter(api_key=obj)
            .aggregate(total=models.Sum("amount"), n=models.Count("pk"))
        )
        currency = obj.company.currency if obj.company_id else "USD"
        return f"{held['n']} holding {format_money(held['total'] or ZERO, currency)}"

    def save_model(self, request, obj: APIKey, form, change: bool) -> None:
        limits = {"daily_limit", "monthly_limit"} & set(form.changed_data)
        others = [name for name in form.changed_data if name not in limits]
        if others:
            obj.save(update_fields=others)
        if limits:
            try:
                set_api_key_limits(
                    prefix=obj.prefix,
                    actor=request.user,
                    **{name: form.cleaned_data[name] for name in limits},
                )
            except InvalidInput as exc:  # the form checked the same rules first
                raise PermissionDenied(exc.message) from exc


class HoldingFilter(admin.SimpleListFilter):
    title = "holding now"
    parameter_name = "holding"

    def lookups(self, request, model_admin):
        return [("yes", "Open and not expired"), ("expired", "Open past expiry")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "yes":
            return queryset.holding(now)
        if self.value() == "expired":
            return queryset.past_expiry(now)
        return queryset


@admin.register(Reservation)
class ReservationAdmin(CappedCountMixin, ReadOnlyAdmin):
    """Holds on budget (never money): read-only, released through the API."""

    list_display = [
        "created_local",
        "company",
        "api_key",
        "status",
        "amount_shown",
        "expires_local",
        "settled_cost_shown",
        "idempotency_key",
    ]
    fields = readonly_fields = [
        "id",
        "company",
        "api_key",
        "status",
        "amount_exact",
        "estimate",
        "job_id",
        "draft_job_id",
        "idempotency_key",
        "expires_local",
        "settled_usage_id",
        "settled_cost_exact",
        "closed_local",
        "created_local",
    ]
    created_local = staticmethod(time_column("created_at", "Created"))
    expires_local = staticmethod(time_column("expires_at", "Expires"))
    closed_local = staticmethod(time_column("closed_at", "Closed"))
    amount_shown = staticmethod(money_column("amount", "Held"))
    amount_exact = staticmethod(exact_money_field("amount", "Held"))
    settled_cost_shown = staticmethod(money_column("settled_cost", "Settled at"))
    settled_cost_exact = staticmethod(exact_money_field("settled_cost", "Settled at"))
    list_filter = ["status", HoldingFilter]
    search_fields = [
        "=id",
        "company__name",
        "company__external_id",
        "idempotency_key",
        "=settled_usage_id",
    ]
    list_select_related = ["company", "api_key"]


@admin.register(AuditEvent)
class AuditEventAdmin(CappedCountMixin, ReadOnlyAdmin):
    created_local = staticmethod(time_column("created_at", "When"))
    list_display = [
        "created_local",
        "action",
        "actor",
        "actor_label",
        "company",
        "object_type",
        "object_id",
    ]
    list_filter = ["action", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["action", "object_id", "company__name", "actor__username", "actor_label"]
    list_select_related = ["actor", "company"]


@admin.register(CreditLot)
class CreditLotAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "company",
        "funding",
        "amount_shown",
        "consumed_shown",
        "expired_shown",
        "remaining_shown",
        "expires_local",
        "created_local",
    ]
    fields = readonly_fields = [
        "id",
        "company",
        "entry",
        "funding",
        "amount_exact",
        "consumed_exact",
        "expired_exact",
        "remaining_exact",
        "expires_local",
        "last_consumed_local",
        "created_local",
    ]
    amount_shown = staticmethod(money_column("amount", "Amount"))
    consumed_shown = staticmethod(money_column("consumed", "Consumed"))
    expired_shown = staticmethod(money_column("expired", "Expired"))
    remaining_shown = staticmethod(money_column("remaining", "Remaining"))
    amount_exact = staticmethod(exact_money_field("amount", "Amount"))
    consumed_exact = staticmethod(exact_money_field("consumed", "Consumed"))
    expired_exact = staticmethod(exact_money_field("expired", "Expired"))
    remaining_exact = staticmethod(exact_money_field("remaining", "Remaining"))
    expires_local = staticmethod(time_column("expires_at", "Expires"))
    last_consumed_local = staticmethod(time_column("last_consumed_at", "Last consumed"))
    created_local = staticmethod(time_column("created_at", "Created"))
    list_filter = ["funding", ("expires_at", admin.EmptyFieldListFilter)]
    search_fields = ["company__name", "company__external_id", "=entry__id"]
    list_select_related = ["company"]


@admin.register(BillingAlert)
class BillingAlertAdmin(ReadOnlyAdmin):
    list_display = [
        "created_local",
        "company",
        "api_key",
        "kind",
        "period",
        "balance_shown",
        "threshold_shown",
        "spend_shown",
        "emailed_local",
        "rearmed_local",
    ]
    fields = readonly_fields = [
        "company",
        "api_key",
        "kind",
        "period",
        "balance_exact",
        "threshold_exact",
        "spend_exact",
        "recipients",
        "created_local",
        "emailed_local",
        "rearmed_local",
    ]
    created_local = staticmethod(time_column("created_at", "Raised"))
    emailed_local = staticmethod(time_column("emailed_at", "Emailed"))
    rearmed_local = staticmethod(time_column("rearmed_at", "Re-armed"))
    balance_shown = staticmethod(money_column("balance", "Balance"))
    threshold_shown = staticmethod(money_column("threshold", "Threshold"))
    spend_shown = staticmethod(money_column("month_to_date_spend", "Spend in the period"))
    balance_exact = staticmethod(exact_money_field("balance", "Balance"))
    threshold_exact = staticmethod(exact_money_field("threshold", "Threshold"))
    spend_exact = staticmethod(exact_money_field("month_to_date_spend", "Spend in the period"))
    list_filter = ["kind", ("emailed_at", admin.EmptyFieldListFilter)]
    search_fields = ["company__name", "company__external_id", "api_key__name", "recipients"]
    list_select_related = ["company", "api_key"]
    date_hierarchy = "created_at"


@admin.register(Statement)
class StatementAdmin(ReadOnlyAdmin):
    """Issued monthly statements (usage.statements): sealed, shown, never edited here."""

    list_display = [
        "company",
        "month_shown",
        "opening_shown",
        "movements_shown",
        "closing_shown",
        "closed_local",
        "hash_prefix",
        "page",
    ]
    fields = readonly_fields = [
        "company",
        "month_shown",
        "timezone",
        "period_start_local",
        "period_end_local",
        "entries_after",
        "entries_through",
        "entry_count",
        "opening_exact",
        "purchases_exact",
        "grants_exact",
        "refunds_exact",
        "adjustments_exact",
        "expiries_exact",
        "usage_exact",
        "late_usage_exact",
        "corrections_exact",
        "closing_exact",
        "generations",
        "questions",
        "content_hash",
        "closed_local",
        "lines_count",
        "page",
    ]
    opening_shown = staticmethod(money_column("opening", "Opening"))
    closing_shown = staticmethod(money_column("closing", "Closing"))
    closed_local = staticmethod(time_column("closed_at", "Issued"))
    period_start_local = staticmethod(time_column("period_start", "From"))
    period_end_local = staticmethod(time_column("period_end", "To"))
    opening_exact = staticmethod(exact_money_field("opening", "Opening balance"))
    purchases_exact = staticmethod(exact_money_field("purchases", "Purchases"))
    grants_exact = staticmethod(exact_money_field("grants", "Grants"))
    refunds_exact = staticmethod(exact_money_field("refunds", "Refunds"))
    adjustments_exact = staticmethod(exact_money_field("adjustments", "Adjustments"))
    expiries_exact = staticmethod(exact_money_field("expiries", "Expiries"))
    usage_exact = staticmethod(exact_money_field("usage", "Usage"))
    late_usage_exact = staticmethod(exact_money_field("late_usage", "Late usage"))
    corrections_exact = staticmethod(exact_money_field("corrections", "Corrections"))
    closing_exact = staticmethod(exact_money_field("closing", "Closing balance"))
    list_filter = ["month"]
    search_fields = ["company__name", "company__external_id", "=content_hash"]
    list_select_related = ["company"]
    ordering = ["-month", "company__name"]

    @admin.display(description="Month", ordering="month")
    def month_shown(self, obj: Statement) -> str:
        return f"{obj.month:%B %Y}"

    @admin.display(description="Movements")
    def movements_shown(self, obj: Statement):
        return money_html(obj.movements, obj.company.currency)

    @admin.display(description="Hash")
    def hash_prefix(self, obj: Statement):
        return format_html('<code title="{}">{}</code>', obj.content_hash, obj.content_hash[:12])

    @admin.display(description="Lines")
    def lines_count(self, obj: Statement) -> str:
        # Not inline: a company with thousands of jobs has thousands of lines; the
        # statement page shows them, in the order they were issued.
        return f"{obj.lines.count():,} (on the statement page)"

    @admin.display(description="Statement page")
    def page(self, obj: Statement):
        url = reverse("billing:statement", args=[obj.company_id, f"{obj.month:%Y-%m}"])
        csv_url = reverse("billing:statement_csv", args=[obj.company_id, f"{obj.month:%Y-%m}"])
        return format_html('<a href="{}">Printable page</a> · <a href="{}">CSV</a>', url, csv_url)

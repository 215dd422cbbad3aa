"""Admin for platform staff: tenants, prices, keys, and the read-only ledger.

Money is never edited here: ledger entries and the balance are read-only,
and corrections are new entries posted through billing.services.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from billing.models import (
    APIKey,
    AuditEvent,
    Company,
    CreditBalance,
    LedgerEntry,
    Membership,
    ModelPrice,
)
from billing.money import format_money


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


@admin.register(Company)
class CompanyAdmin(admin.ModelAdmin):
    list_display = ["name", "external_id", "timezone", "balance_display", "is_active", "created_at"]
    list_filter = ["is_active", "timezone"]
    search_fields = ["name", "external_id", "id"]
    list_select_related = ["credit_balance"]
    readonly_fields = ["id", "billing_page", "created_at", "updated_at"]
    inlines = [MembershipInline]
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
        ("Timestamps", {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description="Billing page")
    def billing_page(self, obj: Company) -> str:
        if obj.pk is None:
            return "—"
        url = reverse("billing:company", args=[obj.pk])
        return format_html('<a href="{}">Open the billing page</a> (usage, credits)', url)

    @admin.display(description="Balance", ordering="credit_balance__balance")
    def balance_display(self, obj: Company) -> str:
        balance = getattr(obj, "credit_balance", None)
        return format_money(balance.balance if balance else 0, obj.currency)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "company", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__username", "user__email", "company__name", "company__external_id"]
    list_select_related = ["user", "company"]
    autocomplete_fields = ["user", "company"]


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = [
        "model",
        "input_per_million",
        "cached_input_per_million",
        "output_per_million",
        "effective_from",
        "effective_to",
    ]
    list_filter = ["model"]
    search_fields = ["model"]
    date_hierarchy = "effective_from"
    readonly_fields = ["created_at", "created_by"]


@admin.register(CreditBalance)
class CreditBalanceAdmin(ReadOnlyAdmin):
    list_display = ["company", "balance", "updated_at"]
    search_fields = ["company__name", "company__external_id"]
    list_select_related = ["company"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "created_at",
        "company",
        "kind",
        "amount",
        "balance_after",
        "reason",
        "actor",
        "expires_at",
    ]
    list_filter = ["kind", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["company__name", "company__external_id", "idempotency_key", "=usage_id"]
    list_select_related = ["company", "actor"]
    show_full_result_count = False
    date_hierarchy = "created_at"


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "company", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix", "company__name", "company__external_id"]
    list_select_related = ["company"]
    autocomplete_fields = ["company"]
    readonly_fields = ["prefix", "key_hash", "created_at", "created_by", "last_used_at"]

    def has_add_permission(self, request) -> bool:
        # Secrets are shown once; create keys with `manage.py create_api_key`.
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "action",
        "actor",
        "actor_label",
        "company",
        "object_type",
        "object_id",
    ]
    list_filter = ["action"]
    search_fields = ["action", "object_id", "company__name", "actor__username", "actor_label"]
    list_select_related = ["actor", "company"]
    date_hierarchy = "created_at"

"""Admin for jobs, recorded usage (read-only), rollups and rejected events."""

from __future__ import annotations

from django.contrib import admin, messages

from billing.admin import ReadOnlyAdmin
from usage import inbox
from usage.models import Job, QuestionGenerationUsage, RejectedEvent, UsageDailyRollup
from usage.services import link_drafts


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["title", "company", "id", "draft_id", "created_at"]
    search_fields = ["=id", "title", "draft_id", "company__name", "company__external_id"]
    list_select_related = ["company"]
    autocomplete_fields = ["company"]
    readonly_fields = ["id", "created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        # Moving a saved job to another company would link its usage across tenants.
        return [*self.readonly_fields, "company"] if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change) -> None:
        """Save, then link the job's draft usage, as save_job does (the admin's transaction)."""
        super().save_model(request, obj, form, change)
        link_drafts(company=obj.company, job=obj)


@admin.register(QuestionGenerationUsage)
class QuestionGenerationUsageAdmin(ReadOnlyAdmin):
    list_display = [
        "occurred_at",
        "company",
        "job",
        "draft_job_id",
        "status",
        "model",
        "question_count",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "cost_source",
    ]
    list_filter = ["status", "cost_source", "prepaid", "model"]
    search_fields = ["=id", "=draft_job_id", "=idempotency_key", "=job__id"]
    list_select_related = ["company", "job"]
    raw_id_fields = ["company", "job", "price"]
    show_full_result_count = False
    date_hierarchy = "occurred_at"


@admin.register(UsageDailyRollup)
class UsageDailyRollupAdmin(ReadOnlyAdmin):
    list_display = ["day", "company", "model", "status", "generations", "questions", "cost"]
    list_filter = ["status", "model"]
    search_fields = ["company__name", "company__external_id"]
    list_select_related = ["company"]
    show_full_result_count = False


@admin.register(RejectedEvent)
class RejectedEventAdmin(admin.ModelAdmin):
    list_display = [
        "received_at",
        "source",
        "company_ref",
        "idempotency_key",
        "error_code",
        "state",
    ]
    list_filter = ["state", "error_code", "source"]
    search_fields = ["company_ref", "idempotency_key", "reason"]
    readonly_fields = [
        "received_at",
        "source",
        "error_code",
        "reason",
        "payload",
        "usage",
        "resolved_at",
    ]

    actions = ["replay_selected"]

    @admin.action(description="Replay selected events")
    def replay_selected(self, request, queryset) -> None:
        summary = inbox.replay(queryset.order_by("received_at"), actor=request.user)
        level = messages.SUCCESS if not summary.failed else messages.WARNING
        self.message_user(
            request,
            f"{summary.replayed} replayed, {summary.failed} still failing (see their reason).",
            level,
        )

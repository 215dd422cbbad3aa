"""Admin for jobs, recorded usage (read-only), rollups and rejected events.

Staff see pending and abandoned drafts (filters, and a per-company backlog
page with counts and cost), reconcile selected drafts through
usage.reconcile, and see which usage still needs a price.
"""

from __future__ import annotations

import re
import tempfile
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Min, Q, UUIDField
from django.db.models.expressions import RawSQL
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString

from billing.admin import ReadOnlyAdmin
from billing.admin_display import exact_money_field, money_column, time_column
from billing.admin_paging import CappedCountMixin
from billing.forms import ModelPriceForm
from billing.models import Company, ModelPrice
from billing.money import format_money, money_html
from core.dates import format_instant
from core.errors import InvalidInput, ServiceError
from core.locks import advisory_xact_lock
from usage import inbox, selectors
from usage.forms import ProviderImportForm, ProviderReconciliationForm
from usage.jobs import link_drafts, saved_job_sql
from usage.models import (
    CostSource,
    Job,
    Provider,
    ProviderBucket,
    ProviderCostLine,
    ProviderProjectMap,
    ProviderUsageLine,
    QuestionGenerationUsage,
    RejectedEvent,
    UsageDailyRollup,
    UsageStatus,
)
from usage.pricing import LOCK_NAME as REPRICE_LOCK
from usage.pricing import RepriceReport, reprice_usage
from usage.provider_reconciliation import (
    STATUS_LABELS,
    Line,
    Tolerance,
    default_range,
    providers_with_data,
    reconcile_provider,
)
from usage.provider_usage import import_provider_usage, parse_project_map, stored_project_map
from usage.reconcile import reconcile_selected_drafts


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

    def save_model(self, request, obj: Job, form, change: bool) -> None:
        # The admin wraps this in the change form's transaction: the job and
        # the linking of its draft usage commit together, as through the API.
        super().save_model(request, obj, form, change)
        linked = link_drafts(company=obj.company, job=obj)
        if linked:
            self.message_user(request, f"Linked {linked} draft usage rows to this job.")


class PendingDraftFilter(admin.SimpleListFilter):
    title = "pending drafts"
    parameter_name = "pending"

    def lookups(self, request, model_admin):
        return [
            ("all", "Pending (draft or abandoned)"),
            ("saved", "Job saved, not yet linked"),
            ("draft", "Pending, not abandoned"),
            ("abandoned", "Abandoned"),
        ]

    def queryset(self, request, queryset):
        pending = queryset.filter(job__isnull=True)
        if self.value() == "all":
            return pending
        if self.value() == "draft":
            return pending.filter(status=UsageStatus.DRAFT)
        if self.value() == "abandoned":
            return pending.filter(status=UsageStatus.ABANDONED)
        if self.value() == "saved":
            return _with_saved_job(pending)
        return queryset


def pricing_form_initial(model: str) -> dict:
    """The form's start: the model, and its first unpriced usage's UTC day as the start."""
    first = (
        QuestionGenerationUsage.objects.filter(
            cost_source=CostSource.UNPRICED, model=model
        ).aggregate(first=Min("occurred_at"))["first"]
        if model
        else None
    )
    start = (
        first.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) if first else None
    )
    return {"model": model, "effective_from": start}


def _form_errors(form, exc: ServiceError) -> None:
    """A service's refusal on the fields it names, else above the form."""
    named = {k: v for k, v in (exc.fields or {}).items() if k in form.fields}
    for field, message in named.items():
        form.add_error(field, f"{message}: {exc.message}" if len(named) == 1 else message)
    if not named:
        form.add_error(None, exc.message)


def _with_saved_job(pending):
    """Rows whose draft belongs to a saved job already (the rule of usage.jobs)."""
    table = QuestionGenerationUsage._meta.db_table
    rule = saved_job_sql(f'"{table}"."company_id"', f'"{table}"."draft_job_id"')
    saved_job = RawSQL(rule, (), output_field=UUIDField())
    return pending.alias(saved_job=saved_job).filter(saved_job__isnull=False)


def unpriced_models(request) -> list[dict]:
    """Unpriced usage per model, read once per request (the partial index
    `usage_unpriced`: cheap at any table size) for the warning and the filters."""
    if not hasattr(request, "_unpriced_models"):
        request._unpriced_models = selectors.unpriced_usage_by_model()
    return request._unpriced_models


def unpriced_warning(request) -> dict:
    """The context of admin/usage/_unpriced_warning.html."""
    rows = unpriced_models(request)
    return {"unpriced": [selectors.Unpriced(row["model"], row["rows"]) for row in rows]}


class NeedsPriceFilter(admin.SimpleListFilter):
    title = "pricing"
    parameter_name = "needs_price"

    def lookups(self, request, model_admin):
        count = sum(row["rows"] for row in unpriced_models(request))
        return [("yes", f"Needs a price ({count})")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(cost_source=CostSource.UNPRICED)
        return queryset


class StatusFilter(admin.ChoicesFieldListFilter):
    """Django's status filter, plus `job IS NULL` for draft and abandoned.

    The check constraint usage_status_matches_job makes it redundant, but it
    lets PostgreSQL read the partial index usage_pending_drafts instead of
    scanning the table for a status that only 2 % of rows have.
    """

    def queryset(self, request, queryset):
        queryset = super().queryset(request, queryset)
        if self.lookup_val and set(self.lookup_val) <= {UsageStatus.DRAFT, UsageStatus.ABANDONED}:
            queryset = queryset.filter(job__isnull=True)
        return queryset


class UtcDayFilter(admin.SimpleListFilter):
    """Usage that occurred on one UTC day (`utc_day=YYYY-MM-DD`): the provider
    reconciliation's drill-down, which compares by the providers' UTC days."""

    title = "UTC day"
    parameter_name = "utc_day"

    def lookups(self, request, model_admin):
        # Only the chosen day: listing every day would scan the table.
        return [(self.value(), self.value())] if self.value() else []

    def has_output(self) -> bool:
        return bool(self.value())

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            day = date.fromisoformat(self.value())
        except ValueError as exc:
            raise IncorrectLookupParameters(f"utc_day {self.value()!r} is not a date") from exc
        start = datetime.combine(day, time.min, tzinfo=UTC)
        return queryset.filter(occurred_at__gte=start, occurred_at__lt=start + timedelta(days=1))


class ModelFilter(admin.SimpleListFilter):
    """Models that have a price, plus the models of unpriced usage.

    Django's default filter on `model` runs `SELECT DISTINCT model` over the
    whole table (a 10M-row scan on every page); the price table is tiny and
    unpriced usage is read through the partial index `usage_unpriced`. Models
    seen only with a reported cost are left out of the list (filter by URL).
    """

    title = "model"
    parameter_name = "model"

    def lookups(self, request, model_admin):
        priced = ModelPrice.objects.order_by().values_list("model", flat=True).distinct()
        models = sorted(set(priced) | {row["model"] for row in unpriced_models(request)})
        return [(model, model) for model in models]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(model=self.value())
        return queryset


@admin.register(QuestionGenerationUsage)
class QuestionGenerationUsageAdmin(CappedCountMixin, ReadOnlyAdmin):
    # Cost beside the time, so it is on screen at 1366 px beside the filters and on
    # a phone; the tokens are in the detail and on the charge page it links to.
    list_display = [
        "occurred_local",
        "cost_shown",
        "company",
        "job_or_draft",
        "model",
        "question_count",
        "charge",
    ]
    fields = readonly_fields = [
        "id",
        "company",
        "job",
        "draft_job_id",
        "status",
        "model",
        "question_count",
        "prompt_tokens",
        "cached_prompt_tokens",
        "completion_tokens",
        "cost_exact",
        "cost_source",
        "price",
        "prepaid",
        "charge",
        "occurred_local",
        "recorded_local",
        "reconciled_local",
        "abandoned_local",
        "idempotency_key",
        "processing_time_ms",
        "metadata",
    ]
    occurred_local = staticmethod(time_column("occurred_at", "Occurred"))
    recorded_local = staticmethod(time_column("recorded_at", "Recorded"))
    reconciled_local = staticmethod(time_column("reconciled_at", "Reconciled"))
    abandoned_local = staticmethod(time_column("abandoned_at", "Abandoned"))
    cost_exact = staticmethod(exact_money_field("cost", "Cost"))

    @admin.display(description="Job or draft", ordering="job__title")
    def job_or_draft(self, obj: QuestionGenerationUsage) -> str:
        if obj.job_id:
            return obj.job.title
        label = "Abandoned draft" if obj.status == UsageStatus.ABANDONED else "Draft"
        return f"{label} {obj.draft_job_id}"

    @admin.display(description="Cost", ordering="cost")
    def cost_shown(self, obj: QuestionGenerationUsage):
        if obj.cost is None:
            return SafeString('<span class="no-price">no price</span>')
        shown = money_html(obj.cost, obj.company.currency)
        if obj.cost_source == CostSource.REPORTED:
            return format_html('{} <span class="muted">reported</span>', shown)
        return shown

    @admin.display(description="Charge")
    def charge(self, obj: QuestionGenerationUsage) -> str:
        url = reverse("billing:charge", args=[obj.company_id, obj.pk])
        return format_html('<a href="{}">Explain</a>', url)

    list_filter = [
        PendingDraftFilter,
        NeedsPriceFilter,
        ("status", StatusFilter),
        "cost_source",
        "prepaid",
        ModelFilter,
        ("occurred_at", admin.DateFieldListFilter),
        UtcDayFilter,
    ]
    search_fields = ["=id", "=draft_job_id", "=idempotency_key", "=job__id"]
    search_help_text = (
        "A usage id, draft job id, idempotency key or job id; or a company's exact "
        "external id or name (shows that company's usage)."
    )
    list_select_related = ["company", "job"]
    raw_id_fields = ["company", "job", "price"]
    # No date_hierarchy: it lists years with a DISTINCT over the whole table.

    def get_search_results(self, request, queryset, search_term):
        # A company named by its external id or name filters on company_id (an
        # index), instead of OR-ing an ILIKE join into the id look-ups on 10M rows.
        term = search_term.strip()
        company = (
            Company.objects.filter(Q(external_id=term) | Q(name__iexact=term)).first()
            if term
            else None
        )
        if company is not None:
            return queryset.filter(company=company), False
        return super().get_search_results(request, queryset, search_term)

    actions = ["reconcile_selected"]
    change_list_template = "admin/usage/questiongenerationusage/change_list.html"

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(
            request, {**unpriced_warning(request), **(extra_context or {})}
        )

    def has_reconcile_permission(self, request) -> bool:
        # Usage is read-only here, but linking drafts is the service's job and
        # only needs the model's change permission (not ModelAdmin's override).
        return request.user.has_perm("usage.change_questiongenerationusage")

    @admin.action(description="Reconcile selected drafts", permissions=["reconcile"])
    def reconcile_selected(self, request, queryset) -> None:
        ids = list(queryset.filter(job__isnull=True).values_list("id", flat=True))
        report = reconcile_selected_drafts(usage_ids=ids)
        self.message_user(
            request,
            f"Reconciled {report.reconciled_rows} rows of {report.reconciled_drafts} drafts "
            f"({format_money(report.reconciled_cost)}); {report.pending_rows} rows of "
            f"{report.pending_drafts} drafts have no saved job yet.",
            messages.SUCCESS if report.reconciled_rows else messages.WARNING,
        )

    def get_urls(self):
        site = self.admin_site
        extra = [
            path(
                "pending-drafts/",
                site.admin_view(self.pending_drafts_view),
                name="usage_pending_drafts",
            ),
            path("price-model/", site.admin_view(self.price_model_view), name="usage_price_model"),
        ]
        return extra + super().get_urls()

    def price_model_view(self, request):
        """Add a price for a model whose usage has none, preview the re-pricing, apply it.

        The preview is the real path rolled back: the price is added and the
        usage re-priced as a dry run inside a transaction that is then undone.
        Apply does both for good, under reprice_usage's lock, through the same
        services as `manage.py set_model_price` and `manage.py reprice_usage`.
        """
        if not request.user.has_perm("billing.add_modelprice"):
            raise PermissionDenied
        initial = pricing_form_initial(request.GET.get("model", ""))
        form = ModelPriceForm(request.POST or None, initial=initial)
        preview = None
        if request.method == "POST" and form.is_valid():
            if "apply" in request.POST:
                done = self._apply_price(request, form)
                if done is not None:
                    return done
            elif "edit" not in request.POST:
                preview = self._preview_price(form)
        model = (form.data.get("model") if form.is_bound else initial.get("model")) or ""
        context = {
            **self.admin_site.each_context(request),
            "title": "Price usage that has no price",
            "opts": self.model._meta,
            "form": form,
            "preview": preview,
            "model": model,
            "periods": ModelPrice.objects.filter(model=model).order_by("effective_from"),
            "unpriced": [u for u in selectors.unpriced_usage_by_model() if u["model"] == model],
        }
        return TemplateResponse(request, "admin/usage/price_model.html", context)

    def _preview_price(self, form) -> RepriceReport | None:
        try:
            with transaction.atomic():
                form.set_price(actor=None)
                report = reprice_usage(model=form.cleaned_data["model"], apply=False)
                transaction.set_rollback(True)
        except ServiceError as exc:
            _form_errors(form, exc)
            return None
        return report

    def _apply_price(self, request, form):
        try:
            with transaction.atomic():
                if not advisory_xact_lock(REPRICE_LOCK):
                    form.add_error(
                        None, "A re-pricing is running (manage.py reprice_usage); try again."
                    )
                    return None
                price = form.set_price(actor=request.user)
                report = reprice_usage(
                    model=price.model, apply=True, actor=request.user, actor_label="admin"
                )
        except ServiceError as exc:
            _form_errors(form, exc)
            return None
        selectors.forget_platform_totals()
        self.message_user(
            request,
            f"Added the {price.model} price from {format_instant(price.effective_from, UTC)} and "
            f"priced {report.rows:,} generations: {format_money(report.debited)} debited; "
            f"{report.still_unpriced:,} still without a price.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:usage_pending_drafts"))

    def pending_drafts_view(self, request):
        """Per company: pending drafts, rows and cost; per model: usage needing a price."""
        context = {
            **self.admin_site.each_context(request),
            "title": "Pending drafts and usage needing a price",
            "opts": self.model._meta,
            "companies": selectors.pending_drafts_by_company(),
            "unpriced": selectors.unpriced_usage_by_model(),
        }
        return TemplateResponse(request, "admin/usage/pending_drafts.html", context)


@admin.register(UsageDailyRollup)
class UsageDailyRollupAdmin(CappedCountMixin, ReadOnlyAdmin):
    list_display = [
        "day",
        "company",
        "model",
        "status",
        "generations",
        "questions",
        "cost_shown",
        "unpriced",
    ]
    cost_shown = staticmethod(money_column("cost", "Cost"))
    list_filter = ["status", ModelFilter]
    search_fields = ["company__name", "company__external_id"]
    list_select_related = ["company"]


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


class ProviderUsageLineInline(admin.TabularInline):
    model = ProviderUsageLine
    fields = [
        "model",
        "service_tier",
        "context_window",
        "project_id",
        "api_key_id",
        "input_tokens",
        "cached_input_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
        "output_tokens",
        "requests",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class ProviderCostLineInline(admin.TabularInline):
    model = ProviderCostLine
    fields = ["line_item", "model", "token_type", "service_tier", "project_id", "amount"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ProviderBucket)
class ProviderBucketAdmin(ReadOnlyAdmin):
    """Imported provider days (current and superseded), and the reconciliation page."""

    list_display = ["day", "provider", "report", "result_count", "current", "imported_at", "source"]
    list_filter = ["provider", "report", ("superseded_at", admin.EmptyFieldListFilter)]
    date_hierarchy = "day"
    readonly_fields = ["replaces"]
    inlines = [ProviderUsageLineInline, ProviderCostLineInline]
    change_list_template = "admin/usage/providerbucket/change_list.html"

    @admin.display(boolean=True, description="current")
    def current(self, obj: ProviderBucket) -> bool:
        return obj.superseded_at is None

    def get_urls(self):
        reconciliation = self.admin_site.admin_view(self.reconciliation_view)
        upload = self.admin_site.admin_view(self.import_view)
        extra = [
            path("reconciliation/", reconciliation, name="usage_provider_reconciliation"),
            path("import/", upload, name="usage_provider_import"),
        ]
        return extra + super().get_urls()

    def has_import_permission(self, request) -> bool:
        # Buckets are read-only here; importing them is the service's job.
        return request.user.has_perm("usage.add_providerbucket")

    def import_view(self, request):
        """Upload saved admin-API pages: the same import as `manage.py import_provider_usage`."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        form = ProviderImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            summary = self._import(request, form)
            if summary is not None:
                self.message_user(request, _import_message(summary), messages.SUCCESS)
                query = {"provider": summary.provider}
                if summary.first_day:
                    query |= {"since": summary.first_day, "until": summary.last_day}
                url = reverse("admin:usage_provider_reconciliation")
                return HttpResponseRedirect(f"{url}?{urlencode(query)}")
        context = {
            **self.admin_site.each_context(request),
            "title": "Import the provider's usage and costs",
            "opts": self.model._meta,
            "form": form,
        }
        return TemplateResponse(request, "admin/usage/providerbucket/import.html", context)

    def _import(self, request, form: ProviderImportForm):
        data, upload_map = form.cleaned_data, form.cleaned_data["project_map"]
        with tempfile.TemporaryDirectory(prefix="provider-pages-") as folder:
            try:
                project_map = _uploaded_map(upload_map) if upload_map else None
                return import_provider_usage(
                    paths=_save_uploads(data["pages"], Path(folder)),
                    provider=data["provider"],
                    report=data["report"] or None,
                    project_map=project_map,
                    project_map_source=upload_map.name if upload_map else "",
                    dry_run=data["dry_run"],
                    actor=request.user,
                    actor_label="admin upload",
                )
            except ServiceError as exc:
                # Name the uploaded file, not the temporary copy it was read from.
                form.add_error(None, re.sub(rf"{re.escape(folder)}/\d+-", "", exc.message))
                return None

    def reconciliation_view(self, request):
        """Per UTC day and model: the provider's tokens and cost against what we recorded."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = ProviderReconciliationForm(request.GET or None)
        choice = form.cleaned_data if form.is_valid() else {}
        providers = providers_with_data()
        provider = choice.get("provider") or (providers[0] if providers else Provider.OPENAI)
        since, until = form.days(*default_range(provider, until=choice.get("until")))
        report = reconcile_provider(
            provider=provider, since=since, until=until, tolerance=Tolerance.from_settings()
        )
        lines = report.gaps if choice.get("gaps") else report.lines
        context = {
            **self.admin_site.each_context(request),
            "title": "Reconciliation against the provider",
            "opts": self.model._meta,
            "form": form,
            # The report is wide: the whole page for it, as on the changelists' own pages.
            "is_nav_sidebar_enabled": False,
            "provider": provider,
            "provider_label": Provider(provider).label,
            "providers": Provider.choices,
            "report": report,
            "totals": report.totals(),
            "rows": [_reconciliation_row(line) for line in lines],
            "project_map": ProviderProjectMap.objects.filter(provider=provider).first(),
            "scope": stored_project_map(provider),
            "since": since,
            "until": until,
        }
        return TemplateResponse(request, "admin/usage/provider_reconciliation.html", context)


@admin.register(ProviderProjectMap)
class ProviderProjectMapAdmin(ReadOnlyAdmin):
    """Set by an import's project map (command or upload), audited; shown, not edited here."""

    list_display = ["provider", "ours", "exclude", "unlisted", "source", "updated_at"]


def _uploaded_map(upload):
    try:
        text = upload.read().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{upload.name}: not UTF-8 text ({exc})") from exc
    return parse_project_map(text, source=upload.name)


def _save_uploads(files, folder: Path) -> list[Path]:
    """The uploads as files, in the order given, under their own (sanitised) names."""
    paths = []
    for n, upload in enumerate(files, 1):
        name = Path(upload.name).name.replace("/", "_") or "page.json"
        target = folder / f"{n:03d}-{name}"
        with target.open("wb") as fh:
            for chunk in upload.chunks():
                fh.write(chunk)
        paths.append(target)
    return paths


def _import_message(summary) -> str:
    done = "Dry run, nothing stored: would import" if summary.dry_run else "Imported"
    return (
        f"{done} {summary.buckets} daily buckets of {summary.provider} "
        f"({summary.usage_buckets} usage, {summary.cost_buckets} cost) from {summary.files} "
        f"files: {summary.new} new, {summary.unchanged} unchanged, {summary.replaced} replaced."
    )


def _reconciliation_row(line: Line) -> dict:
    """A line as the template shows it, with the drill-down to our rows of that day."""
    return {
        "line": line,
        "label": STATUS_LABELS[line.status],
        "signed": {name: f"{value:+,}" if value else "0" for name, value in _tokens(line)},
        "drill_down": _our_rows_url(line),
    }


def _tokens(line: Line):
    diff = line.difference
    return [(name, diff[name]) for name in ("input_tokens", "cached_input_tokens", "output_tokens")]


def _our_rows_url(line: Line) -> str:
    models = line.our_models or sorted({line.model, *line.provider.models})
    query = {"utc_day": line.day.isoformat()}
    if len(models) == 1:
        query["model"] = models[0]
    else:
        query["model__in"] = ",".join(models)
    return f"{reverse('admin:usage_questiongenerationusage_changelist')}?{urlencode(query)}"

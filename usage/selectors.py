"""Reads over usage that are more than a one-line query."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone

from billing.models import Company
from usage.models import CostSource, QuestionGenerationUsage, UsageDailyRollup, UsageStatus


def month_start(company: Company, now: datetime | None = None) -> date:
    """The first day of the current month in the company's time zone."""
    local = timezone.localtime(now or timezone.now(), company.tz)
    return local.date().replace(day=1)


def month_to_date_spend(company: Company, now: datetime | None = None) -> Decimal:
    """Cost of this month's generations (company time zone), from the exact rollup."""
    today = timezone.localtime(now or timezone.now(), company.tz).date()
    total = UsageDailyRollup.objects.filter(
        company=company, day__gte=today.replace(day=1), day__lte=today
    ).aggregate(total=Sum("cost"))["total"]
    return total or Decimal(0)


# --- Pending drafts and usage that needs a price (admin) -----------------------------


def pending_drafts_by_company(*, limit: int = 200) -> list[dict]:
    """Per company: pending draft usage (job not saved or not yet linked), its cost.

    Reads the partial index of pending drafts only (job IS NULL), so it stays
    cheap however large the usage table grows. Largest backlog first.
    """
    rows = (
        QuestionGenerationUsage.objects.filter(job__isnull=True)
        .values("company_id", "company__name", "company__external_id")
        .annotate(
            rows=Count("id"),
            drafts=Count("draft_job_id", distinct=True),
            total_cost=Sum("cost"),
            abandoned_rows=Count("id", filter=Q(status=UsageStatus.ABANDONED)),
            unpriced_rows=Count("id", filter=Q(cost__isnull=True)),
            oldest=Min("occurred_at"),
        )
        .order_by("-rows", "company__name")
    )
    return list(rows[:limit])


def unpriced_usage_by_model() -> list[dict]:
    """Usage recorded without a price, per model (the partial `usage_unpriced` index)."""
    return list(
        QuestionGenerationUsage.objects.filter(cost_source=CostSource.UNPRICED)
        .values("model")
        .annotate(rows=Count("id"), first=Min("occurred_at"), last=Max("occurred_at"))
        .order_by("-rows", "model")
    )

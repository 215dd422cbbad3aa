"""Reads over usage that are more than a one-line query."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from django.db.models import Q, Sum
from django.utils import timezone

from billing.models import Company
from usage.models import UsageDailyRollup


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


def month_to_date_spend_by_company(companies: list[Company], now: datetime | None = None) -> dict:
    """Month-to-date spend of several companies (each in its own time zone), one query.

    For list pages (the admin company changelist): no query per company.
    """
    if not companies:
        return {}
    window = Q()
    for company in companies:
        today = timezone.localtime(now or timezone.now(), company.tz).date()
        window |= Q(company_id=company.pk, day__gte=today.replace(day=1), day__lte=today)
    totals = dict(
        UsageDailyRollup.objects.filter(window)
        .values("company_id")
        .annotate(total=Sum("cost"))
        .values_list("company_id", "total")
    )
    return {company.pk: totals.get(company.pk) or Decimal(0) for company in companies}

"""Reads over usage that are more than a one-line query."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from django.db.models import Sum
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

"""`assert_rollup_matches_raw(company=None)`: the daily rollup equals the raw usage rows.

For any test (recording, reconciling, re-pricing, abandoning, importing) to
call after it changed usage: regroups the raw rows by (local day, model,
status) and compares every bucket and every total with usage_daily_rollup.
"""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Count, Q, Sum

from billing.models import Company
from usage.models import QuestionGenerationUsage, UsageDailyRollup

FIELDS = (
    "generations",
    "questions",
    "prompt_tokens",
    "cached_prompt_tokens",
    "completion_tokens",
    "cost",
    "unpriced",
)


def raw_buckets(company: Company | None = None) -> dict[tuple, tuple]:
    usage = QuestionGenerationUsage.objects.all()
    if company is not None:
        usage = usage.filter(company=company)
    rows = (
        usage.values("company_id", "occurred_on", "model", "status")
        .annotate(
            sum_generations=Count("id"),
            sum_questions=Sum("question_count"),
            sum_prompt_tokens=Sum("prompt_tokens"),
            sum_cached_prompt_tokens=Sum("cached_prompt_tokens"),
            sum_completion_tokens=Sum("completion_tokens"),
            sum_cost=Sum("cost"),
            sum_unpriced=Count("id", filter=Q(cost__isnull=True)),
        )
        .order_by()
    )
    return {
        (r["company_id"], r["occurred_on"], r["model"], r["status"]): tuple(
            Decimal(r[f"sum_{name}"] or 0) for name in FIELDS
        )
        for r in rows
    }


def rollup_buckets(company: Company | None = None) -> dict[tuple, tuple]:
    rollup = UsageDailyRollup.objects.all()
    if company is not None:
        rollup = rollup.filter(company=company)
    buckets = {}
    for r in rollup.values():
        values = tuple(Decimal(r[name]) for name in FIELDS)
        if any(values):  # a bucket emptied by moves (draft -> linked) is all zeros
            buckets[(r["company_id"], r["day"], r["model"], r["status"])] = values
    return buckets


def assert_rollup_matches_raw(company: Company | None = None) -> None:
    """Every bucket of `company` (or of every company) equals its raw rows."""
    raw, rolled = raw_buckets(company), rollup_buckets(company)
    missing = {k: v for k, v in raw.items() if rolled.get(k) != v}
    extra = {k: v for k, v in rolled.items() if k not in raw}
    assert not missing and not extra, (
        f"rollup differs from raw usage of {company or 'all companies'}: raw {missing} / rollup-only {extra}"
    )

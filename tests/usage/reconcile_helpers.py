"""Helpers shared by the reconciliation and re-pricing tests."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Count, Q, Sum

from usage.models import QuestionGenerationUsage, UsageDailyRollup


def raw_buckets() -> dict:
    rows = QuestionGenerationUsage.objects.values(
        "company_id", "occurred_on", "model", "status"
    ).annotate(
        generations=Count("id"),
        questions=Sum("question_count"),
        prompt=Sum("prompt_tokens"),
        cached=Sum("cached_prompt_tokens"),
        completion=Sum("completion_tokens"),
        total_cost=Sum("cost"),
        unpriced=Count("id", filter=Q(cost__isnull=True)),
    )
    return {
        (r["company_id"], r["occurred_on"], r["model"], r["status"]): (
            r["generations"],
            r["questions"],
            r["prompt"],
            r["cached"],
            r["completion"],
            r["total_cost"] or Decimal(0),
            r["unpriced"],
        )
        for r in rows
    }


def rollup_buckets() -> dict:
    return {
        (r.company_id, r.day, r.model, r.status): (
            r.generations,
            r.questions,
            r.prompt_tokens,
            r.cached_prompt_tokens,
            r.completion_tokens,
            r.cost,
            r.unpriced,
        )
        for r in UsageDailyRollup.objects.all()
        if r.generations or r.cost or r.questions
    }


def assert_rollup_equals_raw() -> None:
    assert rollup_buckets() == raw_buckets()


def usage_state() -> list[tuple]:
    """Everything reconciliation may change, to prove a dry run changed nothing."""
    return sorted(
        QuestionGenerationUsage.objects.values_list(
            "id", "job_id", "status", "reconciled_at", "abandoned_at", "cost", "price_id"
        )
    )


@pytest.fixture(scope="module")
def truncatable_ledger(django_db_setup, django_db_blocker):
    """Let `transaction=True` tests be flushed (TRUNCATE) despite the ledger's guard.

    The append-only trigger refuses TRUNCATE, which is how pytest-django cleans
    up after a transactional test; it is switched off for this module's
    duration only and switched back on at the end.
    """
    with django_db_blocker.unblock():
        _ledger_truncate_guard("DISABLE")
    yield
    with django_db_blocker.unblock():
        _ledger_truncate_guard("ENABLE")


def _ledger_truncate_guard(action: str) -> None:
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE billing_ledgerentry {action} TRIGGER ledger_no_truncate")

"""Helpers shared by the reconciliation and re-pricing tests."""

from __future__ import annotations

from usage.models import QuestionGenerationUsage


def usage_state() -> list[tuple]:
    """Everything reconciliation may change, to prove a dry run changed nothing."""
    return sorted(
        QuestionGenerationUsage.objects.values_list(
            "id", "job_id", "status", "reconciled_at", "abandoned_at", "cost", "price_id"
        )
    )

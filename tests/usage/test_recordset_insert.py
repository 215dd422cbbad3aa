"""Rows inserted through one jsonb parameter (billing.dbutil.recordset_insert) keep
every value exactly: decimals to the last place, instants, UUIDs, JSON objects,
NULLs; and a value too long for its column is refused, never truncated."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import DataError, transaction
from django.utils import timezone

from tests.conftest import make_company, make_event, make_job
from usage.models import QuestionGenerationUsage
from usage.recording import build_usage, insert_usage_rows

pytestmark = pytest.mark.django_db


def _row(company, **event_changes):
    event = replace(make_event(company), **event_changes)
    job = make_job(company)
    return build_usage(event, company, job, Decimal("0.000000000001"), None, "fp", timezone.now())


def test_values_round_trip_exactly():
    company = make_company()
    occurred = datetime(2026, 3, 8, 6, 59, 59, 999999, tzinfo=UTC)
    usage = _row(
        company,
        occurred_at=occurred,
        metadata={"prompt": "Entretien d’embauche ✓", "nested": {"n": [1, 2.5, None]}},
        processing_time_ms=None,
    )
    usage.cost = Decimal("1234567890123456.123456789012")  # NUMERIC(28,12): every digit

    assert insert_usage_rows([usage]) == {usage.pk}

    stored = QuestionGenerationUsage.objects.get(pk=usage.pk)
    assert stored.cost == Decimal("1234567890123456.123456789012")
    assert stored.occurred_at == occurred
    assert stored.metadata == {"prompt": "Entretien d’embauche ✓", "nested": {"n": [1, 2.5, None]}}
    assert stored.processing_time_ms is None
    assert stored.company_id == company.pk and stored.job_id == usage.job_id
    assert stored.idempotency_key == usage.idempotency_key


def test_a_value_too_long_for_its_column_is_refused_not_truncated():
    company = make_company()
    usage = _row(company)
    usage.idempotency_key = "k" * 256  # varchar(255)

    with pytest.raises(DataError), transaction.atomic():
        insert_usage_rows([usage])
    assert not QuestionGenerationUsage.objects.filter(company=company).exists()

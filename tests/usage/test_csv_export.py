"""The generation CSV written by PostgreSQL's COPY equals the one written in Python."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from tests.conftest import make_company, make_job, make_price, make_usage
from usage import selectors
from usage.tables import csv_chunks, csv_lines
from usage.views import _copy_chunks

pytestmark = pytest.mark.django_db
UTC = ZoneInfo("UTC")


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kolkata", "UTC"])
def test_copy_csv_equals_python_csv_byte_for_byte(zone):
    company = make_company(timezone=zone)
    make_price("m", input="2.5", cached="1.25", output="10")
    job = make_job(company, title='Data "Eng", senior')
    instants = [
        datetime(2026, 3, 8, 6, 59, 59, tzinfo=UTC),  # New York: DST starts at 07:00 UTC
        datetime(2026, 3, 8, 7, 0, 0, 123456, tzinfo=UTC),
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # New York: DST ends at 06:00 UTC
    ]
    for i, at in enumerate(instants):
        make_usage(company, model="m", job_id=str(job.pk), occurred_at=at, prompt_tokens=1234 + i)
    make_usage(company, model="m", occurred_at=instants[0], cost="2")  # a whole amount
    make_usage(company, model="unpriced", occurred_at=instants[1])  # NULL cost
    filters = selectors.UsageFilters(
        start=date(2026, 3, 1), end=date(2026, 11, 30), group="generation"
    )
    rows = selectors.usage_rows(company, filters)
    in_python = "".join(csv_chunks(csv_lines("generation", rows, company.tz)))
    by_copy = b"".join(_copy_chunks(*selectors.generation_csv_copy(company, filters))).decode()
    assert by_copy == in_python
    assert in_python.count("\n") == 6
    assert ",2.00\n" in in_python and ",0.008085" in in_python


def test_copy_csv_applies_the_filters(company):
    make_price("m")
    job = make_job(company)
    make_usage(company, model="m", job_id=str(job.pk))
    make_usage(company, model="m")
    today = timezone.localdate(timezone=company.tz)
    filters = selectors.UsageFilters(
        start=today,
        end=today,
        group="generation",
        job_id=job.pk,
        status="linked",
    )
    text = b"".join(_copy_chunks(*selectors.generation_csv_copy(company, filters))).decode()
    assert text.count("\n") == 2 and str(job.pk) in text
    assert Decimal(text.splitlines()[1].rsplit(",", 1)[1]) > 0

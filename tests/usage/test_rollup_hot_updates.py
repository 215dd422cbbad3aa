"""Rollup buckets are updated in place (HOT): nothing indexed changes when a bucket's
sums move, and pages keep room for the new version. A covering index over a summed
column, or a table without free space, would make every usage insert write a new
entry into every index of the rollup."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.conftest import make_company, make_price, make_usage
from usage.models import UsageDailyRollup

pytestmark = pytest.mark.django_db


def _hot_updates_in_this_transaction() -> tuple[int, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_stat_get_xact_tuples_updated(%s::regclass),"
            " pg_stat_get_xact_tuples_hot_updated(%s::regclass)",
            [UsageDailyRollup._meta.db_table] * 2,
        )
        return cursor.fetchone()


def test_recording_into_an_existing_bucket_is_a_hot_update():
    company = make_company()
    make_price()
    make_usage(company, draft_job_id="d1")  # creates the draft bucket
    updated_before, hot_before = _hot_updates_in_this_transaction()
    for _ in range(5):
        make_usage(company, draft_job_id="d1")
    updated, hot = _hot_updates_in_this_transaction()
    assert updated - updated_before == 5
    assert hot - hot_before == 5


def test_the_rollup_keeps_free_room_on_its_pages():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reloptions FROM pg_class WHERE relname = %s",
            [UsageDailyRollup._meta.db_table],
        )
        assert "fillfactor=80" in (cursor.fetchone()[0] or [])

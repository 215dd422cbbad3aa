"""Time-ordered usage ids (billing.ids.uuid7)."""

import time
import uuid

import pytest

from core.ids import uuid7
from tests.conftest import make_company
from usage.events import UsageEvent
from usage.recording import record_usage


def test_uuid7_is_a_version_7_rfc_uuid_carrying_the_time():
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after


def test_uuid7_ids_sort_by_creation_time_and_do_not_collide():
    first = [uuid7() for _ in range(2000)]
    time.sleep(0.002)
    second = [uuid7() for _ in range(2000)]
    assert max(str(u) for u in first) < min(str(u) for u in second)
    assert len(set(first + second)) == 4000


@pytest.mark.django_db
def test_recorded_usage_gets_a_time_ordered_id():
    company = make_company()
    result = record_usage(
        UsageEvent(
            company=str(company.pk),
            idempotency_key="k-1",
            model="gpt-4o",
            prompt_tokens=10,
            completion_tokens=5,
            draft_job_id="draft-1",
        ),
        company=company,
    )
    assert result.usage.pk.version == 7

"""Batches of reconcile_drafts are sized by time, within bounds."""

from __future__ import annotations

from usage.reconcile import BATCH_TARGET_SECONDS, MIN_BATCH_SIZE, next_batch_size


def test_a_slow_batch_shrinks_the_next_to_the_target_time():
    # 2,000 rows in 0.4 s: 5,000 rows/s, so ~50 ms is 250 rows.
    assert next_batch_size(2000, 0.4, 5000) == int(2000 * BATCH_TARGET_SECONDS / 0.4) == 250


def test_a_fast_batch_grows_at_most_double_and_never_past_the_largest():
    assert next_batch_size(500, 0.01, 5000) == 1000
    assert next_batch_size(4000, 0.01, 5000) == 5000
    assert next_batch_size(100, 0.0, 5000) == 200
    assert next_batch_size(1, 0.0, 1) == 1


def test_never_below_the_minimum_unless_asked_for_less():
    assert next_batch_size(200, 10.0, 5000) == MIN_BATCH_SIZE
    assert next_batch_size(3, 10.0, 3) == 3

"""Keeps `usage_daily_rollup` exactly equal to the raw usage rows.

Every service that inserts usage or changes a row's status, cost or day moves
the rows' buckets in the same transaction, by the signed difference it made:
:func:`apply` for differences gathered in Python, or one of the SQL fragments
below inside the statement that changed the rows. Each is an
`INSERT ... ON CONFLICT DO UPDATE` that adds to the bucket, so concurrent
writers never lose an update; buckets are locked in one order (company id,
day, then model and status by code point), so they never deadlock.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.db import connection

from usage.models import KeyDailySpend, QuestionGenerationUsage, UsageDailyRollup

Bucket = tuple[uuid.UUID, date, str, str]  # company_id, day, model, status


@dataclass
class Totals:
    generations: int = 0
    questions: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)
    unpriced: int = 0

    def add_row(self, row: QuestionGenerationUsage | dict, sign: int = 1) -> None:
        get = row.get if isinstance(row, dict) else lambda name: getattr(row, name)
        self.generations += sign
        self.questions += sign * get("question_count")
        self.prompt_tokens += sign * get("prompt_tokens")
        self.cached_prompt_tokens += sign * get("cached_prompt_tokens")
        self.completion_tokens += sign * get("completion_tokens")
        cost = get("cost")
        if cost is None:
            self.unpriced += sign
        else:
            self.cost += sign * cost

    def is_zero(self) -> bool:
        return not any(
            (
                self.generations,
                self.questions,
                self.prompt_tokens,
                self.cached_prompt_tokens,
                self.completion_tokens,
                self.cost,
                self.unpriced,
            )
        )


def bucket_of(row: QuestionGenerationUsage | dict) -> Bucket:
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name)
    return (get("company_id"), get("occurred_on"), get("model"), get("status"))


class Deltas:
    """Signed changes to rollup buckets, gathered before one :func:`apply`."""

    def __init__(self) -> None:
        self._by_bucket: dict[Bucket, Totals] = defaultdict(Totals)

    def add(self, row: QuestionGenerationUsage | dict, sign: int = 1) -> None:
        self._by_bucket[bucket_of(row)].add_row(row, sign)

    def items(self) -> Iterable[tuple[Bucket, Totals]]:
        # Sorted so that concurrent writers lock buckets in the same order.
        for bucket in sorted(self._by_bucket, key=lambda b: (str(b[0]), b[1], b[2], b[3])):
            totals = self._by_bucket[bucket]
            if not totals.is_zero():
                yield bucket, totals


TABLE = UsageDailyRollup._meta.db_table
COLUMNS = (
    "company_id, day, model, status, generations, questions, prompt_tokens,"
    " cached_prompt_tokens, completion_tokens, cost, unpriced"
)
# Adds the incoming signed totals to an existing bucket. Shared by the row-wise
# upsert below and the set-based ones (usage.reconcile, usage.pricing).
ON_CONFLICT_ADD = f"""
ON CONFLICT (company_id, day, model, status) DO UPDATE SET
    generations = {TABLE}.generations + excluded.generations,
    questions = {TABLE}.questions + excluded.questions,
    prompt_tokens = {TABLE}.prompt_tokens + excluded.prompt_tokens,
    cached_prompt_tokens = {TABLE}.cached_prompt_tokens + excluded.cached_prompt_tokens,
    completion_tokens = {TABLE}.completion_tokens + excluded.completion_tokens,
    cost = {TABLE}.cost + excluded.cost,
    unpriced = {TABLE}.unpriced + excluded.unpriced
"""
_UPSERT = f"""
INSERT INTO {TABLE} ({COLUMNS})
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
{ON_CONFLICT_ADD}"""


def apply(deltas: Deltas) -> None:
    """Add the deltas to their buckets (call inside the writer's transaction)."""
    params = [
        (
            company_id,
            day,
            model,
            status,
            t.generations,
            t.questions,
            t.prompt_tokens,
            t.cached_prompt_tokens,
            t.completion_tokens,
            t.cost,
            t.unpriced,
        )
        for (company_id, day, model, status), t in deltas.items()
    ]
    if not params:
        return
    with connection.cursor() as cursor:
        cursor.executemany(_UPSERT, params)


def add_rows(rows: Iterable[QuestionGenerationUsage], sign: int = 1) -> None:
    deltas = Deltas()
    for row in rows:
        deltas.add(row, sign)
    apply(deltas)


# The same upsert fed by a data-modifying CTE named `inserted` (the usage rows an
# `INSERT ... RETURNING` just wrote), so that recording is one round trip for
# the usage rows and their buckets. Buckets are locked in the order
# `Deltas.items` uses: company id, day, then model and status by code point.
FROM_INSERTED = f"""
INSERT INTO {TABLE} ({COLUMNS})
SELECT company_id, occurred_on, model, status, count(*), sum(question_count),
       sum(prompt_tokens), sum(cached_prompt_tokens), sum(completion_tokens),
       coalesce(sum(cost), 0), count(*) FILTER (WHERE cost IS NULL)
  FROM inserted
 GROUP BY company_id, occurred_on, model, status
 ORDER BY company_id, occurred_on, model COLLATE "C", status COLLATE "C"
{ON_CONFLICT_ADD}"""


# The CTEs that move the buckets of rows whose status changed, fed by a
# data-modifying CTE named `moved` that returns each changed row's company_id,
# occurred_on, model, old_status, new_status, question_count, prompt_tokens,
# cached_prompt_tokens, completion_tokens and cost: minus the row from its old
# bucket, plus it in its new one. Linking drafts (usage.jobs) and reconciling
# them (usage.reconcile) both end with it; `upserted` returns one row per bucket.
MOVE_STATUS = f"""
signed AS (
    SELECT company_id, occurred_on, model, old_status AS status, -1 AS sign,
           question_count, prompt_tokens, cached_prompt_tokens, completion_tokens, cost
      FROM moved
    UNION ALL
    SELECT company_id, occurred_on, model, new_status, 1,
           question_count, prompt_tokens, cached_prompt_tokens, completion_tokens, cost
      FROM moved
),
upserted AS (
    INSERT INTO {TABLE} ({COLUMNS})
    SELECT company_id, occurred_on, model, status, sum(sign),
           sum(sign * question_count), sum(sign * prompt_tokens),
           sum(sign * cached_prompt_tokens), sum(sign * completion_tokens),
           COALESCE(sum(sign * cost), 0), sum(CASE WHEN cost IS NULL THEN sign ELSE 0 END)
      FROM signed
     GROUP BY company_id, occurred_on, model, status
     ORDER BY company_id, occurred_on, model COLLATE "C", status COLLATE "C"
    {ON_CONFLICT_ADD}
    RETURNING 1
)"""


# --- Spend per API key and day (usage.models.KeyDailySpend) --------------------------

KEY_TABLE = KeyDailySpend._meta.db_table
KEY_COLUMNS = "api_key_id, company_id, day, generations, cost, unpriced"
KEY_ON_CONFLICT_ADD = f"""
ON CONFLICT (api_key_id, company_id, day) DO UPDATE SET
    generations = {KEY_TABLE}.generations + excluded.generations,
    cost = {KEY_TABLE}.cost + excluded.cost,
    unpriced = {KEY_TABLE}.unpriced + excluded.unpriced
"""
# Fed by the same `inserted` CTE as FROM_INSERTED; after the daily buckets and
# before the balance (the house lock order), key buckets in (key, company, day) order.
KEY_FROM_INSERTED = f"""
INSERT INTO {KEY_TABLE} ({KEY_COLUMNS})
SELECT api_key_id, company_id, occurred_on, count(*), coalesce(sum(cost), 0),
       count(*) FILTER (WHERE cost IS NULL)
  FROM inserted WHERE api_key_id IS NOT NULL
 GROUP BY api_key_id, company_id, occurred_on
 ORDER BY api_key_id, company_id, occurred_on
{KEY_ON_CONFLICT_ADD}"""
_KEY_UPSERT = f"""
INSERT INTO {KEY_TABLE} ({KEY_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)
{KEY_ON_CONFLICT_ADD}"""


def apply_key_changes(changes: Iterable[tuple[dict, Decimal | None]]) -> None:
    """Move the key buckets of rows whose cost changed: (the row before, its new cost)."""
    deltas: dict[tuple, list] = defaultdict(lambda: [0, Decimal(0), 0])
    for row, new_cost in changes:
        if row.get("api_key_id") is None:
            continue
        delta = deltas[(row["api_key_id"], str(row["company_id"]), row["occurred_on"])]
        old_cost = row["cost"]
        delta[1] += (new_cost or Decimal(0)) - (old_cost or Decimal(0))
        delta[2] += (new_cost is None) - (old_cost is None)
    params = [
        (key, company, day, 0, cost, unpriced)
        for (key, company, day), (_, cost, unpriced) in sorted(deltas.items())
        if cost or unpriced
    ]
    if params:
        with connection.cursor() as cursor:
            cursor.executemany(_KEY_UPSERT, params)


def rebuild_key_spend(company_id: uuid.UUID) -> None:
    """The company's key buckets from its raw rows (after its days moved)."""
    usage = QuestionGenerationUsage._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {KEY_TABLE} WHERE company_id = %s", [company_id])
        cursor.execute(
            f"""INSERT INTO {KEY_TABLE} ({KEY_COLUMNS})
                SELECT api_key_id, company_id, occurred_on, count(*), coalesce(sum(cost), 0),
                       count(*) FILTER (WHERE cost IS NULL)
                  FROM {usage} WHERE company_id = %s AND api_key_id IS NOT NULL
                 GROUP BY api_key_id, company_id, occurred_on""",
            [company_id],
        )

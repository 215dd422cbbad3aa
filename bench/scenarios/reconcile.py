"""4. `reconcile_drafts` over the pending drafts of saved jobs (~200,000 at full size).

Each repetition restores the pending rows recorded at build time
(`bench_pending`) with one set-based reset that also moves their rollup
buckets back, runs the command in a fresh process (`--json`, peak RSS, the
longest transaction), and measures the lower bound: one plain `UPDATE ... FROM`
doing the same linking, inside a transaction that is rolled back.
"""

from __future__ import annotations

import json
import time

from django.db import connection, transaction

from bench.context import Context, command_exists, sql_ms
from bench.dataset import ROLLUP, USAGE
from bench.measure import Result, median, not_available

_SUMS = """count(*), sum(question_count), sum(prompt_tokens), sum(cached_prompt_tokens),
           sum(completion_tokens), coalesce(sum(cost), 0), count(*) FILTER (WHERE cost IS NULL)"""
_COLUMNS = (
    "generations, questions, prompt_tokens, cached_prompt_tokens, completion_tokens, cost, unpriced"
)

RESET = [
    f"""CREATE TEMP TABLE bench_moved ON COMMIT DROP AS
        SELECT u.* FROM {USAGE} u JOIN bench_pending p ON p.id = u.id
         WHERE NOT (u.status = 'draft' AND u.job_id IS NULL)""",
    f"""UPDATE {ROLLUP} r SET generations = r.generations - m.g, questions = r.questions - m.q,
               prompt_tokens = r.prompt_tokens - m.pt,
               cached_prompt_tokens = r.cached_prompt_tokens - m.cpt,
               completion_tokens = r.completion_tokens - m.ct, cost = r.cost - m.cost,
               unpriced = r.unpriced - m.unp
          FROM (SELECT company_id, occurred_on, model, status, count(*) AS g,
                       sum(question_count) AS q, sum(prompt_tokens) AS pt,
                       sum(cached_prompt_tokens) AS cpt, sum(completion_tokens) AS ct,
                       coalesce(sum(cost), 0) AS cost, count(*) FILTER (WHERE cost IS NULL) AS unp
                  FROM bench_moved GROUP BY 1, 2, 3, 4) m
         WHERE r.company_id = m.company_id AND r.day = m.occurred_on AND r.model = m.model
           AND r.status = m.status""",
    f"""INSERT INTO {ROLLUP} (company_id, day, model, status, {_COLUMNS})
        SELECT company_id, occurred_on, model, 'draft', {_SUMS} FROM bench_moved GROUP BY 1, 2, 3
        ON CONFLICT (company_id, day, model, status) DO UPDATE SET
            generations = {ROLLUP}.generations + excluded.generations,
            questions = {ROLLUP}.questions + excluded.questions,
            prompt_tokens = {ROLLUP}.prompt_tokens + excluded.prompt_tokens,
            cached_prompt_tokens = {ROLLUP}.cached_prompt_tokens + excluded.cached_prompt_tokens,
            completion_tokens = {ROLLUP}.completion_tokens + excluded.completion_tokens,
            cost = {ROLLUP}.cost + excluded.cost, unpriced = {ROLLUP}.unpriced + excluded.unpriced""",
    f"""UPDATE {USAGE} u SET job_id = NULL, status = 'draft', reconciled_at = NULL,
               abandoned_at = NULL
          FROM bench_moved m WHERE u.id = m.id""",
]

LOWER_BOUND = f"""
UPDATE {USAGE} u SET job_id = j.id, status = 'linked', reconciled_at = now()
  FROM usage_job j
 WHERE u.job_id IS NULL AND u.status IN ('draft', 'abandoned')
   AND j.company_id = u.company_id AND j.draft_id = u.draft_job_id"""


def restore_pending(*, vacuum: bool = True) -> int:
    """Put every reconcile-target row back to pending (rollup kept exact); rows moved."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(RESET[0])
        moved = cursor.rowcount
        for sql in RESET[1:]:
            cursor.execute(sql)
    if vacuum:  # the updates leave dead tuples the next run would wade through
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {USAGE}")
            # The reset updates the same rollup buckets every run: without this
            # each run wades through the dead versions the previous runs left.
            cursor.execute(f"VACUUM (ANALYZE) {ROLLUP}")
    return moved


def _pending_count() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT count(*) FROM {USAGE} u JOIN bench_pending p ON p.id = u.id
                 WHERE u.job_id IS NULL AND u.status = 'draft'"""
        )
        return cursor.fetchone()[0]


def _lower_bound_seconds() -> tuple[float, int]:
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        try:
            t0 = time.perf_counter()
            cursor.execute(LOWER_BOUND)
            elapsed, rows = time.perf_counter() - t0, cursor.rowcount
        finally:
            cursor.execute("ROLLBACK")
    return elapsed, rows


def _command_json(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.strip().startswith("{"):
            return json.loads(line)
    return {}


def _longest_batch(report: dict, run: dict) -> tuple[float, str]:
    for key, scale in (
        ("max_batch_seconds", 1.0),
        ("longest_batch_seconds", 1.0),
        ("max_batch_ms", 0.001),
    ):
        if report.get(key) is not None:
            return float(report[key]) * scale, f"command JSON {key}"
    return float(run["longest_transaction_s"]), "longest transaction seen by the bench"


def reconcile(ctx: Context) -> Result:
    title = "reconcile_drafts over the pending drafts of saved jobs"
    target = ">= 100,000 rows/s, <= 1.3x UPDATE, batch <= 250 ms, peak < 150 MB"
    if not command_exists("reconcile_drafts"):
        return not_available("reconcile", title, target, "command reconcile_drafts not found")
    result = Result("reconcile", title, target, unit="rows/s", lower_bound_label="UPDATE ... FROM")
    rates, lower_rates, batches, peaks = [], [], [], []
    for i in range(ctx.reps(2)):
        t0 = time.perf_counter()
        restore_pending()
        pending = _pending_count()
        lb_seconds, lb_rows = _lower_bound_seconds()
        lower_rates.append(lb_rows / lb_seconds)
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM {USAGE}")
        ctx.log(f"    run {i + 1}: reset {time.perf_counter() - t0:.0f}s, {pending:,} pending; "
                f"UPDATE ... FROM {lb_rows:,} rows in {lb_seconds:.2f}s")  # fmt: skip
        run = ctx.child("command", "reconcile_drafts", "--json", timeout=1800)
        if run.get("error"):
            result.status = "error"
            result.notes.append(run["error"][:500])
            return result
        left = _pending_count()
        report = _command_json(run.get("stdout", ""))
        linked = pending - left
        rates.append(linked / run["elapsed"])
        longest, source = _longest_batch(report, run)
        batches.append(longest)
        peaks.append(run["peak_mb"])
        ctx.log(f"    reconcile_drafts: {linked:,} rows in {run['elapsed']:.2f}s, longest batch {longest * 1000:.0f} ms, peak {run['peak_mb']:.0f} MB")  # fmt: skip
    restore_pending()
    result.samples = len(rates)
    result.median, result.p95 = median(rates), min(rates)
    result.lower_bound = median(lower_rates)
    result.peak_mb = max(peaks)
    result.notes.append(
        f"{pending:,} pending rows; longest batch {max(batches) * 1000:.0f} ms ({source}); "
        f"{run['transactions']} transactions; command JSON: {json.dumps(report)[:300]}"
    )
    result.met = (
        result.p95 >= 100_000
        and result.ratio is not None
        and result.ratio <= 1.3
        and max(batches) <= 0.25
        and result.peak_mb < 150
    )
    return result


__all__ = ["reconcile", "restore_pending", "sql_ms"]

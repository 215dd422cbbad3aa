"""10. `close_statements` issuing every ended month of every company from an empty start.

The dataset's ledger spans its months (one debit per priced row, monthly
top-ups, grants), so the first run issues every company's backlog: the
heaviest close there is (a monthly cron run closes one month). Each
repetition empties the statement tables (their guards lifted, bench database
only), runs the command in a fresh process (`--json`, peak RSS, the longest
transaction), then runs it again (nothing due: the idempotent case), and
checks the issued statements with verify_ledger's statement checks.

Lower bound: one GROUP BY over the whole ledger joined to its usage rows, per
company, UTC month, kind and model: the sums without the zones, the chain,
the job lines, the seal or the writes.
"""

from __future__ import annotations

import json
import time

from django.db import connection

from bench.context import Context, command_exists
from bench.dataset import LEDGER, STATEMENT, STATEMENT_LINE, USAGE
from bench.measure import Result, median, not_available

LOWER_BOUND = f"""
SELECT e.company_id, date_trunc('month', e.created_at), e.kind, q.model,
       count(*), sum(e.amount), sum(q.question_count)
  FROM {LEDGER} e LEFT JOIN {USAGE} q ON q.id = e.usage_id
 GROUP BY 1, 2, 3, 4"""
STATEMENT_CHECKS = (
    "statement_hash_matches_content",
    "statement_lines_add_up",
    "statements_follow_one_another",
    "statements_equal_the_ledger",
)


def empty_statements() -> None:
    """No statement, and no lease left by a run that was stopped (bench database only)."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM ops_command_lease WHERE name = 'usage.close_statements'")
        for table in (STATEMENT_LINE, STATEMENT):
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        try:
            cursor.execute(f"TRUNCATE {STATEMENT_LINE}, {STATEMENT}")
        finally:
            for table in (STATEMENT_LINE, STATEMENT):
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def _lower_bound_seconds() -> float:
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(LOWER_BOUND)
        cursor.fetchall()
    return time.perf_counter() - t0


def _statement_failures() -> list[str]:
    from billing.invariants import CHECKS, _sql

    failures = []
    with connection.cursor() as cursor:
        for name in STATEMENT_CHECKS:
            cursor.execute(_sql(CHECKS[name], None), {"company": None, "now": None})
            failures += [f"{name}: {row[1]}" for row in cursor.fetchall()]
    return failures


def _summary(stdout: str) -> dict:
    """The command's --json summary: the first JSON object of its output."""
    if "{" not in stdout:
        return {}
    return json.JSONDecoder().raw_decode(stdout[stdout.index("{") :])[0]


def _counts() -> tuple[int, int, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT (SELECT count(*) FROM {STATEMENT}), (SELECT count(*) FROM {STATEMENT_LINE}),
                       (SELECT count(*) FROM {LEDGER})"""
        )
        return cursor.fetchone()


def close_statements(ctx: Context) -> Result:
    title = "close_statements: every company's backlog of months, from no statement"
    target = "<= 100 ms a statement, peak < 200 MB, rerun < 2 s, every statement check holds"
    if not command_exists("close_statements"):
        return not_available("statements", title, target, "command close_statements not found")
    result = Result("statements", title, target, unit="entries/s", lower_bound_label="GROUP BY")
    rates, lower_rates, peaks, reruns, per_statement = [], [], [], [], []
    for i in range(ctx.reps(2)):
        empty_statements()
        lower = _lower_bound_seconds()
        run = ctx.child("command", "close_statements", "--json", timeout=3600)
        if run.get("error"):
            result.status = "error"
            result.notes.append(run["error"][:500])
            return result
        statements, lines, entries = _counts()
        report = _summary(run.get("stdout", ""))
        if "skipped" in report or not statements:
            result.status = "error"
            result.notes.append(f"no statement issued: {json.dumps(report)[:300]}")
            return result
        rates.append(entries / run["elapsed"])
        per_statement.append(run["elapsed"] * 1000 / max(statements, 1))
        lower_rates.append(entries / lower)
        peaks.append(run["peak_mb"])
        again = ctx.child("command", "close_statements", "--json", timeout=600)
        reruns.append(again["elapsed"])
        ctx.log(f"    run {i + 1}: {report.get('issued', statements)} statements ({lines:,} lines) over {entries:,} entries in {run['elapsed']:.1f}s, peak {run['peak_mb']:.0f} MB; GROUP BY {lower:.1f}s; rerun {again['elapsed']:.2f}s issued {_summary(again.get('stdout', '')).get('issued')}")  # fmt: skip
    failures = _statement_failures()
    result.samples = len(rates)
    result.median, result.p95 = median(rates), min(rates)
    result.lower_bound = median(lower_rates)
    result.peak_mb = max(peaks)
    result.notes.append(
        f"{statements:,} statements, {lines:,} lines, {entries:,} ledger entries; "
        f"{median(per_statement):.0f} ms a statement; longest "
        f"transaction {run['longest_transaction_s']:.2f}s; rerun (nothing due) "
        f"{max(reruns):.2f}s; statement checks: {failures[:3] or 'all hold'}"
    )
    result.met = (
        not failures and median(per_statement) <= 100 and result.peak_mb < 200 and max(reruns) < 2
    )
    return result

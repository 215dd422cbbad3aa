"""Pages measured in-process with Django's test client as a staff user.

Server time (middleware, view, queries, template) without the network; each
page's lower bound is the plain SQL that computes the same numbers, run in the
same process on the same data.
"""

from __future__ import annotations

import re

from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from bench.context import Context, explain, sql_ms, url_exists
from bench.dataset import LEDGER, ROLLUP, USAGE
from bench.measure import Result, fill, not_available, timed

# A count of the whole table: neither filtered (WHERE) nor capped (a LIMIT subquery,
# billing.admin_paging).
FULL_COUNT = re.compile(
    r'SELECT COUNT\(\*\)[^;]*FROM "?' + USAGE + r'"?(?![^;]*(?:WHERE|LIMIT))', re.I
)


def _get(client, url: str):
    response = client.get(url)
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}")
    if response.streaming:
        for _ in response.streaming_content:
            pass
    return response


def _queries(client, url: str, using: str = "default") -> tuple[int, list[dict]]:
    with CaptureQueriesContext(connections[using]) as captured:
        _get(client, url)
    return len(captured.captured_queries), captured.captured_queries


def _slowest(queries: list[dict], n: int = 3) -> list[str]:
    ranked = sorted(queries, key=lambda q: float(q["time"]), reverse=True)[:n]
    return [f"{float(q['time']) * 1000:.0f} ms: {q['sql'][:160]}" for q in ranked]


def _page(
    ctx: Context,
    result: Result,
    url: str,
    lower_sql: str,
    params,
    max_ms: float,
    max_queries: int | None = None,
    repeat: int = 20,
) -> Result:
    client = ctx.client()
    samples = timed(lambda: _get(client, url), warmup=2, repeat=ctx.reps(repeat))
    fill(result, samples)
    count, queries = _queries(client, url, ctx.reads)
    where = f" on {ctx.reads}" if ctx.has_replica else ""
    result.notes.append(f"{count} queries{where}; slowest: " + " | ".join(_slowest(queries)))
    lower = timed(lambda: sql_ms(lower_sql, params, using=ctx.reads), warmup=1, repeat=ctx.reps(20))
    result.lower_bound = sorted(lower)[len(lower) // 2]
    result.met = result.p95 <= max_ms and (max_queries is None or count <= max_queries)
    return result


# --- 1. usage tab ----------------------------------------------------------------

ROLLUP_BY_DAY = f"""
SELECT day, sum(cost), sum(generations), sum(questions), sum(prompt_tokens),
       sum(cached_prompt_tokens), sum(completion_tokens)
  FROM {ROLLUP} WHERE company_id = %s AND day BETWEEN %s AND %s
 GROUP BY day ORDER BY day"""
RAW_BY_DAY = f"""
SELECT occurred_on, sum(cost), count(*), sum(question_count), sum(prompt_tokens),
       sum(cached_prompt_tokens), sum(completion_tokens)
  FROM {USAGE} WHERE company_id = %s AND occurred_on BETWEEN %s AND %s
 GROUP BY occurred_on ORDER BY occurred_on"""


def usage_tab(ctx: Context) -> Result:
    title = "usage tab, largest company, this month, by day"
    target = "p95 <= 100 ms"
    path = f"/billing/{ctx.largest}/"
    if not url_exists(path):
        return not_available("usage_tab", title, target, f"{path} does not resolve yet")
    start, end = ctx.this_month(ctx.largest)
    url = f"{path}?tab=usage&preset=this_month&group=day"
    result = Result("usage_tab", title, target, lower_bound_label="rollup SQL")
    params = [ctx.largest, start, end]
    _page(ctx, result, url, ROLLUP_BY_DAY, params, max_ms=100)
    raw = timed(lambda: sql_ms(RAW_BY_DAY, params), warmup=1, repeat=ctx.reps(5))
    result.notes.append(f"same aggregation over raw rows: {sorted(raw)[len(raw) // 2]:.1f} ms")
    return result


# --- 2. staff overview ------------------------------------------------------------

# One pass over the rollup: month-to-date spend in each company's time zone and
# the cost of pending drafts. On this schema that is a scan of the rollup; an index
# leading with `day` (and one on pending buckets) is what would make it cheap.
OVERVIEW_SQL = f"""
SELECT c.id, c.name, b.balance, coalesce(t.spend, 0), coalesce(t.pending, 0),
       b.balance < c.low_balance_threshold
  FROM billing_company c
  LEFT JOIN billing_creditbalance b ON b.company_id = c.id
  LEFT JOIN (SELECT r.company_id,
                    sum(r.cost) FILTER (WHERE r.day >= c2.month_start) AS spend,
                    sum(r.cost) FILTER (WHERE r.status = 'draft') AS pending
               FROM {ROLLUP} r
               JOIN (SELECT id, date_trunc('month', now() AT TIME ZONE timezone)::date AS month_start
                       FROM billing_company) c2 ON c2.id = r.company_id
              GROUP BY r.company_id) t ON t.company_id = c.id
 ORDER BY c.name"""


def overview(ctx: Context) -> Result:
    title = "staff /billing/ overview, all companies, this month"
    target = "p95 <= 150 ms"
    if not url_exists("/billing/"):
        return not_available("overview", title, target, "/billing/ does not resolve yet")
    result = Result("overview", title, target, lower_bound_label="plain SQL")
    return _page(ctx, result, "/billing/", OVERVIEW_SQL, None, max_ms=150)


# --- 3. admin changelist ----------------------------------------------------------

ADMIN_SQL = f"""
SELECT u.*, c.*, j.* FROM {USAGE} u
  JOIN billing_company c ON c.id = u.company_id
  LEFT JOIN usage_job j ON j.id = u.job_id
 {{where}} ORDER BY u.occurred_at DESC, u.id DESC LIMIT 100"""


def _admin(ctx: Context, name: str, title: str, query: str, where: str, params) -> Result:
    target = "p95 <= 300 ms, <= 8 queries, no full COUNT(*)"
    url = "/admin/usage/questiongenerationusage/" + query
    result = Result(name, title, target, lower_bound_label="SELECT ... LIMIT 100")
    sql = ADMIN_SQL.format(where=where)
    _page(ctx, result, url, sql, params, max_ms=300, max_queries=8, repeat=10)
    _, queries = _queries(ctx.client(), url)
    full = [q["sql"] for q in queries if FULL_COUNT.search(q["sql"])]
    result.notes.insert(0, f"full COUNT(*) over {USAGE}: {'YES' if full else 'no'}")
    if full:
        result.met = False
    return result


def admin_changelist(ctx: Context) -> Result:
    return _admin(ctx, "admin_changelist", "admin usage changelist, unfiltered", "", "", None)


def admin_changelist_company(ctx: Context) -> Result:
    return _admin(
        ctx,
        "admin_changelist_company",
        "admin usage changelist, filtered by largest company",
        f"?company__id__exact={ctx.largest}",
        "WHERE u.company_id = %s",
        [ctx.largest],
    )


def admin_explain(ctx: Context) -> str:
    """EXPLAIN ANALYZE of the admin's heaviest queries, for the report's findings."""
    client = ctx.client()
    _, queries = _queries(client, "/admin/usage/questiongenerationusage/")
    ranked = sorted(queries, key=lambda q: float(q["time"]), reverse=True)[:2]
    return "\n\n".join(f"{q['sql']}\n{explain(q['sql'])}" for q in ranked)


# --- 7. CSV export ------------------------------------------------------------------


def _export_range(ctx: Context, wanted: int):
    """The largest company's date range ending today that holds about `wanted` rows."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT day, sum(generations) OVER (ORDER BY day DESC) AS running
                  FROM (SELECT day, sum(generations) AS generations FROM {ROLLUP}
                         WHERE company_id = %s GROUP BY day) d
                 ORDER BY day DESC""",
            [ctx.largest],
        )
        rows = cursor.fetchall()
    first, total = rows[-1][0], rows[-1][1]
    for day, running in rows:
        if running >= wanted:
            first, total = day, running
            break
    return first, rows[0][0], int(total)


def csv_export(ctx: Context) -> Result:
    title = "CSV export, group=generation, ~1M rows"
    target = "<= 15 s, peak < 200 MB"
    path = f"/billing/{ctx.largest}/"
    if not url_exists(path):
        return not_available("csv_export", title, target, f"{path} does not resolve yet")
    first, last, rows = _export_range(ctx, ctx.scaled(1_000_000))
    url = f"{path}?tab=usage&from={first}&to={last}&group=generation&format=csv"
    ctx.staff_user()
    result = Result("csv_export", title, target, unit="s", lower_bound_label="COPY TO STDOUT")
    runs = [ctx.child("get", "bench-staff", url, timeout=900) for _ in range(ctx.reps(2))]
    failed = [r for r in runs if r.get("error") or r.get("status") != 200]
    if failed:
        result.status = "error"
        result.notes.append(str(failed[0].get("error") or failed[0].get("status")))
        return result
    fill(result, [r["elapsed"] for r in runs])
    result.peak_mb = max(r["peak_mb"] for r in runs)
    last_run = runs[-1]
    result.notes.append(
        f"{rows:,} rows in range {first}..{last}; {last_run['lines']:,} lines, "
        f"{last_run['bytes'] / 1e6:.0f} MB, streaming={last_run['streaming']}, "
        f"baseline RSS {last_run['baseline_mb']:.0f} MB"
    )
    copy_sql = f"""COPY (SELECT u.occurred_at, u.model, u.status, u.job_id, u.draft_job_id,
        u.question_count, u.prompt_tokens, u.cached_prompt_tokens, u.completion_tokens, u.cost
        FROM {USAGE} u WHERE u.company_id = '{ctx.largest}' AND u.occurred_on BETWEEN
        '{first}' AND '{last}' ORDER BY u.occurred_at) TO STDOUT WITH CSV HEADER"""
    result.lower_bound = _copy_seconds(copy_sql, using=ctx.reads)
    result.met = result.p95 <= 15 and result.peak_mb < 200
    return result


def _copy_seconds(sql: str, *, using: str = "default") -> float:
    import time

    connections[using].ensure_connection()
    raw = connections[using].connection
    t0 = time.perf_counter()
    with raw.cursor() as cursor, cursor.copy(sql) as copy:
        for _ in copy:
            pass
    return time.perf_counter() - t0


__all__ = [
    "usage_tab",
    "overview",
    "admin_changelist",
    "admin_changelist_company",
    "csv_export",
    "LEDGER",
]

"""Builds the benchmark dataset in PostgreSQL with set-based SQL.

Everything is `INSERT ... SELECT FROM generate_series` (no ORM row by row):
companies with a skewed size (the largest holds a tenth of all rows, the rest
Zipf-like), jobs, three price periods per model, usage rows (priced rows
reference the price in effect at `occurred_at`; some reported, a few
unpriced; 2 % pending drafts whose jobs are saved, the reconcile target; some
abandoned and some fresh unsaved drafts), the daily rollup from the raw rows
with one GROUP BY, and a credit ledger (purchases, grants and one debit per
costed usage row, running `balance_after`) whose sum is each balance.

Indexes and unique/foreign-key constraints of the big tables are dropped
around the load and recreated from their own definitions (so indexes added by
later migrations are kept), then the tables are ANALYZEd. A marker table
`bench_dataset` records what was built, for `--reuse`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection
from django.utils import timezone

USAGE = "question_generation_usage"
LEDGER = "billing_ledgerentry"
STATEMENT = "billing_statement"
STATEMENT_LINE = "billing_statementline"
# Tables whose own triggers refuse TRUNCATE (lifted for the bench database only).
GUARDED = (LEDGER, STATEMENT, STATEMENT_LINE)
ROLLUP = "usage_daily_rollup"
JOB = "usage_job"
BULK_TABLES = (USAGE, LEDGER, ROLLUP, JOB)

MODELS = {  # model: three (input, cached input, output) prices per million tokens, oldest first
    "gpt-4o": [("2.500000", "1.250000", "10.000000"), ("2.250000", "1.125000", "9.000000"), ("2.000000", "1.000000", "8.000000")],
    "gpt-4o-mini": [("0.150000", "0.075000", "0.600000"), ("0.140000", "0.070000", "0.560000"), ("0.120000", "0.060000", "0.480000")],
    "claude-sonnet-4": [("3.000000", "0.300000", "15.000000"), ("3.000000", "0.300000", "14.500000"), ("2.750000", "0.275000", "13.750000")],
    "o3": [("10.000000", "2.500000", "40.000000"), ("8.000000", "2.000000", "32.000000"), ("2.000000", "0.500000", "8.000000")],
}  # fmt: skip
UNPRICED_MODEL = "experimental-x"
TIMEZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "America/Los_Angeles", "Asia/Tokyo"]  # fmt: skip

SIZES = {
    "tiny": (20_000, 20),
    "small": (1_000_000, 200),
    "full": (10_000_000, 1_000),
}


@dataclass(frozen=True)
class Spec:
    rows: int
    companies: int
    months: int = 13
    pending_share: float = 0.02
    abandoned_share: float = 0.005
    unsaved_share: float = 0.003
    largest_share: float = 0.10
    zipf_s: float = 0.8
    rows_per_job: int = 20

    @property
    def label(self) -> str:
        return f"{self.rows}x{self.companies}"


def spec_for(size: str) -> Spec:
    """`tiny`, `small`, `full` or a row count (companies scale with it, 20..1000)."""
    if size in SIZES:
        rows, companies = SIZES[size]
    else:
        rows = int(size.replace("_", ""))
        companies = max(20, min(1_000, rows // 10_000))
    return Spec(rows=rows, companies=companies)


def company_uuid_sql(ci: str) -> str:
    return f"md5('bench-company:' || ({ci}))::uuid"


def job_uuid_sql(ci: str, j: str) -> str:
    return f"md5('bench-job:' || ({ci}) || ':' || ({j}))::uuid"


def largest_share(spec: Spec) -> float:
    """A tenth, unless there are too few companies for a tenth to be the largest."""
    return max(spec.largest_share, 1.5 / spec.companies)


def company_row_counts(spec: Spec) -> list[int]:
    """Rows per company: #1 holds `largest_share`, the rest 1/k^s (k from 2), summing to rows."""
    share = largest_share(spec)
    rest = spec.rows - round(spec.rows * share)
    weights = [1 / (k**spec.zipf_s) for k in range(2, spec.companies + 1)]
    total = sum(weights)
    counts = [max(1, math.floor(rest * w / total)) for w in weights]
    # With few companies the Zipf head would outgrow the largest: cap it, spread the excess.
    cap = math.floor(spec.rows * share * 0.8)
    excess = sum(max(0, n - cap) for n in counts)
    counts = [min(n, cap) for n in counts]
    for i in range(excess):
        counts[len(counts) - 1 - i % len(counts)] += 1
    counts.insert(0, spec.rows - sum(counts))
    return counts


# --- Bookkeeping -----------------------------------------------------------------


def execute(sql: str, params: list | tuple | None = None) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def fetchall(sql: str, params: list | tuple | None = None) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def marker() -> dict | None:
    """What the last build made, or None."""
    exists = fetchall("SELECT to_regclass('bench_dataset') IS NOT NULL")[0][0]
    if not exists:
        return None
    rows = fetchall(
        "SELECT rows, companies, built_at, build_seconds, anchor, largest_company FROM bench_dataset"
    )
    if not rows:
        return None
    keys = ["rows", "companies", "built_at", "build_seconds", "anchor", "largest_company"]
    return dict(zip(keys, rows[0], strict=True))


def _write_marker(spec: Spec, anchor: datetime, seconds: float) -> None:
    execute(
        """CREATE TABLE IF NOT EXISTS bench_dataset (
               rows bigint, companies int, built_at timestamptz, build_seconds float8,
               anchor timestamptz, largest_company uuid)"""
    )
    execute("DELETE FROM bench_dataset")
    execute(
        f"INSERT INTO bench_dataset VALUES (%s, %s, now(), %s, %s, {company_uuid_sql('1')})",
        [spec.rows, spec.companies, seconds, anchor],
    )


# --- Index and constraint handling around the load --------------------------------


def _bulk_definitions() -> tuple[list[tuple[str, str, str]], list[str]]:
    """(table, name, definition) of droppable constraints, and CREATE INDEX statements."""
    oids = ", ".join(f"'{t}'::regclass" for t in BULK_TABLES)
    constraints = fetchall(
        f"""SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), contype
              FROM pg_constraint
             WHERE (conrelid IN ({oids}) AND contype IN ('p', 'u', 'f', 'x'))
                OR (confrelid IN ({oids}) AND contype = 'f')
             ORDER BY CASE contype WHEN 'f' THEN 1 ELSE 0 END, conname"""
    )
    indexes = fetchall(
        f"""SELECT pg_get_indexdef(i.indexrelid)
              FROM pg_index i
             WHERE i.indrelid IN ({oids})
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"""
    )
    return [(t, n, d) for t, n, d, _ in constraints], [row[0] for row in indexes]


def _drop_for_load() -> tuple[list[tuple[str, str, str]], list[str]]:
    """Drop and return the definitions; kept in `bench_ddl` until recreated.

    A build that dies half-way leaves them there, and the next build recreates
    them, so a failure can never leave the schema without its indexes.
    """
    execute("CREATE TABLE IF NOT EXISTS bench_ddl (ord serial, tbl text, name text, def text)")
    saved = fetchall("SELECT tbl, name, def FROM bench_ddl ORDER BY ord")
    constraints, indexes = _bulk_definitions()
    constraints += [(t, n, d) for t, n, d in saved if t and (t, n, d) not in constraints]
    indexes += [d for t, n, d in saved if not t and d not in indexes]
    execute("DELETE FROM bench_ddl")
    with connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO bench_ddl (tbl, name, def) VALUES (%s, %s, %s)",
            constraints + [("", "", d) for d in indexes],
        )
    for table, name, _definition in reversed(constraints):  # foreign keys first
        execute(f'ALTER TABLE {table} DROP CONSTRAINT IF EXISTS "{name}"')
    for definition in indexes:
        name = definition.split(" INDEX ", 1)[1].split(" ON ", 1)[0]
        execute(f"DROP INDEX IF EXISTS {name}")
    return constraints, indexes


def _recreate(constraints: list[tuple[str, str, str]], indexes: list[str], log) -> None:
    for table, name, definition in constraints:
        if definition.startswith("FOREIGN KEY"):
            continue
        log(f"  constraint {name}")
        execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for definition in indexes:
        log(f"  {definition[:90]}")
        execute(definition)
    for table, name, definition in constraints:
        if definition.startswith("FOREIGN KEY"):
            log(f"  foreign key {name}")
            execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    execute("DROP TABLE bench_ddl")


# --- The load ----------------------------------------------------------------------


def _load_companies(spec: Spec, start: datetime) -> None:
    counts = company_row_counts(spec)
    execute("DROP TABLE IF EXISTS bench_co")
    execute(
        "CREATE TABLE bench_co (ci int PRIMARY KEY, id uuid, tz text, start_g bigint, n bigint, njobs int)"
    )
    values, offset = [], 0
    for ci, n in enumerate(counts, start=1):
        tz = "Europe/Berlin" if ci == 1 else TIMEZONES[ci % len(TIMEZONES)]
        values.append((ci, tz, offset, n, max(1, n // spec.rows_per_job)))
        offset += n
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO bench_co VALUES (%s, {company_uuid_sql('%s')}, %s, %s, %s, %s)",
            [(ci, ci, tz, s, n, j) for ci, tz, s, n, j in values],
        )
    execute(
        """INSERT INTO billing_company (id, name, external_id, timezone, currency, is_active,
               low_balance_threshold, overdraft_allowance, monthly_spend_limit, billing_emails,
               created_at, updated_at)
           SELECT id, CASE WHEN ci = 1 THEN 'Acme Hiring (largest)' ELSE 'Company ' || lpad(ci::text, 4, '0') END,
                  'bench-org-' || ci, tz, 'USD', true, 10, 0,
                  CASE WHEN ci %% 10 = 0 THEN 5000 END, 'billing' || ci || '@example.com',
                  %s, %s
             FROM bench_co""",
        [start - timedelta(days=1), start - timedelta(days=1)],
    )


def _load_prices(start: datetime) -> list[datetime]:
    bounds = [start - timedelta(days=1), start + timedelta(days=120), start + timedelta(days=270)]
    rows = []
    for model, periods in MODELS.items():
        for i, (inp, cached, out) in enumerate(periods):
            end = bounds[i + 1] if i + 1 < len(bounds) else None
            rows.append((model, inp, cached, out, "USD", bounds[i], end, bounds[0]))
    with connection.cursor() as cursor:
        cursor.executemany(
            """INSERT INTO billing_modelprice (model, input_per_million, cached_input_per_million,
                   output_per_million, currency, effective_from, effective_to, created_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
            rows,
        )
    return bounds


def _load_jobs(start: datetime) -> int:
    return execute(
        f"""INSERT INTO {JOB} (id, company_id, title, draft_id, created_at, updated_at)
            SELECT {job_uuid_sql("c.ci", "j")}, c.id,
                   (ARRAY['Backend Engineer', 'Data Analyst', 'Nurse', 'Sales Lead', 'Teacher'])[1 + j %% 5]
                       || ' #' || j,
                   'd-' || c.ci || '-' || j, %s, %s
              FROM bench_co c, generate_series(0, c.njobs - 1) j""",
        [start, start],
    )


_USAGE_SQL = f"""
INSERT INTO {USAGE} (id, company_id, job_id, draft_job_id, status, model, prompt_tokens,
    cached_prompt_tokens, completion_tokens, question_count, cost, cost_source, price_id,
    idempotency_key, request_fingerprint, occurred_at, occurred_on, recorded_at,
    reconciled_at, abandoned_at, metadata, processing_time_ms)
SELECT gen_random_uuid(), s.company_id,
       CASE WHEN s.kind = 'linked' THEN {job_uuid_sql("s.ci", "s.j")} END,
       CASE s.kind
            WHEN 'linked' THEN CASE WHEN s.via_draft THEN 'd-' || s.ci || '-' || s.j END
            WHEN 'pending' THEN 'd-' || s.ci || '-' || s.j
            WHEN 'abandoned' THEN 'a-' || s.ci || '-' || (s.g %% 997)
            ELSE 'u-' || s.ci || '-' || (s.g %% 331) END,
       CASE s.kind WHEN 'linked' THEN 'linked' WHEN 'abandoned' THEN 'abandoned' ELSE 'draft' END,
       s.model, s.pt, s.cpt, s.ct, s.qc,
       CASE s.src
            WHEN 'priced' THEN ((s.pt - s.cpt) * p.input_per_million
                 + s.cpt * p.cached_input_per_million + s.ct * p.output_per_million) * 0.000001
            WHEN 'reported' THEN round((s.pt + s.ct) * 0.0000031, 12) END,
       s.src, CASE WHEN s.src = 'priced' THEN p.id END,
       'bench-' || s.g, '', s.at, (s.at AT TIME ZONE s.tz)::date, s.at + interval '2 seconds',
       CASE WHEN s.kind = 'linked' AND s.via_draft THEN LEAST(s.at + interval '1 hour', %(now)s) END,
       CASE WHEN s.kind = 'abandoned' THEN s.at + interval '30 days' END,
       '{{}}'::jsonb, s.ptime
  FROM (
    SELECT r.*,
           CASE WHEN r.model = '{UNPRICED_MODEL}' THEN 'unpriced'
                WHEN r.rsrc < 0.03 THEN 'reported' ELSE 'priced' END AS src,
           CASE r.kind
                WHEN 'abandoned' THEN %(now)s - interval '31 days' - (%(now)s - interval '31 days' - %(start)s) * r.rt
                WHEN 'unsaved' THEN %(now)s - interval '25 days' * r.rt
                ELSE %(start)s + (%(now)s - %(start)s) * power(r.rt, 0.85) END AS at
      FROM (
        SELECT x.*,
               CASE WHEN x.u < %(p1)s THEN 'pending' WHEN x.u < %(p2)s THEN 'abandoned'
                    WHEN x.u < %(p3)s THEN 'unsaved' ELSE 'linked' END AS kind,
               CASE WHEN x.m < 0.5 THEN 'gpt-4o' WHEN x.m < 0.8 THEN 'gpt-4o-mini'
                    WHEN x.m < 0.95 THEN 'claude-sonnet-4' WHEN x.m < 0.999 THEN 'o3'
                    ELSE '{UNPRICED_MODEL}' END AS model,
               (x.pt * x.rcache)::int AS cpt
          FROM (
            SELECT c.ci, c.id AS company_id, c.tz, g,
                   random() AS u, random() AS m, random() AS rsrc, random() AS rt,
                   floor(power(random(), 2) * c.njobs)::int AS j,
                   random() < 0.3 AS via_draft,
                   CASE WHEN random() < 0.4 THEN random() * 0.6 ELSE 0 END AS rcache,
                   500 + floor(random() * 4000)::int AS pt,
                   150 + floor(random() * 2500)::int AS ct,
                   1 + floor(random() * 10)::int AS qc,
                   400 + floor(random() * 20000)::int AS ptime
              FROM bench_co c, generate_series(c.start_g, c.start_g + c.n - 1) g
            OFFSET 0
          ) x
        OFFSET 0
      ) r
    OFFSET 0
  ) s
  LEFT JOIN billing_modelprice p
         ON p.model = s.model AND p.effective_from <= s.at
        AND (p.effective_to IS NULL OR s.at < p.effective_to)
"""


def _load_usage(spec: Spec, start: datetime, now: datetime) -> int:
    p1 = spec.pending_share
    p2 = p1 + spec.abandoned_share
    p3 = p2 + spec.unsaved_share
    return execute(_USAGE_SQL, {"now": now, "start": start, "p1": p1, "p2": p2, "p3": p3})


ROLLUP_FROM_RAW = f"""
SELECT company_id, occurred_on, model, status, count(*), sum(question_count),
       sum(prompt_tokens), sum(cached_prompt_tokens), sum(completion_tokens),
       coalesce(sum(cost), 0), count(*) FILTER (WHERE cost IS NULL)
  FROM {USAGE} GROUP BY company_id, occurred_on, model, status
"""


def _load_rollup() -> int:
    return execute(
        f"""INSERT INTO {ROLLUP} (company_id, day, model, status, generations, questions,
                prompt_tokens, cached_prompt_tokens, completion_tokens, cost, unpriced)
            {ROLLUP_FROM_RAW}"""
    )


_LEDGER_SQL = f"""
INSERT INTO {LEDGER} (id, company_id, kind, amount, balance_after, reason, actor_id,
    idempotency_key, usage_id, expires_at, metadata, created_at)
SELECT row_number() OVER (ORDER BY e.t, e.ord, e.company_id, e.key),
       e.company_id, e.kind, e.amount,
       sum(e.amount) OVER (PARTITION BY e.company_id ORDER BY e.t, e.ord, e.key),
       e.reason, NULL, e.key, e.usage_id, e.expires_at, '{{}}'::jsonb, e.t
  FROM (
    SELECT company_id, 'grant' AS kind, 25::numeric AS amount, %(welcome)s::timestamptz AS t,
           0 AS ord, 'bench-welcome' AS key, NULL::uuid AS usage_id, NULL::timestamptz AS expires_at,
           'Welcome credit' AS reason
      FROM (SELECT id AS company_id FROM billing_company WHERE external_id LIKE 'bench-org-%%') c
    UNION ALL
    SELECT id, 'grant', 10, %(now)s - interval '5 days', 0, 'bench-promo', NULL,
           %(now)s + interval '60 days', 'Promotional credit'
      FROM billing_company WHERE external_id LIKE 'bench-org-%%'
    UNION ALL
    SELECT company_id, 'purchase', ceil(sum(cost) * 1.3) + 20,
           date_trunc('month', min(day))::timestamptz, 0,
           'bench-purchase-' || to_char(date_trunc('month', min(day)), 'YYYY-MM'), NULL, NULL,
           'Monthly top-up'
      FROM {ROLLUP} GROUP BY company_id, date_trunc('month', day)
    UNION ALL
    SELECT company_id, 'usage', -cost, recorded_at, 1, 'usage:' || id, id, NULL,
           model || ': ' || question_count || ' questions'
      FROM {USAGE} WHERE cost IS NOT NULL
  ) e
"""


def _load_ledger(start: datetime, now: datetime) -> int:
    count = execute(_LEDGER_SQL, {"welcome": start - timedelta(days=1), "now": now})
    execute(
        f"SELECT setval(pg_get_serial_sequence('{LEDGER}', 'id'), (SELECT max(id) FROM {LEDGER}))"
    )
    execute(
        f"""INSERT INTO billing_creditbalance (company_id, balance, updated_at)
            SELECT company_id, sum(amount), %s FROM {LEDGER} GROUP BY company_id""",
        [now],
    )
    return count


def _derived_credit_state(log: Callable[[str], None]) -> int:
    """Run the project's own backfills for state derived from the ledger (e.g. credit lots).

    The ledger is the source of truth; tables the credits code derives from it
    are filled by that code's backfill migration when one exists, so the bench
    never re-implements allocation rules. Returns how many backfills ran.
    """
    import importlib
    import pkgutil

    from django.apps import apps

    import billing.migrations as package

    ran = 0
    for info in pkgutil.iter_modules(package.__path__):
        if "backfill" not in info.name:
            continue
        module = importlib.import_module(f"billing.migrations.{info.name}")
        backfill = getattr(module, "backfill", None)
        if callable(backfill):
            log(f"  running {info.name}.backfill")
            backfill(apps, None)
            ran += 1
    return ran


def _mark_pending() -> int:
    """Remember the reconcile target (pending drafts of saved jobs) so a run can be undone."""
    execute("DROP TABLE IF EXISTS bench_pending")
    count = execute(
        f"""CREATE TABLE bench_pending AS
            SELECT u.id FROM {USAGE} u
             WHERE u.job_id IS NULL AND u.status = 'draft' AND u.draft_job_id LIKE 'd-%'"""
    )
    execute("ALTER TABLE bench_pending ADD PRIMARY KEY (id)")
    return count


def _empty_tables() -> None:
    """Remove earlier data (the ledger's and statements' guards are lifted for the bench DB only)."""
    for table in GUARDED:
        execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    try:
        execute(
            f"""TRUNCATE {LEDGER}, billing_creditbalance, {ROLLUP}, usage_rejectedevent, {USAGE},
                {JOB}, billing_modelprice, billing_apikey, billing_membership, billing_auditevent,
                {STATEMENT_LINE}, {STATEMENT}, billing_company CASCADE"""
        )
    finally:
        for table in GUARDED:
            execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    execute("DROP TABLE IF EXISTS bench_dataset, bench_pending, bench_co")


def build(spec: Spec, *, log: Callable[[str], None] = print, now: datetime | None = None) -> dict:
    """Empty the billing tables and load `spec`; returns timings per step (seconds)."""
    now = now or timezone.now()
    start = now - timedelta(days=round(spec.months * 30.4))
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    def step(name: str, fn, *args):
        t0 = time.perf_counter()
        result = fn(*args)
        timings[name] = time.perf_counter() - t0
        detail = f" ({result:,} rows)" if isinstance(result, int) else ""
        log(f"  {name}: {timings[name]:.1f}s{detail}")
        return result

    execute("SET synchronous_commit = off")
    execute("SET maintenance_work_mem = '1GB'")
    execute("SET work_mem = '256MB'")
    step("empty tables", _empty_tables)
    constraints, indexes = step("drop indexes", _drop_for_load)
    step("companies", _load_companies, spec, start)
    step("prices", _load_prices, start)
    step("jobs", _load_jobs, start)
    step("usage rows", _load_usage, spec, start, now)
    step("daily rollup", _load_rollup)
    step("ledger and balances", _load_ledger, start, now)
    step("indexes and constraints", _recreate, constraints, indexes, log)
    step("derived credit state", _derived_credit_state, log)
    step("pending marker", _mark_pending)
    execute("DROP TABLE IF EXISTS bench_co")
    # VACUUM too: it sets the visibility map, as autovacuum soon would in production,
    # so index-only scans are possible from the first measurement (not inside a test's transaction).
    step("vacuum analyze", execute, "ANALYZE" if connection.in_atomic_block else "VACUUM (ANALYZE)")
    for name in ("synchronous_commit", "maintenance_work_mem", "work_mem"):
        execute(f"RESET {name}")
    seconds = time.perf_counter() - t_all
    _write_marker(spec, now, seconds)
    timings["total"] = seconds
    return timings

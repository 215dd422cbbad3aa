"""Throughput of `reconcile_drafts` against one plain `UPDATE ... FROM` on the same data.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/qg_reconcile \\
        .venv/bin/python bench/reconcile_throughput.py --pending 200000 --linked 800000

DESTROYS the usage data of the database it is pointed at (it refuses a
database whose name does not contain "bench" or "reconcile" unless --force).
Builds the dataset with set-based SQL: companies, saved jobs, linked usage,
and `--pending` draft rows (4 per draft; 90 % of drafts saved as jobs since,
`--id-share` percent of them under the job's own id, 10 % not saved). Then, several times,
resets the drafts to pending (VACUUM ANALYZE) and times (a) the plain
statement, which links by draft_id only and keeps no rollup, and (b)
usage.reconcile.reconcile_drafts, which also matches job ids and keeps the
rollup exact. Reports rows/s, the ratio, the slowest batch and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from usage.reconcile import DEFAULT_BATCH_SIZE, reconcile_drafts  # noqa: E402

BUILD = """
TRUNCATE usage_daily_rollup, question_generation_usage, usage_job, billing_creditbalance CASCADE;
DELETE FROM billing_company WHERE name LIKE 'bench %%';
INSERT INTO billing_company (id, name, external_id, timezone, currency, is_active,
    low_balance_threshold, overdraft_allowance, billing_emails, created_at, updated_at)
SELECT gen_random_uuid(), 'bench ' || i, 'bench_' || i, 'UTC', 'USD', true, 10, 0, '', now(), now()
  FROM generate_series(1, %(companies)s) i;
CREATE TEMP TABLE bc AS
SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM billing_company WHERE name LIKE 'bench %%';
-- drafts: 90 %% saved (two thirds by draft_id, one third by the job's own id), 10 %% not
INSERT INTO usage_job (id, company_id, title, draft_id, created_at, updated_at)
SELECT gen_random_uuid(), bc.id, 'job ' || d,
       CASE WHEN d %% 100 < %(id_share)s THEN NULL ELSE 'draft-' || d END, now(), now()
  FROM generate_series(0, %(drafts)s - 1) d JOIN bc ON bc.n = d %% %(companies)s
 WHERE d %% 10 <> 9;
INSERT INTO usage_job (id, company_id, title, draft_id, created_at, updated_at)
SELECT gen_random_uuid(), bc.id, 'old job ' || k, NULL, now(), now()
  FROM generate_series(0, %(old_jobs)s - 1) k JOIN bc ON bc.n = k %% %(companies)s;
CREATE TEMP TABLE dj AS
SELECT d, bc.id AS company_id, j.id AS job_id
  FROM generate_series(0, %(drafts)s - 1) d JOIN bc ON bc.n = d %% %(companies)s
  LEFT JOIN usage_job j ON j.title = 'job ' || d;
INSERT INTO question_generation_usage (id, company_id, job_id, draft_job_id, status, model,
    prompt_tokens, cached_prompt_tokens, completion_tokens, question_count, cost, cost_source,
    idempotency_key, request_fingerprint, occurred_at, occurred_on, recorded_at, metadata)
SELECT gen_random_uuid(), dj.company_id, NULL,
       CASE WHEN dj.d %% 100 < %(id_share)s AND dj.job_id IS NOT NULL THEN dj.job_id::text ELSE 'draft-' || dj.d END,
       'draft', 'gpt-bench', 1000, 100, 500, 5, 0.0075, 'reported',
       'pending-' || r, '', now() - (r %% 20) * interval '1 day',
       (now() - (r %% 20) * interval '1 day')::date, now(), '{}'
  FROM generate_series(0, %(pending)s - 1) r JOIN dj ON dj.d = r / 4;
INSERT INTO question_generation_usage (id, company_id, job_id, draft_job_id, status, model,
    prompt_tokens, cached_prompt_tokens, completion_tokens, question_count, cost, cost_source,
    idempotency_key, request_fingerprint, occurred_at, occurred_on, recorded_at, metadata)
SELECT gen_random_uuid(), j.company_id, j.id, NULL, 'linked', 'gpt-bench', 1000, 100, 500, 5,
       0.0075, 'reported', 'linked-' || r, '', now() - (r %% 400) * interval '1 day',
       (now() - (r %% 400) * interval '1 day')::date, now(), '{}'
  FROM generate_series(0, %(linked)s - 1) r
  JOIN (SELECT id, company_id, row_number() OVER (ORDER BY id) - 1 AS n
          FROM usage_job WHERE title LIKE 'old job %%') j ON j.n = r %% %(old_jobs)s;
"""

RESET = """
UPDATE question_generation_usage
   SET job_id = NULL, status = 'draft', reconciled_at = NULL, abandoned_at = NULL
 WHERE idempotency_key LIKE 'pending-%%' AND job_id IS NOT NULL;
TRUNCATE usage_daily_rollup;
INSERT INTO usage_daily_rollup (company_id, day, model, status, generations, questions,
    prompt_tokens, cached_prompt_tokens, completion_tokens, cost, unpriced)
SELECT company_id, occurred_on, model, status, count(*), sum(question_count), sum(prompt_tokens),
       sum(cached_prompt_tokens), sum(completion_tokens), COALESCE(sum(cost), 0),
       count(*) FILTER (WHERE cost IS NULL)
  FROM question_generation_usage GROUP BY 1, 2, 3, 4;
"""

PLAIN = """
UPDATE question_generation_usage u
   SET job_id = j.id, status = 'linked', reconciled_at = now()
  FROM usage_job j
 WHERE u.job_id IS NULL AND j.company_id = u.company_id AND j.draft_id = u.draft_job_id
"""


def execute(sql: str, params: dict | None = None) -> int:
    with connection.cursor() as cursor:
        for statement in filter(str.strip, sql.split(";\n")):
            cursor.execute(statement, params)
        return cursor.rowcount


def reset() -> None:
    execute(RESET)
    execute("VACUUM ANALYZE question_generation_usage")
    execute("VACUUM ANALYZE usage_daily_rollup")


def time_plain() -> tuple[float, int]:
    started = time.monotonic()
    rows = execute(PLAIN)
    return time.monotonic() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=200_000)
    parser.add_argument("--linked", type=int, default=800_000)
    parser.add_argument("--companies", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--id-share",
        type=int,
        default=0,
        help="percent of saved drafts whose usage carries the job's own id (the plain "
        "statement does not match those, so keep 0 to compare equal work)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    name = connection.settings_dict["NAME"]
    if not args.force and "bench" not in name and "reconcile" not in name:
        sys.exit(f"refusing to overwrite database {name!r} (use --force)")
    if not args.skip_build:
        started = time.monotonic()
        drafts = args.pending // 4
        execute(
            BUILD,
            dict(
                companies=args.companies,
                drafts=drafts,
                pending=args.pending,
                linked=args.linked,
                old_jobs=max(1, args.linked // 20),
                id_share=args.id_share,
            ),
        )
        print(f"built in {time.monotonic() - started:.1f}s")
    plain_runs, ours, batches = [], [], []
    for _ in range(args.repeat):
        reset()
        seconds, rows = time_plain()
        plain_runs.append(seconds)
        print(
            f"plain UPDATE ... FROM: {rows} rows in {seconds:.3f}s = {rows / seconds:,.0f} rows/s"
        )
        reset()
        report = reconcile_drafts(batch_size=args.batch_size, abandon_after_days=30)
        ours.append(report.duration_seconds)
        batches.append(report.max_batch_seconds)
        print(
            f"reconcile_drafts: {report.reconciled_rows} linked of {report.scanned_rows} pending "
            f"in {report.duration_seconds:.3f}s = {report.scanned_rows / report.duration_seconds:,.0f}"
            f" pending rows/s ({report.reconciled_rows / report.duration_seconds:,.0f} linked/s), "
            f"{report.batches} batches, slowest {report.max_batch_seconds * 1000:.0f} ms"
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    plain_median, ours_median = statistics.median(plain_runs), statistics.median(ours)
    print(
        f"median: plain {plain_median:.3f}s, reconcile {ours_median:.3f}s, "
        f"ratio {ours_median / plain_median:.2f}x; slowest batch {max(batches) * 1000:.0f} ms; "
        f"peak RSS {peak_mb:.0f} MB; PostgreSQL {connection.pg_version}"
    )


if __name__ == "__main__":
    main()

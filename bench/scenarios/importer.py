"""8. `import_usage` of a hand-made CSV (1 million rows at full size).

The file has the shape of the hand-made exports the importer exists for:
`id, company_id, job_id, draft_job_id, prompt_tokens, completion_tokens,
total_tokens, question_count, cost, model_used, created_at`. It goes to a
company created for this run (deleted afterwards, with everything it got),
so the shared dataset does not grow. The command runs in a fresh process
(rows/s, peak RSS); the lower bound is `COPY` of the same file into a staging
table, rolled back.
"""

from __future__ import annotations

import csv
import os
import random
import tempfile
import time
import uuid
from datetime import timedelta

from django.db import connection, transaction
from django.utils import timezone

from bench.cleanup import delete_companies
from bench.context import Context, command_exists
from bench.measure import Result, not_available

HEADER = [
    "id", "company_id", "job_id", "draft_job_id", "prompt_tokens", "completion_tokens",
    "total_tokens", "question_count", "cost", "model_used", "created_at",
]  # fmt: skip


def _import_company(tag: str) -> tuple[str, list[str]]:
    from billing.models import Company
    from usage.models import Job

    company = Company.objects.create(name=f"Bench import {tag}", external_id=f"bench-import-{tag}")
    jobs = Job.objects.bulk_create(
        Job(company=company, title=f"Imported job {i}", draft_id=f"imp-{i}") for i in range(100)
    )
    return str(company.pk), [str(job.pk) for job in jobs]


def write_csv(path: str, rows: int, company: str, jobs: list[str]) -> None:
    """The hand-made shape: ids, tokens, an optional reported cost, ISO times with offset."""
    now = timezone.now()
    models = ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4"]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for n in range(rows):
            prompt, completion = random.randint(500, 4500), random.randint(150, 2600)
            linked = n % 10
            writer.writerow([
                uuid.uuid4(), company,
                random.choice(jobs) if linked else "", "" if linked else f"imp-draft-{n % 500}",
                prompt, completion, prompt + completion, random.randint(1, 10),
                f"{(prompt * 2.5 + completion * 10) / 1e6:.6f}" if n % 4 == 0 else "",
                random.choice(models),
                (now - timedelta(seconds=random.randint(60, 300 * 86400))).isoformat(),
            ])  # fmt: skip


def _copy_rows_per_second(path: str, rows: int) -> float:
    connection.ensure_connection()
    raw = connection.connection
    with transaction.atomic(), raw.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE bench_import_stage (id uuid, company_id uuid, job_id text, "
            "draft_job_id text, prompt_tokens int, completion_tokens int, total_tokens int, "
            "question_count int, cost numeric, model_used text, created_at timestamptz) "
            "ON COMMIT DROP"
        )
        t0 = time.perf_counter()
        with open(path, "rb") as fh, cursor.copy("COPY bench_import_stage FROM STDIN WITH CSV HEADER") as copy:  # fmt: skip
            while chunk := fh.read(1 << 20):
                copy.write(chunk)
        elapsed = time.perf_counter() - t0
        transaction.set_rollback(True)
    return rows / elapsed


def import_usage(ctx: Context) -> Result:
    title = "import_usage of a 1M-row CSV"
    target = ">= 5,000 rows/s, memory flat"
    if not command_exists("import_usage"):
        return not_available("import_usage", title, target, "command import_usage not found")
    rows = ctx.scaled(1_000_000)
    tag = uuid.uuid4().hex[:8]
    company, jobs = _import_company(tag)
    fd, path = tempfile.mkstemp(prefix="bench-import-", suffix=".csv")
    os.close(fd)
    result = Result("import_usage", title, target, unit="rows/s", lower_bound_label="COPY into staging")  # fmt: skip
    try:
        t0 = time.perf_counter()
        write_csv(path, rows, company, jobs)
        ctx.log(f"    wrote {rows:,} CSV rows in {time.perf_counter() - t0:.1f}s")
        result.lower_bound = _copy_rows_per_second(path, rows)
        run = ctx.child("command", "import_usage", path, "--format", "csv", "--json", timeout=3600)
        if run.get("error"):
            result.status = "error"
            result.notes.append(run["error"][:500])
            return result
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM question_generation_usage WHERE company_id = %s", [company]
            )
            imported = cursor.fetchone()[0]
        result.samples = 1
        result.median = imported / run["elapsed"]
        result.peak_mb = run["peak_mb"]
        workers = run.get("forked_processes", 0)
        result.notes.append(
            f"{imported:,} of {rows:,} rows imported in {run['elapsed']:.1f}s by "
            f"{workers or 'no'} worker process(es); RSS baseline {run['baseline_mb']:.0f} MB, "
            f"peak {run['peak_mb']:.0f} MB in all (largest worker {run.get('forked_peak_mb', 0):.0f} MB, "
            f"counted once per worker); longest transaction "
            f"{run['longest_transaction_s'] * 1000:.0f} ms over {run['transactions']:,}; "
            f"output: {run.get('stdout', '')[-300:]}"
        )
        # "Flat": no process's peak grows past 150 MB over the baseline at 1M rows.
        largest = max(run["own_peak_mb"], run["forked_peak_mb"])
        result.met = result.median >= 5_000 and imported == rows and largest - run["baseline_mb"] < 150  # fmt: skip
    finally:
        os.unlink(path)
        delete_companies("external_id = %s", [f"bench-import-{tag}"])
    return result

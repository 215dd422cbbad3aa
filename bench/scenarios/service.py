"""0. The `record_usage` service in-process (what every ingestion path calls).

One caller, the hot company, a saved job: the per-event cost of the service
itself without HTTP. The lower bound is the same SQL transaction (insert
usage row, upsert rollup, update balance, insert ledger entry) issued by
hand on the same connection.
"""

from __future__ import annotations

import itertools
import random
import uuid

from django.db import connection, transaction

from bench.context import Context
from bench.measure import Result, fill, timed

_counter = itertools.count()

LOWER_BOUND = [
    """INSERT INTO question_generation_usage (id, company_id, job_id, status, model,
           prompt_tokens, cached_prompt_tokens, completion_tokens, question_count, cost,
           cost_source, price_id, idempotency_key, request_fingerprint, occurred_at, occurred_on,
           recorded_at, metadata)
       VALUES (%s, %s, %s, 'linked', 'gpt-4o', 1200, 200, 600, 5, 0.0077, 'priced', %s, %s, '',
               now(), current_date, now(), '{}')""",
    """INSERT INTO usage_daily_rollup (company_id, day, model, status, generations, questions,
           prompt_tokens, cached_prompt_tokens, completion_tokens, cost, unpriced)
       VALUES (%s, current_date, 'gpt-4o', 'linked', 1, 5, 1200, 200, 600, 0.0077, 0)
       ON CONFLICT (company_id, day, model, status) DO UPDATE SET
           generations = usage_daily_rollup.generations + 1,
           cost = usage_daily_rollup.cost + excluded.cost""",
    """UPDATE billing_creditbalance SET balance = balance - 0.0077, updated_at = now()
        WHERE company_id = %s RETURNING balance""",
    """INSERT INTO billing_ledgerentry (company_id, kind, amount, balance_after, reason,
           idempotency_key, usage_id, metadata, created_at)
       VALUES (%s, 'usage', -0.0077, %s, '', %s, %s, '{}', now())""",
]


def _lower_bound_once(company, job, price) -> None:
    usage_id = uuid.uuid4()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(LOWER_BOUND[0], [usage_id, company, job, price, f"bench-lb-{usage_id}"])
        cursor.execute(LOWER_BOUND[1], [company])
        cursor.execute(LOWER_BOUND[2], [company])
        balance = cursor.fetchone()[0]
        cursor.execute(LOWER_BOUND[3], [company, balance, f"usage:{usage_id}", usage_id])
        transaction.set_rollback(True)  # the bound's rows are not kept


def commit_ms(repeat: int) -> float:
    """Median cost of committing one small write (the WAL flush every event pays)."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_probe (at timestamptz)")

    def once() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("INSERT INTO bench_probe VALUES (now())")

    samples = timed(once, warmup=3, repeat=repeat)
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE bench_probe")
    return sorted(samples)[len(samples) // 2]


def record_usage_service(ctx: Context) -> Result:
    from billing.models import Company
    from usage.events import UsageEvent
    from usage.models import Job
    from usage.recording import record_usage

    company = Company.objects.get(pk=ctx.largest)
    jobs = [str(pk) for pk in Job.objects.filter(company=company).values_list("pk", flat=True)[:50]]
    run = uuid.uuid4().hex[:8]

    def once() -> None:
        record_usage(
            UsageEvent(
                company=str(company.pk),
                idempotency_key=f"bench-service-{run}-{next(_counter)}",
                model="gpt-4o",
                prompt_tokens=random.randint(500, 4500),
                cached_prompt_tokens=200,
                completion_tokens=random.randint(150, 2600),
                question_count=5,
                job_id=random.choice(jobs),
            ),
            company=company,
        )

    result = Result(
        "record_usage",
        "record_usage service, in-process, hot company",
        "(no target; per-event cost)",
        lower_bound_label="same 4 statements",
    )
    fill(result, timed(once, warmup=5, repeat=ctx.reps(200)))
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM billing_modelprice WHERE model = 'gpt-4o' ORDER BY effective_from DESC LIMIT 1")  # fmt: skip
        price = cursor.fetchone()[0]
    lower = timed(lambda: _lower_bound_once(company.pk, jobs[0], price), warmup=5, repeat=ctx.reps(200))  # fmt: skip
    flush = commit_ms(ctx.reps(200))
    result.lower_bound = sorted(lower)[len(lower) // 2] + flush
    result.notes.append(
        f"lower bound = the 4 statements rolled back + one measured commit ({flush:.2f} ms median)"
    )
    return result

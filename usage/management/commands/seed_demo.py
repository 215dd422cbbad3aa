"""`manage.py seed_demo`: a realistic, deterministic demo world.

Companies with external ids and time zones, dated prices for real models,
saved and draft jobs, months of usage recorded through the same service as
the API, drafts whose job was saved but never reconciled (the lost save call
the nightly cron exists for), credit purchases and grants, and two API keys
per company with spend limits that the usage is recorded under.

The history is booked as it happened: the ledger stamps each entry with the
clock when it is written (which is what puts it on a month's statement), so
the credits are posted, and each generation recorded, with the clock set to
their own moment. The demo's past months then close into statements as a
live system's would (bin/run runs close_statements after seeding).
"""

from __future__ import annotations

import random
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from unittest import mock

from django.core.management.base import CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from billing.api_keys import create_api_key
from billing.credits import grant_credits
from billing.models import APIKey, Company, LedgerEntry, ModelPrice
from ops.commands import LoggedCommand
from usage.events import UsageEvent
from usage.jobs import save_job
from usage.models import Job, QuestionGenerationUsage
from usage.recording import record_usage

COMPANIES = [
    ("Acme Recruiting", "org_acme", "America/New_York"),
    ("Globex Hiring", "org_globex", "Europe/London"),
    ("Initech Academy", "org_initech", "Asia/Kolkata"),
    ("Umbrella Exams", "org_umbrella", "Australia/Sydney"),
    ("Stark Talent", "org_stark", "America/Los_Angeles"),
    ("Wayne Learning", "org_wayne", "Europe/Berlin"),
    ("Hooli People", "org_hooli", "UTC"),
    ("Soylent Schools", "org_soylent", "America/Sao_Paulo"),
]
# (model, [(months ago it started, input, cached input, output) per million tokens])
PRICES = [
    ("gpt-4o", [(24, "5.00", "2.50", "15.00"), (6, "2.50", "1.25", "10.00")]),
    ("gpt-4o-mini", [(24, "0.15", "0.075", "0.60")]),
    ("claude-3-5-sonnet", [(24, "3.00", "0.30", "15.00")]),
    ("gemini-1.5-pro", [(24, "1.25", "0.3125", "5.00")]),
]
# Each company's integrations: (name, daily limit, monthly limit); every fifth
# generation comes through the second. Their secrets are never shown: the demo
# only records usage under them, as the API would.
DEMO_KEYS = [("Main product", None, "400"), ("Staging", "1.00", "10")]
JOB_TITLES = [
    "Senior Backend Engineer",
    "Data Analyst",
    "Nurse Practitioner",
    "Sales Lead",
    "Grade 10 Chemistry Exam",
    "Product Designer",
    "Site Reliability Engineer",
    "Customer Success Manager",
    "Algebra II Midterm",
    "Financial Controller",
]


class Command(LoggedCommand):
    help = "Create a realistic demo world (companies, prices, jobs, usage, credits). Deterministic with --seed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=42, help="Random seed (default 42).")
        parser.add_argument(
            "--companies",
            type=int,
            default=6,
            help=f"How many companies (1-{len(COMPANIES)}, default 6).",
        )
        parser.add_argument(
            "--usage-rows",
            type=int,
            default=3000,
            help="How many generations to record (default 3000).",
        )
        parser.add_argument("--months", type=int, default=4, help="Months of history (default 4).")
        parser.add_argument(
            "--if-empty", action="store_true", help="Do nothing when companies already exist."
        )

    def handle(self, *args, **options) -> None:
        if not 1 <= options["companies"] <= len(COMPANIES):
            raise CommandError(f"--companies must be between 1 and {len(COMPANIES)}")
        if options["usage_rows"] < 0:
            raise CommandError("--usage-rows must not be negative")
        if options["if_empty"] and Company.objects.exists():
            self.stdout.write("Database already has companies; --if-empty: nothing to do.")
            return
        rng = random.Random(options["seed"])
        # Anchored to today (UTC) so that the same --seed on the same day replays
        # the same events: a re-run records nothing twice and conflicts with nothing.
        now = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
        start = now - timedelta(days=30 * options["months"])
        with transaction.atomic(), _clock_at(start - timedelta(days=1)):
            _seed_prices(now)
            companies = _seed_companies(options["companies"], now)
        jobs = {c.pk: _seed_jobs(c, rng) for c in companies}
        keys = {c.pk: _demo_keys(c) for c in companies}
        recorded = self._seed_usage(companies, jobs, keys, rng, start, now, options["usage_rows"])
        lost = _save_some_drafts_without_reconciling(companies, rng)
        self.summary = {"companies": len(companies), "generations": recorded, "unreconciled": lost}
        self.stdout.write(
            self.style.SUCCESS(
                f"Seeded {len(companies)} companies, {sum(len(j) for j in jobs.values())} jobs, "
                f"{recorded} generations ({lost} drafts saved but not yet reconciled)."
            )
        )

    def _seed_usage(self, companies, jobs, keys, rng, start, now, rows: int) -> int:
        weights = [2 ** (len(companies) - i) for i in range(len(companies))]  # skewed tenants
        span = (now - start).total_seconds()
        tty = sys.stdout.isatty()
        events = []
        for n in range(rows):
            company = rng.choices(companies, weights)[0]
            occurred = start + timedelta(seconds=span * (rng.random() ** 0.7))
            event = _random_event(company, jobs[company.pk], rng, occurred, n)
            key = keys[company.pk][1 if n % 5 == 4 else 0]
            events.append((replace(event, api_key=key), company))
        # Recorded in the order they happened, each at its own moment.
        events.sort(key=lambda pair: pair[0].occurred_at)
        for n, (event, company) in enumerate(events):
            with _clock_at(event.occurred_at):
                record_usage(event, company=company, now=event.occurred_at)
            if tty and n % 200 == 0:
                self.stdout.write(f"\r  recording usage {n}/{rows}", ending="")
                self.stdout.flush()
        if tty:
            self.stdout.write(f"\r  recording usage {rows}/{rows}")
        return rows


@contextmanager
def _clock_at(moment: datetime) -> Iterator[None]:
    """Django's clock reads `moment` inside: the ledger and every auto_now_add stamp
    take their time from it, so demo history is booked in its own month."""
    with mock.patch.object(timezone, "now", lambda: moment):
        yield


def _seed_prices(now: datetime) -> None:
    for model, periods in PRICES:
        if ModelPrice.objects.filter(model=model).exists():
            continue
        starts = [now - timedelta(days=30 * months) for months, *_ in periods]
        for i, (_, inp, cached, out) in enumerate(periods):
            ModelPrice.objects.create(
                model=model,
                input_per_million=Decimal(inp),
                cached_input_per_million=Decimal(cached),
                output_per_million=Decimal(out),
                effective_from=starts[i],
                effective_to=starts[i + 1] if i + 1 < len(starts) else None,
            )


def _seed_companies(count: int, now: datetime) -> list[Company]:
    companies = []
    for i, (name, external_id, tz) in enumerate(COMPANIES[:count]):
        company, created = Company.objects.get_or_create(
            external_id=external_id,
            defaults={
                "name": name,
                "timezone": tz,
                "billing_emails": f"billing@{external_id.removeprefix('org_')}.example",
                "monthly_spend_limit": Decimal("500") if i % 3 == 0 else None,
                "low_balance_threshold": Decimal("25"),
            },
        )
        if created:
            _seed_credits(company, i, now)
            for name, daily, monthly in DEMO_KEYS:
                create_api_key(name=name, company=company, daily_limit=daily, monthly_limit=monthly)
        companies.append(company)
    return companies


def _demo_keys(company: Company) -> list[APIKey]:
    by_name = {k.name: k for k in APIKey.objects.filter(company=company)}
    return [by_name[name] for name, _, _ in DEMO_KEYS]


def _seed_credits(company: Company, i: int, now: datetime) -> None:
    grant_credits(
        company=company,
        kind=LedgerEntry.Kind.PURCHASE,
        amount=Decimal(200 + 150 * (i % 4)),
        idempotency_key="demo:purchase:1",
        reason="Annual plan: prepaid credits",
        actor_label="seed_demo",
    )
    grant_credits(
        company=company,
        kind=LedgerEntry.Kind.GRANT,
        amount=Decimal("50"),
        idempotency_key="demo:grant:welcome",
        reason="Welcome credit",
        actor_label="seed_demo",
        expires_at=now + timedelta(days=20 + 10 * i),
    )


DEMO_NAMESPACE = uuid.UUID("6f1c2a0e-4d7b-4c51-9a43-0c2f5b8e9d11")


def _seed_jobs(company: Company, rng: random.Random) -> list[Job]:
    count = rng.randint(6, 12)
    return [
        save_job(
            company=company,
            job_id=uuid.uuid5(DEMO_NAMESPACE, f"{company.external_id}/{n}"),
            title=rng.choice(JOB_TITLES),
            draft_job_id=f"draft-{company.external_id}-{n}",
        ).job
        for n in range(count)
    ]


def _random_event(
    company: Company, jobs: list[Job], rng: random.Random, occurred: datetime, n: int
) -> UsageEvent:
    model = rng.choices([p[0] for p in PRICES] + ["llama-3-70b"], [30, 40, 15, 10, 2])[0]
    prompt = rng.randint(800, 12000)
    if rng.random() < 0.12:  # generated while the job was still a draft
        job_id, draft = None, f"tmp-{company.external_id}-{rng.randint(1, 40)}"
    else:
        job_id, draft = str(rng.choice(jobs).pk), None
    return UsageEvent(
        company=str(company.pk),
        idempotency_key=f"demo-{n}",
        model=model,
        prompt_tokens=prompt,
        cached_prompt_tokens=rng.choice([0, 0, prompt // 4, prompt // 2]),
        completion_tokens=rng.randint(200, 4000),
        question_count=rng.randint(3, 25),
        job_id=job_id,
        draft_job_id=draft,
        occurred_at=occurred,
        metadata={"source": "seed_demo"},
        processing_time_ms=rng.randint(800, 25000),
    )


def _save_some_drafts_without_reconciling(companies: list[Company], rng: random.Random) -> int:
    """Simulate the lost save call: a job saved with a draft id, its usage left pending."""
    saved = 0
    for company in companies:
        drafts = list(
            QuestionGenerationUsage.objects.filter(company=company, job__isnull=True)
            .values_list("draft_job_id", flat=True)
            .distinct()
            .order_by("draft_job_id")
        )
        for draft in rng.sample(drafts, k=len(drafts) // 3):
            if not Job.objects.filter(company=company, draft_id=draft).exists():
                Job.objects.create(company=company, title=rng.choice(JOB_TITLES), draft_id=draft)
                saved += 1
    return saved

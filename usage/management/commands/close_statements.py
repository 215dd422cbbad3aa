"""`manage.py close_statements`: issue the monthly statement of every month that has ended (cron)."""

from __future__ import annotations

import json
from datetime import date, datetime

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from billing.companies import resolve_company
from billing.models import Company
from billing.money import plain
from core.errors import ServiceError
from ops.commands import LoggedCommand
from ops.leases import Lease, command_lease
from usage.statements import Closed, close_due_statements, companies_with_ledger, parse_month

LOCK_NAME = "usage.close_statements"


class Command(LoggedCommand):
    help = (
        "Issue the monthly statement of every company for every calendar month (in the "
        "company's time zone) that has ended and is not issued yet, oldest first, from the "
        "first month with ledger activity. Each statement is sealed with its content hash and "
        "never changes; what is booked later is on the next one. Safe to run twice and on "
        "several hosts at once (a lease row, and one statement per company and month in the "
        "database): a second concurrent run skips and exits 0."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--month",
            help="YYYY-MM: issue statements up to and including this month only (earlier "
            "months not issued yet first, since each opens with the previous closing).",
        )
        parser.add_argument(
            "--company", help="Only this company (UUID or external id, as other commands)."
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Build every due statement and report it; write nothing.",
        )
        parser.add_argument("--json", action="store_true", help="Print a JSON summary.")

    def handle(self, *args, **options) -> None:
        now = timezone.now()
        month = self._month(options["month"])
        companies = self._companies(options["company"])
        with command_lease(LOCK_NAME) as lease:
            if not lease.acquired:
                summary = {"skipped": f"another close_statements run holds the lease ({lease.describe()})"}  # fmt: skip
            else:
                summary = self._run(companies, now, month, lease, dry_run=options["dry_run"])
        self.summary = {k: v for k, v in summary.items() if k != "statements"}
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2))
        elif "skipped" in summary:
            self.stdout.write(self.style.WARNING(f"Skipped: {summary['skipped']}."))
        else:
            self._report(summary)

    def _month(self, text: str | None) -> date | None:
        if not text:
            return None
        try:
            return parse_month(text)
        except ValueError as exc:
            raise CommandError(f"--month: {exc}")

    def _companies(self, ref: str | None):
        if not ref:
            return None
        try:
            return [resolve_company(ref)]
        except ServiceError as exc:
            raise CommandError(exc.message)

    def _run(self, companies, now: datetime, month, lease: Lease, *, dry_run: bool) -> dict:
        issued, taken = [], []
        for company in companies if companies is not None else companies_with_ledger():
            lease.keep_alive()
            for closed in close_due_statements(
                company=company, now=now, through_month=month, dry_run=dry_run
            ):
                (issued if closed.statement else taken).append(closed)
        return {
            "dry_run": dry_run,
            "now": now.isoformat(),
            "through_month": f"{month:%Y-%m}" if month else None,
            "issued": len(issued),
            "closed_by_another_run": len(taken),
            "statements": [_row(c) for c in issued],
        }

    def _report(self, summary: dict) -> None:
        verb = "Would issue" if summary["dry_run"] else "Issued"
        for row in summary["statements"]:
            self.stdout.write(
                f"{row['company_name']} {row['month']}: opening {row['opening']}, "
                f"movements {row['movements']}, closing {row['closing']} "
                f"({row['entries']} entries)"
            )
        self.stdout.write(self.style.SUCCESS(f"{verb} {summary['issued']} statements."))


def _row(closed: Closed) -> dict:
    s = closed.statement
    company: Company = closed.company
    return {
        "company": str(company.pk),
        "company_name": company.name,
        "month": f"{s.month:%Y-%m}",
        "timezone": s.timezone,
        "opening": plain(s.opening),
        "movements": plain(s.movements),
        "closing": plain(s.closing),
        "entries": s.entry_count,
        "entries_through": s.entries_through,
        "content_hash": "" if closed.dry_run else s.content_hash,
    }

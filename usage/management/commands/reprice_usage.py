"""`manage.py reprice_usage`: price unpriced usage, or re-price after a price correction."""

from __future__ import annotations

import json

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError, transaction

from billing.money import plain
from core.dates import parse_instant
from core.errors import ServiceError
from core.locks import advisory_xact_lock
from ops.commands import LoggedCommand
from usage.pricing import LOCK_NAME, CompanyReprice, RepriceReport, reprice_usage


class Command(LoggedCommand):
    help = (
        "Price usage recorded without a price (with the price in effect when it occurred) and "
        "debit it; with --reprice-priced also re-price priced usage after a price correction, "
        "posting exactly the difference. Prints rows, old and new total per company and "
        "changes nothing unless --apply. Reported costs are never re-priced. Re-running "
        "changes nothing; a second concurrent run (another host, or through PgBouncer) skips "
        "and exits 0."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--model", help="Only usage of this model.")
        parser.add_argument(
            "--since",
            help="Only usage that occurred at or after this instant: YYYY-MM-DD (UTC midnight) "
            "or an ISO 8601 date-time with an offset.",
        )
        parser.add_argument(
            "--reprice-priced",
            action="store_true",
            help="Also re-price usage already priced (after correcting a price period).",
        )
        parser.add_argument(
            "--apply",
            action="store_true",
            help="Apply the changes and their credit postings, all in one transaction (all or "
            "nothing). Without it: a dry run.",
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options) -> None:
        try:
            since = parse_instant(options["since"]) if options["since"] else None
        except ValueError as exc:
            raise CommandError(f"--since: {exc}") from exc
        try:
            report = self._run(options, since)
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        except DatabaseError as exc:
            raise CommandError(f"reprice_usage failed, database error: {exc}") from exc
        self.summary = report.as_json()
        if options["json"]:
            self.stdout.write(json.dumps(report.as_json(), sort_keys=True))
        else:
            self._summary(report)

    def _run(self, options: dict, since) -> RepriceReport:
        # The run is one transaction (with --apply all or nothing), so a lock held by
        # that transaction covers exactly the work, directly or through PgBouncer.
        with transaction.atomic():
            if not advisory_xact_lock(LOCK_NAME):
                return RepriceReport(applied=False, skipped=True)
            return reprice_usage(
                model=options["model"],
                since=since,
                reprice_priced=options["reprice_priced"],
                apply=options["apply"],
                on_company=None if options["json"] else self._company_line,
            )

    def _company_line(self, c: CompanyReprice) -> None:
        self.stdout.write(
            f"{c.company_name} ({c.company_id}): {c.rows} rows ({c.newly_priced} newly priced, "
            f"{c.repriced} re-priced), old total {plain(c.old_total)}, new total "
            f"{plain(c.new_total)}; {c.still_unpriced} still without a price"
        )

    def _summary(self, report: RepriceReport) -> None:
        if report.skipped:
            self.stdout.write("reprice_usage: skipped, another run holds the lock.")
            return
        data = report.as_json()
        verb = "applied" if report.applied else "dry run, nothing changed; use --apply"
        self.stdout.write(
            f"reprice_usage ({verb}): {data['rows']} rows, old total {data['old_total']}, "
            f"new total {data['new_total']}; {data['still_unpriced']} still without a price."
        )

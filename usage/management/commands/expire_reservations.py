"""`manage.py expire_reservations`: mark holds past their expiry as expired (cron)."""

from __future__ import annotations

import json

from django.core.management.base import CommandParser

from ops.commands import LoggedCommand
from usage.reservations import expire_due


class Command(LoggedCommand):
    help = (
        "Mark open reservations (holds) whose expires_at has passed as expired. Every check "
        "already treats them as released; this closes them for the admin and the reports. "
        "Safe on several hosts at once and through PgBouncer: each batch is one conditional "
        "UPDATE (status = 'open' AND expires_at <= now, rows in use skipped), so a hold is "
        "marked once and a second run finds nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Show what would expire; write nothing."
        )
        parser.add_argument("--json", action="store_true", help="Print a JSON summary.")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=1000,
            help="Holds marked per transaction (default 1000).",
        )

    def handle(self, *args, **options) -> None:
        summary = expire_due(dry_run=options["dry_run"], batch=max(1, options["batch_size"]))
        self.summary = summary
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2))
            return
        verb = "Would expire" if options["dry_run"] else "Expired"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} {summary['holds']} holds, {summary['amount']} in total, "
                f"across {len(summary['companies'])} companies."
            )
        )

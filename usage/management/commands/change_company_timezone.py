"""`manage.py change_company_timezone COMPANY TZ`: change a time zone and re-bucket usage."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from billing.companies import resolve_company
from core.errors import ServiceError
from ops.commands import LoggedCommand
from usage.timezones import change_company_timezone


class Command(LoggedCommand):
    help = (
        "Change a company's time zone and move its recorded usage to the new local days "
        "(reports, month-to-date spend and monthly limits follow the company's zone). One "
        "transaction; safe to run again (a second run re-buckets stragglers only)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("company", help="Company UUID or external id.")
        parser.add_argument("timezone", help="IANA time zone, e.g. Europe/Berlin.")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Report how many rows would move; change nothing.",
        )

    def handle(self, *args, **options) -> None:
        try:
            company = resolve_company(options["company"])
            change = change_company_timezone(
                company=company,
                timezone_name=options["timezone"],
                actor_label="manage.py change_company_timezone",
                dry_run=options["dry_run"],
            )
        except (ServiceError, ValidationError) as exc:
            raise CommandError(getattr(exc, "message", None) or "; ".join(exc.messages))
        self.summary = {"old": change.old, "new": change.new, "moved_rows": change.moved_rows}
        verb = "Would move" if options["dry_run"] else "Moved"
        self.stdout.write(
            self.style.SUCCESS(
                f"{company.name}: {change.old} -> {change.new}. {verb} {change.moved_rows} "
                f"usage rows to their new local day; rollup rebuilt."
            )
        )

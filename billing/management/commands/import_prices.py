"""`manage.py import_prices`: load LiteLLM's model price table (no network)."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError
from django.utils import timezone

from billing.price_import import PriceImport, import_prices
from billing.price_table import load_table, read_table
from core.dates import parse_instant
from core.errors import ServiceError
from ops.commands import LoggedCommand


class Command(LoggedCommand):
    help = (
        "Load model prices from LiteLLM's model_prices_and_context_window.json as published "
        "(the litellm package ships a copy). Every dimension it states becomes a price period "
        "per model and service tier; a period opens only where a price changed (closing the "
        "previous one), so re-running changes nothing. Prints what is new, changed, unchanged "
        "and skipped, with the reason."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The JSON file (model_prices_and_context_window.json).")
        parser.add_argument(
            "--models",
            nargs="+",
            metavar="GLOB",
            help="Only entries whose key matches one of these shell patterns (e.g. 'gpt-4o*').",
        )
        parser.add_argument(
            "--provider", help="Only entries of this litellm_provider (e.g. anthropic)."
        )
        parser.add_argument(
            "--effective-from",
            help="When new and changed prices start: YYYY-MM-DD (UTC midnight) or an ISO 8601 "
            "date-time with an offset (default: now).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would change; change nothing."
        )
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args, **options) -> None:
        try:
            start = (
                parse_instant(options["effective_from"])
                if options["effective_from"]
                else timezone.now()
            )
        except ValueError as exc:
            raise CommandError(f"--effective-from: {exc}") from exc
        try:
            table = load_table(Path(options["path"]))
        except (OSError, ValueError) as exc:
            raise CommandError(f"{options['path']}: {exc}") from exc
        reading = read_table(table, models=options["models"], provider=options["provider"])
        try:
            report = import_prices(reading, effective_from=start, dry_run=options["dry_run"])
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        except DatabaseError as exc:
            raise CommandError(f"import_prices failed, database error: {exc}") from exc
        self.summary = {k: v for k, v in report.as_json().items() if not isinstance(v, list)}
        if options["json"]:
            self.stdout.write(json.dumps(report.as_json(), sort_keys=True))
        else:
            self._print(report)

    def _print(self, report: PriceImport) -> None:
        for item in report.new:
            self.stdout.write(f"new        {_name(item)}: {_rates(item['rates'])}")
        for item in report.changed:
            self.stdout.write(
                f"changed    {_name(item)}: {_rates(item['was'])} -> {_rates(item['rates'])}"
            )
        for item in report.skipped:
            self.stdout.write(f"skipped    {_name(item)}: {item['reason']}")
        for item in report.leftovers:
            self.stdout.write(
                f"float      {item['model']} {item['key']} = {item['published']} "
                f"read as {item['per_million']} per million"
            )
        verb = "would change (dry run, nothing changed)" if report.dry_run else "changed"
        self.stdout.write(
            self.style.SUCCESS(
                f"import_prices {verb}: {len(report.new)} new, {len(report.changed)} changed, "
                f"{report.unchanged} unchanged, {len(report.skipped)} skipped of "
                f"{report.entries} entries; {len(report.leftovers)} float leftovers recognised; "
                f"{sum(report.ignored_keys.values())} cost keys no dimension holds "
                f"({len(report.ignored_keys)} kinds: --json lists them)."
            )
        )


def _name(item: dict) -> str:
    tier = item.get("service_tier")
    return f"{item['model']} ({tier})" if tier else item["model"]


def _rates(rates: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in rates.items())

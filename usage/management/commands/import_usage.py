"""`manage.py import_usage PATH`: bring in usage exported from an existing system."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from django.core.management.base import CommandError, CommandParser

from ops.commands import LoggedCommand
from usage.importer import ImportFileError, ImportOptions, ImportSummary, import_usage

# Two recording processes: on the 2 cores the product is sized for they beat one
# and three (docs/performance.md, "Import workers").
DEFAULT_WORKERS = 2


class Command(LoggedCommand):
    help = (
        "Import usage from a CSV or JSON Lines file through the same recording service as "
        "the API. Re-running never double counts (the row id is the idempotency key). Rows "
        "that cannot be imported go to a reject file with line number and reason; exit 1 "
        "when any row was rejected. See docs/operations.md for the column mapping."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The CSV or JSON Lines file.")
        parser.add_argument(
            "--format", choices=["csv", "jsonl"], help="File format (default: detect)."
        )
        parser.add_argument(
            "--no-debit",
            action="store_true",
            help="Do not debit credits (history that was already paid for).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Validate every row and report; write nothing to the database.",
        )
        parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")
        parser.add_argument(
            "--rejects", help="Where to write rejected rows (default: PATH.rejects.csv|jsonl)."
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=ImportOptions.batch_size,
            help=f"Rows recorded per batch (default {ImportOptions.batch_size}).",
        )
        parser.add_argument(
            "--assume-tz",
            help="Time zone for timestamps without an offset (default: reject such rows).",
        )
        parser.add_argument("--encoding", help="File encoding (default: detect).")
        parser.add_argument(
            "--workers",
            type=int,
            default=DEFAULT_WORKERS,
            help=(
                f"Processes recording at once on PostgreSQL (default {DEFAULT_WORKERS}; "
                "1 records in this process). Rows with the same id always go to the same one."
            ),
        )

    def handle(self, *args, **options) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1")
        import_options = ImportOptions(
            format=options["format"],
            debit=not options["no_debit"],
            dry_run=options["dry_run"],
            batch_size=options["batch_size"],
            rejects_path=Path(options["rejects"]) if options["rejects"] else None,
            assume_tz=options["assume_tz"],
            encoding=options["encoding"],
            workers=options["workers"],
        )
        tty = sys.stderr.isatty() and not options["json"]
        try:
            summary = import_usage(
                Path(options["path"]), import_options, progress=self._progress if tty else None
            )
        except ImportFileError as exc:
            raise CommandError(str(exc))
        if tty:
            self.stderr.write("")
        self.summary = summary.as_dict()  # read by the command-run log line
        self._report(summary, as_json=options["json"])
        if summary.rejected:
            raise CommandError(
                f"{summary.rejected} row(s) rejected; see {summary.rejects_path}", returncode=1
            )

    def _progress(self, summary: ImportSummary) -> None:
        self.stderr.write(
            f"\r  {summary.rows} rows: {summary.imported} imported, "
            f"{summary.replayed} replayed, {summary.rejected} rejected",
            ending="",
        )
        self.stderr.flush()

    def _report(self, summary: ImportSummary, *, as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(summary.as_dict(), indent=2))
            return
        for warning in summary.warnings:
            self.stdout.write(self.style.WARNING(f"warning: {warning}"))
        if summary.ignored_columns:
            ignored = ", ".join(summary.ignored_columns)
            self.stdout.write(self.style.WARNING(f"ignored columns: {ignored}"))
        verb = "would import" if summary.dry_run else "imported"
        self.stdout.write(
            f"{summary.rows} rows ({summary.format}, {summary.encoding}): {verb} "
            f"{summary.imported}, replayed {summary.replayed}, rejected {summary.rejected}; "
            f"total cost {summary.total_cost} ({summary.unpriced} unpriced); "
            f"{'debited' if summary.debit else 'not debited (--no-debit)'}"
            f"{' [dry run: nothing written]' if summary.dry_run else ''}"
        )
        if summary.rejects_path:
            self.stdout.write(f"rejected rows: {summary.rejects_path}")

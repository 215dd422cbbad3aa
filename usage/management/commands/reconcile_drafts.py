"""`manage.py reconcile_drafts`: the nightly cron that links draft usage missed at save time."""

from __future__ import annotations

import json

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError

from billing.companies import resolve_company
from billing.money import plain
from core.errors import ServiceError
from ops.commands import LoggedCommand
from ops.leases import Lease, command_lease
from usage.reconcile import DEFAULT_BATCH_SIZE, LOCK_NAME, ReconcileReport, reconcile_drafts


class Command(LoggedCommand):
    help = (
        "Link every pending draft usage row whose draft id now belongs to a saved job of the "
        "same company, and mark drafts idle for --abandon-after-days as abandoned (still "
        "billed, still linkable). Set-based, in short keyset batches; a second concurrent "
        "run (another host, or through PgBouncer) skips and exits 0."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Report exactly what would change, and change nothing.",
        )
        parser.add_argument("--company", help="Only this company (its UUID or external id).")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=(
                f"Largest batch in pending rows (default {DEFAULT_BATCH_SIZE}); batches are "
                "sized to take about 50 ms each at the pace just measured, each one short transaction."
            ),
        )
        parser.add_argument(
            "--abandon-after-days",
            type=int,
            default=None,
            help="Abandon drafts with no pending usage newer than this many days "
            f"(default: DRAFT_ABANDON_AFTER_DAYS = {settings.DRAFT_ABANDON_AFTER_DAYS}).",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print one JSON object (for cron and monitoring)."
        )

    def handle(self, *args, **options) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        if options["abandon_after_days"] is not None and options["abandon_after_days"] < 0:
            raise CommandError("--abandon-after-days must not be negative.")
        try:
            report, held_by = self._run(options)
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            raise CommandError(f"reconcile_drafts failed, database error: {exc}".strip()) from exc
        except Exception as exc:  # cron reads one clear line; batches done so far stay done
            raise CommandError(f"reconcile_drafts failed: {type(exc).__name__}: {exc}") from exc
        self.summary = report.as_json() | ({"held_by": held_by} if held_by else {})
        self._print(report, held_by, as_json=options["json"])

    def _run(self, options: dict) -> tuple[ReconcileReport, str]:
        """The report, and who holds the lease when this run skipped."""
        with command_lease(LOCK_NAME) as lease:
            if not lease.acquired:
                return ReconcileReport(dry_run=options["dry_run"], skipped=True), lease.describe()
            company = resolve_company(options["company"]) if options["company"] else None
            show = self.stdout.isatty() and not options["json"]
            report = reconcile_drafts(
                company=company,
                batch_size=options["batch_size"],
                abandon_after_days=options["abandon_after_days"],
                dry_run=options["dry_run"],
                on_batch=lambda report: self._after_batch(report, lease, show=show),
            )
            return report, ""

    def _after_batch(self, report: ReconcileReport, lease: Lease, *, show: bool) -> None:
        lease.keep_alive()
        if show:
            self._progress(report)

    def _progress(self, report: ReconcileReport) -> None:
        self.stdout.write(
            f"\rbatch {report.batches}: {report.scanned_rows} scanned, "
            f"{report.reconciled_rows} linked, {report.abandoned_rows} abandoned",
            ending="",
        )
        self.stdout.flush()

    def _print(self, report: ReconcileReport, held_by: str, *, as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(self.summary, sort_keys=True))
            return
        if report.batches and self.stdout.isatty():
            self.stdout.write("")
        if report.skipped:
            self.stdout.write(
                f"reconcile_drafts: skipped, another run holds the lease ({held_by})."
            )
            return
        prefix = (
            "reconcile_drafts (dry run, nothing changed)" if report.dry_run else "reconcile_drafts"
        )
        self.stdout.write(
            f"{prefix}: {report.reconciled_rows} rows of {report.reconciled_drafts} drafts "
            f"reconciled ({plain(report.reconciled_cost)}); {report.abandoned_rows} rows of "
            f"{report.abandoned_drafts} drafts newly abandoned ({plain(report.abandoned_cost)}); "
            f"{report.pending_rows} rows of {report.pending_drafts} drafts still pending "
            f"({plain(report.pending_cost)}); {report.duration_seconds:.2f}s"
        )

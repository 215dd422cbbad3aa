"""`manage.py expire_credits`: write off the unconsumed remainder of expired credit (cron)."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal

from django.core.management.base import CommandParser
from django.utils import timezone

from billing.credits import due_lots, expire_lot
from billing.money import plain
from ops.commands import LoggedCommand
from ops.leases import Lease, command_lease

LOCK_NAME = "billing.expire_credits"


class Command(LoggedCommand):
    help = (
        "Write off what is left of credit whose expiry has passed: one expiry entry per credit "
        "lot (idempotency key expiry:<lot>). Idempotent and safe when cron runs it on several "
        "hosts at once, directly or through PgBouncer (a lease row plus per-lot idempotency "
        "keys and row locks): a second concurrent run skips and exits 0."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Show what would expire; write nothing."
        )
        parser.add_argument("--json", action="store_true", help="Print a JSON summary.")

    def handle(self, *args, **options) -> None:
        now = timezone.now()
        with command_lease(LOCK_NAME) as lease:
            if not lease.acquired:
                summary = {"skipped": f"another expire_credits run holds the lease ({lease.describe()})"}  # fmt: skip
            else:
                summary = self._run(now, lease, dry_run=options["dry_run"])
        self.summary = summary
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2))
        elif "skipped" in summary:
            self.stdout.write(self.style.WARNING(f"Skipped: {summary['skipped']}."))
        else:
            verb = "Would expire" if options["dry_run"] else "Expired"
            self.stdout.write(
                self.style.SUCCESS(
                    f"{verb} {summary['lots']} lots, {summary['amount']} in total, "
                    f"across {len(summary['companies'])} companies."
                )
            )

    def _run(self, now, lease: Lease, *, dry_run: bool) -> dict:
        per_company: dict[str, Decimal] = defaultdict(Decimal)
        lots = 0
        for lot_id, company_id, remaining in _due_in_batches(now):
            lease.keep_alive()
            if dry_run:
                amount = remaining
            else:
                expiry = expire_lot(lot_id=lot_id, now=now)
                if expiry is None:  # emptied meanwhile (another host, a consumption)
                    continue
                amount = expiry.amount
            per_company[str(company_id)] += amount
            lots += 1
        return {
            "dry_run": dry_run,
            "now": now.isoformat(),
            "lots": lots,
            "amount": plain(sum(per_company.values(), Decimal(0))),
            "companies": {c: plain(a) for c, a in sorted(per_company.items())},
        }


def _due_in_batches(now, size: int = 500):
    """Keyset batches over the due lots, so memory stays flat whatever their number."""
    last = 0
    while True:
        batch = list(
            due_lots(now=now)
            .filter(pk__gt=last)
            .order_by("pk")
            .values_list("pk", "company_id", "remaining")[:size]
        )
        yield from batch
        if len(batch) < size:
            return
        last = batch[-1][0]

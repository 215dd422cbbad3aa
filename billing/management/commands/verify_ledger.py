"""`manage.py verify_ledger`: check every ledger invariant, exit 1 naming what fails."""

from __future__ import annotations

import json
import uuid

from django.core.management.base import CommandError, CommandParser

from billing.companies import resolve_company
from billing.invariants import CHECKS, check_ledger
from billing.models import Company
from core.errors import ServiceError
from ops.commands import LoggedCommand


class Command(LoggedCommand):
    help = (
        "Check the credit ledger's invariants set-based in SQL: balance == sum(ledger) and the "
        "running balance; every priced usage row debited exactly once for exactly its cost "
        "(usage + corrections), unpriced rows not at all; credit lots match their postings, "
        "no credit consumed twice or after it expired, expired + consumed <= granted; the daily "
        "usage rollup equals the raw rows; every issued monthly statement still has its content "
        "hash, closes at opening + movements with lines that add up, opens where the previous "
        "one closed, and equals the ledger entries it covers. Exits 1 naming each company and invariant that fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--company", help="Only this company (UUID or external id).")
        parser.add_argument("--json", action="store_true", help="Print a JSON summary.")

    def handle(self, *args, **options) -> None:
        company_id = None
        if options["company"]:
            try:
                company_id = resolve_company(options["company"]).pk
            except ServiceError as exc:
                raise CommandError(exc.message)
        try:
            failures = check_ledger(company_id=company_id)
        except NotImplementedError as exc:
            raise CommandError(str(exc))
        names = dict(
            Company.objects.filter(pk__in={f.company_id for f in failures}).values_list(
                "pk", "name"
            )
        )
        summary = {
            "ok": not failures,
            "checks": list(CHECKS),
            "failures": [
                {**f.__dict__, "company": names.get(uuid.UUID(f.company_id), "")} for f in failures
            ],
        }
        self.summary = summary
        if options["json"]:
            self.stdout.write(json.dumps(summary, indent=2))
        else:
            for f in failures:
                name = names.get(uuid.UUID(f.company_id), "?")
                self.stdout.write(
                    self.style.ERROR(f"{name} ({f.company_id}): {f.invariant}: {f.detail}")
                )
            if not failures:
                self.stdout.write(self.style.SUCCESS(f"All {len(CHECKS)} invariants hold."))
        if failures:
            companies = len({f.company_id for f in failures})
            raise CommandError(f"{len(failures)} invariant failures in {companies} companies.")

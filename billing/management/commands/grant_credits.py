"""`manage.py grant_credits`: add paid or promotional credit to a company."""

from __future__ import annotations

import hashlib
from datetime import datetime, time

from django.core.management.base import CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from billing.companies import resolve_company
from billing.credits import grant_credits
from billing.money import AmountError, format_money, quantize_amount
from core.errors import ServiceError
from ops.commands import LoggedCommand


def parse_expiry(text: str, tz) -> datetime:
    """A date (its midnight in the company's time zone) or an ISO datetime."""
    moment = parse_datetime(text)
    if moment is None:
        day = parse_date(text)
        if day is None:
            raise CommandError(f"--expires-at {text!r} is not a date (YYYY-MM-DD) or datetime.")
        moment = datetime.combine(day, time.min)
    return timezone.make_aware(moment, tz) if timezone.is_naive(moment) else moment


def _derived_key(company, options: dict, expires_at) -> str:
    """The same grant typed twice is one grant: key it on what it says."""
    try:
        amount = str(quantize_amount(options["amount"]))  # "500" and "500.00" are one grant
    except AmountError:
        amount = options["amount"]  # refused by grant_credits with a clear message
    what = "|".join(
        [str(company.pk), options["kind"], amount, options["reason"].strip(), str(expires_at)]
    )
    return f"grant_credits:{hashlib.sha256(what.encode()).hexdigest()[:32]}"


class Command(LoggedCommand):
    help = (
        "Add credit to a company: --kind purchase (paid) or grant (promotional), with a reason, "
        "optionally expiring. Safe to re-run: without --idempotency-key the key is derived "
        "from the company, kind, amount, reason and expiry, so running the same command "
        "again (a retry after a lost connection, a shell history accident) posts nothing "
        "new; give a distinct --idempotency-key (or reason) for a second, identical grant."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("company", help="Company UUID or external id.")
        parser.add_argument("amount", help="Amount in the company's currency, e.g. 250.00.")
        parser.add_argument(
            "--kind", choices=["purchase", "grant"], required=True, help="purchase or grant."
        )
        parser.add_argument("--reason", required=True, help="Why (kept on the ledger entry).")
        parser.add_argument(
            "--expires-at",
            help="When the credit expires: YYYY-MM-DD (midnight, company time zone) or ISO datetime.",
        )
        parser.add_argument(
            "--idempotency-key",
            help="Replaying the same key posts nothing new. Default: derived from the "
            "company, kind, amount, reason and expiry.",
        )

    def handle(self, *args, **options) -> None:
        try:
            company = resolve_company(options["company"])
            expires_at = (
                parse_expiry(options["expires_at"], company.tz) if options["expires_at"] else None
            )
            posting = grant_credits(
                company=company,
                amount=options["amount"],
                kind=options["kind"],
                reason=options["reason"],
                actor_label="manage.py grant_credits",
                expires_at=expires_at,
                idempotency_key=options["idempotency_key"]
                or _derived_key(company, options, expires_at),
            )
        except ServiceError as exc:
            raise CommandError(exc.message)
        entry = posting.entry
        verb = "Posted" if posting.created else "Already posted (replay)"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb}: {entry.kind} of {format_money(entry.amount, company.currency)} to "
                f"{company.name} (entry {entry.pk}); balance "
                f"{format_money(entry.balance_after, company.currency)}."
            )
        )

"""Create an API key; the secret is printed once, alone on the last line."""

from __future__ import annotations

from django.core.management.base import CommandError

from billing.api_keys import create_api_key
from billing.companies import resolve_company
from core.errors import ServiceError
from ops.commands import LoggedCommand


class Command(LoggedCommand):
    help = (
        "Create an API key (platform-wide, or for one company with --company). "
        "The secret is shown once, alone on the last line of the output; only its hash is stored."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="What the key is for, e.g. 'main product (prod)'.")
        parser.add_argument(
            "--company",
            help="Company UUID or external id; the key may then act only for that company.",
        )
        parser.add_argument(
            "--daily-limit",
            help="Cap on the key's spend per day in the company's time zone, e.g. 25 "
            "(company keys only; default: no limit).",
        )
        parser.add_argument(
            "--monthly-limit",
            help="Cap on the key's spend per month in the company's time zone, e.g. 500 "
            "(company keys only; default: no limit).",
        )

    def handle(self, *args, name: str, company: str | None, **options) -> None:
        try:
            target = resolve_company(company) if company else None
            key, secret = create_api_key(
                name=name,
                company=target,
                daily_limit=options["daily_limit"],
                monthly_limit=options["monthly_limit"],
            )
        except ServiceError as exc:
            raise CommandError(exc.message)
        scope = f"company {target.name} ({target.pk})" if target else "platform-wide"
        self.stdout.write(
            f"Created API key {key.prefix!r} ({name}), {scope}. Store the secret now:"
        )
        self.stdout.write(secret)

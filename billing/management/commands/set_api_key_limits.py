"""Change an API key's daily and monthly spend limits."""

from __future__ import annotations

from django.core.management.base import CommandError

from billing.api_keys import set_api_key_limits
from billing.money import plain
from core.errors import ServiceError
from ops.commands import LoggedCommand


class Command(LoggedCommand):
    help = (
        "Set or remove an API key's daily and monthly spend limits (counted in its company's "
        "time zone). An option left out keeps its limit; 'none' removes it. Safe to run twice."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("prefix", help="The key's prefix, as listed in the admin.")
        parser.add_argument(
            "--daily-limit", help="New cap on the key's spend per day, e.g. 25; 'none': no cap."
        )
        parser.add_argument(
            "--monthly-limit",
            help="New cap on the key's spend per month, e.g. 500; 'none': no cap.",
        )

    def handle(self, *args, prefix: str, **options) -> None:
        changes = {
            name: None if value.strip().lower() == "none" else value
            for name in ("daily_limit", "monthly_limit")
            if (value := options[name]) is not None
        }
        if not changes:
            raise CommandError("Give --daily-limit and/or --monthly-limit.")
        try:
            key = set_api_key_limits(
                prefix=prefix, actor_label="manage.py set_api_key_limits", **changes
            )
        except ServiceError as exc:
            raise CommandError(exc.message)
        shown = lambda v: plain(v) if v is not None else "none"  # noqa: E731
        self.stdout.write(
            self.style.SUCCESS(
                f"API key {key.prefix!r} ({key.name}): daily limit {shown(key.daily_limit)}, "
                f"monthly limit {shown(key.monthly_limit)}."
            )
        )

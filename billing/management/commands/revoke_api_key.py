"""Revoke an API key by its prefix (the part after `qg_` in the secret)."""

from __future__ import annotations

from django.core.management.base import CommandError

from billing.api_keys import revoke_api_key
from core.errors import ServiceError
from ops.commands import LoggedCommand


class Command(LoggedCommand):
    help = "Revoke an API key: requests with it get 401 from now on. Safe to run twice."

    def add_arguments(self, parser) -> None:
        parser.add_argument("prefix", help="The key's prefix, as listed in the admin.")

    def handle(self, *args, prefix: str, **options) -> None:
        try:
            key, revoked_now = revoke_api_key(prefix=prefix, actor_label="manage.py revoke_api_key")
        except ServiceError as exc:
            raise CommandError(exc.message)
        if revoked_now:
            self.stdout.write(self.style.SUCCESS(f"Revoked API key {key.prefix!r} ({key.name})."))
        else:
            self.stdout.write(f"API key {key.prefix!r} was already revoked at {key.revoked_at}.")

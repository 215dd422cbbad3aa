"""`manage.py ensure_admin`: make sure a staff superuser exists (for bin/run)."""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import CommandParser

from ops.commands import LoggedCommand


class Command(LoggedCommand):
    help = (
        "Create the admin superuser if it does not exist. The password comes from "
        "ADMIN_PASSWORD, or is generated and printed once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin", help="Username (default admin).")

    def handle(self, *args, **options) -> None:
        user_model = get_user_model()
        username = options["username"]
        if user_model.objects.filter(username=username).exists():
            self.stdout.write(f"Admin user {username!r} exists; log in at /admin/.")
            return
        password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        user_model.objects.create_superuser(username=username, email="", password=password)
        shown = "from ADMIN_PASSWORD" if os.environ.get("ADMIN_PASSWORD") else password
        self.stdout.write(self.style.SUCCESS(f"Created admin {username!r}, password: {shown}"))

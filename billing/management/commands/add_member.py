"""`manage.py add_member COMPANY USERNAME`: let a user see one company's billing page."""

from __future__ import annotations

import json

from django.core.management.base import CommandError, CommandParser
from django.db import transaction

from billing.companies import resolve_company
from billing.members import add_member
from billing.models import Membership
from core.errors import ServiceError
from ops.commands import LoggedCommand


class Command(LoggedCommand):
    help = (
        "Make USERNAME an admin or viewer of COMPANY (UUID or external id), creating "
        "the user if needed. Members log in at /accounts/login/ and see only their "
        "company's billing page. Safe to run twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("company", help="The company's UUID or external id.")
        parser.add_argument("username", help="The user's username (created if missing).")
        parser.add_argument(
            "--role",
            choices=Membership.Role.values,
            default=Membership.Role.ADMIN,
            help="admin (default) or viewer.",
        )
        parser.add_argument(
            "--password",
            help="Password for a user created now (existing users keep theirs). "
            "Without it a new user gets no usable password until one is set.",
        )
        parser.add_argument("--email", default="", help="E-mail address for a new user.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Show what would happen, change nothing."
        )
        parser.add_argument("--json", action="store_true", help="Print a JSON summary.")

    def handle(self, *args, **options) -> None:
        try:
            company = resolve_company(options["company"])
            with transaction.atomic():
                result = add_member(
                    company=company,
                    username=options["username"],
                    role=options["role"],
                    password=options["password"],
                    email=options["email"],
                    actor_label="manage.py add_member",
                )
                if options["dry_run"]:
                    transaction.set_rollback(True)
        except ServiceError as exc:
            raise CommandError(exc.message)
        summary = {
            "company": str(company.pk),
            "username": options["username"],
            "role": result.membership.role if not options["dry_run"] else options["role"],
            "user_created": result.user_created,
            "membership_created": result.created,
            "role_changed": result.role_changed,
            "dry_run": options["dry_run"],
        }
        if options["json"]:
            self.stdout.write(json.dumps(summary))
            return
        verb = "Would add" if options["dry_run"] else "Added"
        if not (result.created or result.role_changed):
            verb = "Already a member:"
        self.stdout.write(
            self.style.SUCCESS(f"{verb} {options['username']} as {options['role']} of {company}.")
        )

"""`manage.py schema_doctor`: does the live database match the models and migrations?"""

from __future__ import annotations

import json

from django.core.management.base import CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from ops.commands import LoggedCommand
from ops.doctor import diagnose


class Command(LoggedCommand):
    help = (
        "Compare the live database with the models and migrations and explain every "
        "difference (what is wrong, why it matters, the fix). Exit 1 when anything differs."
    )
    requires_system_checks: list[str] = []  # the doctor is the check; run it even on drift

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print findings as JSON.")
        parser.add_argument(
            "--database", default=DEFAULT_DB_ALIAS, help="Database alias (default 'default')."
        )

    def handle(self, *args, **options) -> None:
        findings = diagnose(options["database"])
        self.summary = {"findings": len(findings), "codes": sorted({f.code for f in findings})}
        if options["json"]:
            payload = {"ok": not findings, "findings": [f.as_dict() for f in findings]}
            self.stdout.write(json.dumps(payload, indent=2))
        else:
            self._print(findings)
        if findings:
            raise CommandError(f"{len(findings)} difference(s) found", returncode=1)

    def _print(self, findings) -> None:
        if not findings:
            self.stdout.write(self.style.SUCCESS("The database matches the models and migrations."))
            return
        for n, f in enumerate(findings, 1):
            style = self.style.ERROR if f.severity == "error" else self.style.WARNING
            self.stdout.write(style(f"{n}. [{f.code}] {f.problem}"))
            self.stdout.write(f"   Why it matters: {f.impact}")
            self.stdout.write(f"   Fix: {f.fix}")
            for statement in f.sql:
                self.stdout.write("     " + statement.replace("\n", "\n     "))

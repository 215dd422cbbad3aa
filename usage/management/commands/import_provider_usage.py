"""`manage.py import_provider_usage`: store saved pages of a provider's usage and cost APIs."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError

from core.errors import ServiceError
from ops.commands import LoggedCommand
from usage.models import Provider, ProviderBucket
from usage.provider_usage import ImportSummary, import_provider_usage, parse_project_map


class Command(LoggedCommand):
    help = (
        "Import saved pages of a provider's admin API (OpenAI: /v1/organization/usage/completions "
        "and /v1/organization/costs; Anthropic: /v1/organizations/usage_report/messages and "
        "/v1/organizations/cost_report), as returned, daily buckets (bucket_width=1d) grouped by "
        "model. A day already imported with the same figures is left alone; with other figures "
        "it is replaced (the old bucket is kept, superseded). All or nothing; no network."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "paths",
            nargs="+",
            metavar="PATH",
            help="Saved pages: a JSON file per page, JSON Lines (a page per line), or a folder "
            "of *.json / *.jsonl files (read in name order). Later files win for the same day.",
        )
        parser.add_argument(
            "--provider",
            required=True,
            choices=Provider.values,
            help="Whose admin API the pages come from.",
        )
        parser.add_argument(
            "--report",
            choices=ProviderBucket.Report.values,
            help="Which report the pages are (default: told by their results; needed only for "
            "a page whose every day is empty).",
        )
        parser.add_argument(
            "--project-map",
            metavar="FILE",
            help='JSON {"ours": [ids], "exclude": [ids], "unlisted": "ours"|"exclude"}: which '
            "projects (OpenAI), workspaces (Anthropic) and API keys are this product's. Stored "
            "and used by every comparison from now on; without it the stored map (or, if none, "
            "everything counts as ours) applies.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Read and check everything, report what would be stored, store nothing.",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print one JSON object (for cron and monitoring)."
        )

    def handle(self, *args, **options) -> None:
        paths = self._files(options["paths"])
        project_map, source = self._project_map(options["project_map"])
        try:
            summary = import_provider_usage(
                paths=paths,
                provider=options["provider"],
                report=options["report"],
                project_map=project_map,
                project_map_source=source,
                dry_run=options["dry_run"],
                actor_label="manage.py import_provider_usage",
            )
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        except DatabaseError as exc:
            raise CommandError(f"import_provider_usage failed, database error: {exc}") from exc
        # The log line keeps the counts (per-project token figures stay in the output).
        self.summary = {k: v for k, v in summary.as_json().items() if k != "projects"}
        self._print(summary, as_json=options["json"])

    def _files(self, names: list[str]) -> list[Path]:
        files: list[Path] = []
        for name in names:
            path = Path(name)
            if path.is_dir():
                found = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl"))
                if not found:
                    raise CommandError(f"{path}: no *.json or *.jsonl files in this folder")
                files.extend(found)
            elif path.is_file():
                files.append(path)
            else:
                raise CommandError(f"{path}: no such file or folder")
        return files

    def _project_map(self, name: str | None):
        if not name:
            return None, ""
        try:
            text = Path(name).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise CommandError(f"--project-map {name}: {exc}") from exc
        try:
            return parse_project_map(text, source=name), name
        except ServiceError as exc:
            raise CommandError(exc.message) from exc

    def _print(self, summary: ImportSummary, *, as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(summary.as_json(), sort_keys=True))
            return
        prefix = "import_provider_usage"
        if summary.dry_run:
            prefix += " (dry run, nothing stored)"
        span = f"{summary.first_day}..{summary.last_day}" if summary.first_day else "no days"
        replaced = ", ".join(f"{r['report']} {r['day']}" for r in summary.replaced_days)
        self.stdout.write(
            f"{prefix}: {summary.provider}, {summary.files} files, {summary.buckets} daily buckets "
            f"({summary.usage_buckets} usage, {summary.cost_buckets} cost), {span}: "
            f"{summary.new} new, {summary.unchanged} unchanged, {summary.replaced} replaced"
            + (f" ({replaced})" if replaced else "")
            + (f"; models: {', '.join(summary.models)}" if summary.models else "")
        )
        if summary.project_map_updated:
            self.stdout.write("project map stored; it applies to every comparison from now on")
        for project, tokens in sorted(summary.projects.items()):
            self.stdout.write(
                f"  {project}: {tokens['ours_tokens']:,} tokens ours, "
                f"{tokens['excluded_tokens']:,} excluded"
            )

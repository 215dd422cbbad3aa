"""`manage.py reconcile_provider`: the cron that compares our usage with the provider's books."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal, InvalidOperation

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError

from billing.money import format_money
from ops.commands import LoggedCommand
from usage.models import Provider
from usage.provider_reconciliation import (
    DEFAULT_DAYS,
    MATCHES,
    STATUS_LABELS,
    Report,
    Tolerance,
    default_range,
    providers_with_data,
    reconcile_provider,
)


class Command(LoggedCommand):
    help = (
        "Compare, per UTC day and model, the provider's imported usage (import_provider_usage) "
        "with the usage we recorded across all companies. Exit status 1 when a day and model "
        "differs by more than the tolerance, or a day in the range has no provider data. "
        "Read-only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--provider",
            choices=Provider.values,
            help="Only this provider (default: every provider with imported data).",
        )
        parser.add_argument(
            "--since",
            help=f"First UTC day, YYYY-MM-DD (default: {DEFAULT_DAYS} days before --until, or "
            "the first day imported if later).",
        )
        parser.add_argument(
            "--until", help="Last UTC day, inclusive, YYYY-MM-DD (default: yesterday, UTC)."
        )
        parser.add_argument(
            "--token-tolerance",
            type=int,
            help="Tokens a dimension may differ by per day and model "
            "(default: PROVIDER_RECONCILE_TOKEN_TOLERANCE, 0).",
        )
        parser.add_argument(
            "--token-tolerance-percent",
            help="Or this percent of the provider's figure, whichever is larger "
            "(default: PROVIDER_RECONCILE_TOKEN_TOLERANCE_PERCENT, 0).",
        )
        parser.add_argument(
            "--cost-tolerance",
            help="USD the cost may differ by per day and model; without it (and without "
            "PROVIDER_RECONCILE_COST_TOLERANCE) the cost is shown but not judged.",
        )
        parser.add_argument(
            "--json", action="store_true", help="Print one JSON object (for cron and monitoring)."
        )

    def handle(self, *args, **options) -> None:
        tolerance = self._tolerance(options)
        providers = [options["provider"]] if options["provider"] else providers_with_data()
        if not providers:
            raise CommandError("No provider usage imported yet (manage.py import_provider_usage).")
        try:
            reports = [self._report(p, options, tolerance) for p in providers]
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            raise CommandError(f"reconcile_provider failed, database error: {exc}") from exc
        result = {
            "status": "ok" if all(r.ok for r in reports) else "gap",
            "reports": [r.as_json() for r in reports],
        }
        self.summary = {"status": result["status"]} | {r.provider: _logged(r) for r in reports}
        if options["json"]:
            self.stdout.write(json.dumps(result, sort_keys=True))
        else:
            for report in reports:
                self._print(report)
        if result["status"] != "ok":
            raise CommandError(self._failure(reports))

    def _report(self, provider: str, options: dict, tolerance: Tolerance) -> Report:
        until = _day(options["until"], "--until") if options["until"] else None
        since, until = default_range(provider, until=until)
        if options["since"]:
            since = _day(options["since"], "--since")
        return reconcile_provider(provider=provider, since=since, until=until, tolerance=tolerance)

    def _tolerance(self, options: dict) -> Tolerance:
        tokens = options["token_tolerance"]
        if tokens is not None and tokens < 0:
            raise CommandError("--token-tolerance must not be negative.")
        return Tolerance.from_settings(
            tokens=tokens,
            tokens_percent=_decimal(
                options["token_tolerance_percent"], "--token-tolerance-percent"
            ),
            cost=_decimal(options["cost_tolerance"], "--cost-tolerance"),
        )

    def _print(self, report: Report) -> None:
        totals = report.as_json()["totals"]
        self.stdout.write(
            f"reconcile_provider: {report.provider} {report.since}..{report.until}, "
            f"{len(report.days_compared)} days compared, {totals['lines']} day/model lines: "
            f"{totals[MATCHES]} match, {totals['we_recorded_less']} we recorded less, "
            f"{totals['we_recorded_more']} we recorded more"
        )
        for line in report.gaps:
            diff = line.difference
            lost = ""
            if line.lost:
                cost = line.lost.cost_at_our_prices
                lost = (
                    f"; lost ~{line.lost.tokens:,} tokens, "
                    f"{format_money(cost) if cost is not None else 'unpriced'} at our prices, "
                    f"~{_maybe(line.lost.estimated_generations)} generations"
                )
            self.stdout.write(
                f"  {line.day} {line.model}: {STATUS_LABELS[line.status]} (input "
                f"{diff['input_tokens']:+,}, cached {diff['cached_input_tokens']:+,}, output "
                f"{diff['output_tokens']:+,}){lost}"
            )
        if report.days_without_provider_data:
            days = ", ".join(d.isoformat() for d in report.days_without_provider_data)
            self.stdout.write(f"  no provider data for: {days}")

    def _failure(self, reports: list[Report]) -> str:
        parts = []
        for r in reports:
            if r.gaps:
                parts.append(f"{r.provider}: {len(r.gaps)} day/model lines beyond the tolerance")
            if r.days_without_provider_data:
                parts.append(f"{r.provider}: {len(r.days_without_provider_data)} days without data")
            if not r.days_compared:
                parts.append(f"{r.provider}: no day in {r.since}..{r.until} has provider data")
        return "; ".join(parts)


def _day(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise CommandError(f"{option} {text!r} is not a date (YYYY-MM-DD, a UTC day)") from exc


def _decimal(text: str | None, option: str) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise CommandError(f"{option} {text!r} is not a number") from exc
    if not value.is_finite() or value < 0:
        raise CommandError(f"{option} must be a number >= 0")
    return value


def _maybe(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def _logged(report: Report) -> dict:
    """The run's figures for the log line (whose formatter hides keys named like *token*)."""
    totals = report.as_json()["totals"]
    keep = (MATCHES, "we_recorded_less", "we_recorded_more", "lost_cost_at_our_prices")
    return {"lines": totals["lines"], **{k: totals[k] for k in keep}} | {
        "estimated_lost_generations": totals["estimated_lost_generations"],
        "days_without_provider_data": len(report.days_without_provider_data),
    }

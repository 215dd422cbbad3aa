"""`manage.py set_model_price`: add a dated price period for a model and service tier
(closing the open one), or correct a wrong period."""

from __future__ import annotations

import json

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError, transaction

from billing.models import LONG_RATE_FIELDS, RATE_FIELDS, ModelPrice, ServiceTier
from billing.money import plain
from billing.prices import LongContext, correct_model_price, set_model_price
from core.dates import parse_instant
from core.errors import ServiceError
from ops.commands import LoggedCommand

# option -> (help, the service's keyword)
RATES = {
    "input": ("uncached input tokens (e.g. 2.50); required", "input_per_million"),
    "cached-input": ("cache reads (default: the input price)", "cached_input_per_million"),
    "cache-write-5m": (
        "cache writes at the default lifetime, 5 minutes (default: the input price)",
        "cache_write_5m_per_million",
    ),
    "cache-write-1h": (
        "1-hour cache writes (default: the 5-minute price)",
        "cache_write_1h_per_million",
    ),
    "output": ("output tokens (e.g. 10.00); required", "output_per_million"),
    "reasoning": ("reasoning tokens (default: the output price)", "reasoning_per_million"),
}


class Command(LoggedCommand):
    help = (
        "Add a price period for MODEL on a service tier from --effective-from on, in USD per "
        "million tokens, closing the open period of that model and tier at that instant; "
        "refuses overlaps. Or, with --correct ID, replace a wrong period's rates by a "
        "correction over the same dates (then run reprice_usage --reprice-priced). Usage "
        "already recorded keeps its price until reprice_usage re-prices it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", help="The model name as the API reports it (e.g. gpt-4o).")
        for option, (text, _) in RATES.items():
            parser.add_argument(f"--{option}", default=None, help=f"USD per million {text}.")
            parser.add_argument(
                f"--long-{option}",
                default=None,
                help=f"Above --long-context-threshold: USD per million {text.split(';')[0]}"
                " (defaults as above, from the long-context input and output prices).",
            )
        parser.add_argument(
            "--long-context-threshold",
            type=int,
            default=None,
            help="Requests whose prompt (every input token, cache reads and writes included) "
            "has more tokens than this pay the --long-* prices for the whole request.",
        )
        parser.add_argument(
            "--service-tier",
            default=ServiceTier.STANDARD,
            choices=ServiceTier.values,
            help="The service tier these prices are for (default: standard).",
        )
        parser.add_argument(
            "--effective-from",
            help="When the price starts: YYYY-MM-DD (UTC midnight) or an ISO 8601 date-time "
            "with an offset. Required unless --correct.",
        )
        parser.add_argument(
            "--correct",
            type=int,
            metavar="PRICE_ID",
            help="Correct this price period (same model, tier and dates) instead of adding one.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Check and report, then roll back."
        )
        parser.add_argument("--json", action="store_true", help="Print the period as JSON.")

    def handle(self, *args, **options) -> None:
        try:
            with transaction.atomic():
                price = self._write(options)
                if options["dry_run"]:
                    transaction.set_rollback(True)
        except ValueError as exc:
            raise CommandError(f"--effective-from: {exc}") from exc
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        except DatabaseError as exc:
            raise CommandError(f"set_model_price failed, database error: {exc}") from exc
        self._report(price, options)

    def _write(self, options) -> ModelPrice:
        rates = {kw: options[opt.replace("-", "_")] for opt, (_, kw) in RATES.items()}
        for required in ("input", "output"):
            if options[required] is None:
                raise CommandError(f"--{required} is required.")
        long_context = None
        if options["long_context_threshold"] is not None:
            long_context = LongContext(
                threshold=options["long_context_threshold"],
                **{kw: options[f"long_{opt.replace('-', '_')}"] for opt, (_, kw) in RATES.items()},
            )
        common = {"long_context": long_context, "actor_label": "manage.py set_model_price"}
        if options["correct"] is not None:
            wrong = ModelPrice.objects.filter(pk=options["correct"], model=options["model"]).first()
            if wrong is None:
                raise CommandError(f"No price period {options['correct']} of {options['model']}.")
            return correct_model_price(price=wrong, **rates, **common)
        if not options["effective_from"]:
            raise CommandError("--effective-from is required.")
        return set_model_price(
            model=options["model"],
            service_tier=options["service_tier"],
            effective_from=parse_instant(options["effective_from"]),
            **rates,
            **common,
        )

    def _report(self, price: ModelPrice, options) -> None:
        names = (*RATE_FIELDS, "long_context_threshold", *LONG_RATE_FIELDS)
        data = {
            "id": price.pk,
            "model": price.model,
            "service_tier": price.service_tier,
            "effective_from": price.effective_from.isoformat(),
            "corrects": price.corrects_id,
            "dry_run": options["dry_run"],
        } | {n: None if getattr(price, n) is None else str(getattr(price, n)) for n in names}
        if options["json"]:
            self.stdout.write(json.dumps(data))
            return
        verb = "would be" if options["dry_run"] else "is"
        self.stdout.write(
            self.style.SUCCESS(
                f"{price.model} ({price.service_tier}): input {plain(price.input_per_million)}, "
                f"cached input {plain(price.cached_input_per_million)}, output "
                f"{plain(price.output_per_million)} USD per "
                f"million tokens from {price.effective_from.isoformat()} "
                f"(price id {price.pk} {verb} in effect)."
            )
        )

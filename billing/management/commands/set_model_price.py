"""`manage.py set_model_price`: add a dated price period for a model (closing the open one)."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError

from billing.prices import set_model_price
from core.dates import parse_instant
from core.errors import ServiceError
from ops.commands import LoggedCommand


class Command(LoggedCommand):
    help = (
        "Add a price period for MODEL from --effective-from on, in USD per million tokens, "
        "closing the model's open period at that instant. Refuses overlaps. Usage already "
        "recorded keeps its price; see reprice_usage to apply a correction."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model", help="The model name as the API reports it (e.g. gpt-4o).")
        parser.add_argument(
            "--input", required=True, help="USD per million uncached prompt tokens (e.g. 2.50)."
        )
        parser.add_argument(
            "--output", required=True, help="USD per million completion tokens (e.g. 10.00)."
        )
        parser.add_argument(
            "--cached-input",
            default=None,
            help="USD per million cached prompt tokens (default: the --input price).",
        )
        parser.add_argument(
            "--effective-from",
            required=True,
            help="When the price starts: YYYY-MM-DD (UTC midnight) or an ISO 8601 date-time "
            "with an offset.",
        )

    def handle(self, *args, **options) -> None:
        try:
            start = parse_instant(options["effective_from"])
            price = set_model_price(
                model=options["model"],
                input_per_million=options["input"],
                output_per_million=options["output"],
                cached_input_per_million=options["cached_input"],
                effective_from=start,
                actor_label="manage.py set_model_price",
            )
        except ValueError as exc:
            raise CommandError(f"--effective-from: {exc}") from exc
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        except DatabaseError as exc:
            raise CommandError(f"set_model_price failed, database error: {exc}") from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"{price.model}: input {price.input_per_million}, cached input "
                f"{price.cached_input_per_million}, output {price.output_per_million} USD per "
                f"million tokens from {price.effective_from.isoformat()} (price id {price.pk})."
            )
        )

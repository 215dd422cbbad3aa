"""The sample provider exports (tests/usage/provider_exports) and the usage we recorded for them.

The files are built from the providers' documented shapes: OpenAI's Usage API
(two pages, has_more / next_page) and Costs API, grouped by model, project and
API key, with a helpdesk project of the same organisation that is not ours;
Anthropic's usage_report/messages (JSON Lines, two pages, cache reads and 5m /
1h cache writes, standard and batch tiers, an empty last day) and cost_report
(amounts in cents). Against them we record, on 2026-11-03..05 (UTC):

OpenAI  2026-11-03  gpt-4o 3 (one as the snapshot name)  gpt-4o-mini 2   both match
        2026-11-04  gpt-4o 3 of the provider's 5 (the gap; one at 23:30 UTC by a
                    Tokyo company, whose local day is already the 5th)  gpt-4o-mini 2
        2026-11-05  gpt-4o 1  gpt-4o-mini 2 where the provider saw 1 (we recorded more)
Anthropic 2026-11-03  claude-sonnet-4 2, claude-3-5-haiku 1   both match
          2026-11-04  claude-sonnet-4 1 of 2 (the gap)
          2026-11-05  claude-3-5-haiku 1 on a day the provider reports empty
"""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from pathlib import Path

from django.core.management import call_command

from tests.conftest import make_company, make_price, make_usage

EXPORTS = Path(__file__).parent / "provider_exports"
OPENAI_USAGE = [EXPORTS / "openai_usage_page1.json", EXPORTS / "openai_usage_page2.json"]
OPENAI_COSTS = EXPORTS / "openai_costs.json"
OPENAI_MAP = EXPORTS / "openai_project_map.json"
ANTHROPIC_USAGE = EXPORTS / "anthropic_usage.jsonl"
ANTHROPIC_COSTS = EXPORTS / "anthropic_cost_report.json"
NOV3, NOV4, NOV5 = date(2026, 11, 3), date(2026, 11, 4), date(2026, 11, 5)

GPT4O = {"prompt_tokens": 12_000, "cached_prompt_tokens": 4_000, "completion_tokens": 1_500}
MINI = {"prompt_tokens": 8_000, "cached_prompt_tokens": 0, "completion_tokens": 900}
SONNET = {"prompt_tokens": 45_000, "cached_prompt_tokens": 25_000, "completion_tokens": 3_000}
HAIKU = {"prompt_tokens": 4_000, "cached_prompt_tokens": 0, "completion_tokens": 800}


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def import_openai(**options) -> str:
    """Import the OpenAI sample (usage and costs); the command's output."""
    return _import([*OPENAI_USAGE, OPENAI_COSTS], provider="openai", **options)


def import_anthropic(**options) -> str:
    return _import([ANTHROPIC_USAGE, ANTHROPIC_COSTS], provider="anthropic", **options)


def _import(paths: list[Path], **options) -> str:
    out = io.StringIO()
    call_command("import_provider_usage", *map(str, paths), stdout=out, **options)
    return out.getvalue()


def record_openai_usage() -> dict:
    """Our side of the OpenAI sample; the ids of our rows per (day, model)."""
    make_price("gpt-4o", input="2.50", cached="1.25", output="10.00")
    make_price("gpt-4o-2024-08-06", input="2.50", cached="1.25", output="10.00")
    make_price("gpt-4o-mini", input="0.15", cached="0.075", output="0.60")
    acme, tokyo = make_company(name="Acme Hiring"), make_company(timezone="Asia/Tokyo")
    plan = [
        (acme, "gpt-4o", NOV3, 0, 0, GPT4O),  # the first instant of the day
        (acme, "gpt-4o", NOV3, 9, 15, GPT4O),
        (acme, "gpt-4o-2024-08-06", NOV3, 17, 40, GPT4O),
        (acme, "gpt-4o-mini", NOV3, 11, 0, MINI),
        (tokyo, "gpt-4o-mini", NOV3, 12, 0, MINI),
        (acme, "gpt-4o", NOV4, 8, 0, GPT4O),
        (acme, "gpt-4o", NOV4, 14, 0, GPT4O),
        (tokyo, "gpt-4o", NOV4, 23, 30, GPT4O),
        (acme, "gpt-4o-mini", NOV4, 10, 0, MINI),
        (acme, "gpt-4o-mini", NOV4, 16, 0, MINI),
        (acme, "gpt-4o", NOV5, 7, 0, GPT4O),
        (acme, "gpt-4o-mini", NOV5, 9, 0, MINI),
        (tokyo, "gpt-4o-mini", NOV5, 21, 0, MINI),
    ]
    return _record(plan)


def record_anthropic_usage() -> dict:
    make_price("claude-sonnet-4-20250514", input="3.00", cached="0.30", output="15.00")
    make_price("claude-3-5-haiku", input="0.80", cached="0.08", output="4.00")
    globex = make_company(name="Globex Assessments")
    plan = [
        (globex, "claude-sonnet-4-20250514", NOV3, 10, 0, SONNET),
        (globex, "claude-sonnet-4-20250514", NOV3, 15, 0, SONNET),
        (globex, "claude-3-5-haiku", NOV3, 12, 0, HAIKU),
        (globex, "claude-sonnet-4-20250514", NOV4, 13, 0, SONNET),
        (globex, "claude-3-5-haiku", NOV5, 6, 0, HAIKU),
    ]
    return _record(plan)


def _record(plan) -> dict:
    rows: dict[tuple[date, str], list] = {}
    for company, model, day, hour, minute, tokens in plan:
        usage = make_usage(company, model=model, occurred_at=at(day, hour, minute), **tokens)
        rows.setdefault((day, model), []).append(usage.usage.pk)
    return rows

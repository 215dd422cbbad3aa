"""The usage table's columns per grouping: one definition for the page and its CSV.

The HTML table and the CSV export both walk :data:`COLUMNS`, so the CSV is
exactly what the tab shows (the CSV's `cost` at full precision).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from billing.money import plain


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    kind: str = "int"  # int, money, text, day, instant, job

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "money")


TOTALS = [
    Column("generations", "Generations"),
    Column("questions", "Questions"),
    Column("prompt_tokens", "Prompt tokens"),
    Column("cached_prompt_tokens", "Cached tokens"),
    Column("completion_tokens", "Completion tokens"),
    Column("cost", "Cost", "money"),
]

COLUMNS: dict[str, list[Column]] = {
    "day": [Column("day", "Day", "day"), *TOTALS],
    "model": [Column("model", "Model", "text"), *TOTALS],
    "job": [
        Column("job__title", "Job", "job"),
        Column("job_id", "Job id", "text"),
        Column("draft", "Draft id", "text"),
        *TOTALS,
    ],
    "generation": [
        Column("occurred_at", "Occurred", "instant"),
        Column("id", "Generation id", "text"),
        Column("job__title", "Job", "text"),
        Column("job_id", "Job id", "text"),
        Column("draft_job_id", "Draft id", "text"),
        Column("model", "Model", "text"),
        Column("status", "Status", "text"),
        Column("cost_source", "Cost source", "text"),
        Column("questions", "Questions"),
        Column("prompt_tokens", "Prompt tokens"),
        Column("cached_prompt_tokens", "Cached tokens"),
        Column("completion_tokens", "Completion tokens"),
        Column("cost", "Cost", "money"),
    ],
}


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    """Generation rows name their question count like the groups do."""
    if "question_count" in row:
        row["questions"] = row.pop("question_count")
    return row


def csv_cell(column: Column, value: Any, tz: tzinfo) -> str:
    if value is None:
        return ""
    if column.kind == "money":
        return plain(value) or ""
    if column.kind == "instant":
        return value.astimezone(tz).isoformat()
    return str(value)


def csv_lines(group: str, rows: Iterable[dict], tz: tzinfo) -> Iterator[list[str]]:
    """The header, then one line per row, in the table's column order."""
    columns = COLUMNS[group]
    yield [column.key.replace("job__title", "job_title") for column in columns]
    for row in rows:
        row = normalise(row)
        yield [csv_cell(column, row.get(column.key), tz) for column in columns]

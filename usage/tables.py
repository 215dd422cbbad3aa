"""The usage table's columns per grouping: the CSV's, and the page's.

The CSV walks :data:`COLUMNS` (every column, `cost` at full precision; the
generation grouping's COPY in usage.selectors writes the same). The page walks
:data:`WEB_COLUMNS`: the same figures in fewer columns (a job's id and draft id
fold into its Job cell, the cost source into its Cost cell), so Cost is on
screen at 1366 px; the columns that give way first are hidden on narrower
screens (`gives_way`, billing.css), Cost never.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from billing.money import money_html, plain


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    kind: str = "int"  # int, money, text, key, day, instant, job, generation, status
    # 0: always shown; hidden below 1: 1400 px, 2: 1100 px, 3: 700 px (a phone); billing.css.
    gives_way: int = 0

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "money")

    @property
    def css(self) -> str:
        classes = (["num"] if self.numeric else []) + (
            [f"gives-way-{self.gives_way}"] if self.gives_way else []
        )
        if self.kind == "job":  # a title wraps before Cost is pushed off screen
            classes.append("wraps")
        return " ".join(classes)


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
    "key": [Column("api_key__name", "API key", "key"), *TOTALS],
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


def _csv_formatter(column: Column, tz: tzinfo) -> Callable[[Any], str] | None:
    """How one column is written, chosen once per export. None: as is (the csv
    module writes None as an empty field and str() of anything else)."""
    if column.kind == "money":
        return lambda value: "" if value is None else plain(value)
    if column.kind == "instant":
        return lambda value: (
            "" if value is None else value.astimezone(tz).isoformat(timespec="microseconds")
        )
    return None


def csv_lines(group: str, rows: Iterable[dict], tz: tzinfo) -> Iterator[list]:
    """The header, then one line per row, in the table's column order."""
    columns = COLUMNS[group]
    yield [
        column.key.replace("job__title", "job_title").replace("api_key__name", "api_key")
        for column in columns
    ]
    keys = [
        "question_count" if c.key == "questions" and group == "generation" else c.key
        for c in columns
    ]
    special = [(i, f) for i, c in enumerate(columns) if (f := _csv_formatter(c, tz))]
    for row in rows:
        line = [row.get(key) for key in keys]
        for index, fmt in special:
            line[index] = fmt(line[index])
        yield line


def csv_chunks(lines: Iterable[list[str]], rows_per_chunk: int = 1000) -> Iterator[str]:
    """CSV text in chunks of many lines: one response chunk per line costs more than the line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")  # as PostgreSQL's COPY writes it
    for count, line in enumerate(lines, start=1):
        writer.writerow(line)
        if count % rows_per_chunk == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


def _web_totals() -> list[Column]:
    return [
        Column("generations", "Generations"),
        Column("questions", "Questions", gives_way=3),
        Column("prompt_tokens", "Prompt tokens", gives_way=2),
        Column("cached_prompt_tokens", "Cached tokens", gives_way=2),
        Column("completion_tokens", "Completion tokens", gives_way=2),
        Column("cost", "Cost", "money"),
    ]


WEB_COLUMNS: dict[str, list[Column]] = {
    "day": [Column("day", "Day", "day"), *_web_totals()],
    "model": [Column("model", "Model", "text"), *_web_totals()],
    "key": [Column("api_key__name", "API key", "key"), *_web_totals()],
    "job": [Column("job__title", "Job", "job"), *_web_totals()],
    # The status shows in the Job cell (a draft, an abandoned draft, or the job).
    "generation": [
        Column("occurred_at", "Occurred", "instant"),
        Column("id", "Generation", "generation"),
        Column("job__title", "Job", "job", gives_way=2),
        Column("model", "Model", "text", gives_way=3),
        Column("questions", "Questions", gives_way=3),
        Column("prompt_tokens", "Prompt tokens", gives_way=2),
        Column("cached_prompt_tokens", "Cached tokens", gives_way=1),
        Column("completion_tokens", "Completion tokens", gives_way=2),
        Column("cost", "Cost", "money"),
    ],
}


def short_id(value: object) -> str:
    """The part of a generation id that differs: ids are UUIDv7, time-ordered, so
    rows of the same minutes share the first 12 hex digits; the last 8 are random."""
    return "…" + str(value)[-8:]


@dataclass(frozen=True)
class Links:
    """Where a row's cells link: the job drill-down and a generation's charge page."""

    drill_query: str  # the period, for the job drill-down
    charge_base: str  # the company's billing URL; a charge is at <base>usage/<id>/


def html_cells(
    row: dict[str, Any], columns: list[Column], *, currency: str, tz: tzinfo, links: Links
) -> list[SafeString]:
    """One table row as escaped cell contents, formatted in Python (fast for 100s of rows)."""
    return [_cell(column, row, currency, tz, links) for column in columns]


def _cell(column: Column, row: dict, currency: str, tz: tzinfo, links: Links) -> SafeString:
    value = row.get(column.key)
    if column.kind == "money":
        return cost_html(row, currency)
    if column.kind == "int":
        return SafeString(f"{value or 0:,}")
    if column.kind == "day":
        return escape(value.strftime("%a, %b %-d, %Y"))
    if column.kind == "instant":
        local = value.astimezone(tz)
        return format_html(
            '<time datetime="{}">{}</time>', local.isoformat(), local.strftime("%b %-d, %H:%M:%S")
        )
    if column.kind == "job":
        return _job_html(row, links)
    if column.kind == "generation":
        return format_html(
            '<a class="id" href="{}usage/{}/" title="Explain the charge of generation {}">{}</a>'
            '<button type="button" class="copy" data-copy="{}" hidden>'
            "Copy"
            '<span class="visually-hidden"> generation id {}</span></button>',
            links.charge_base,
            value,
            value,
            short_id(value),
            value,
            value,
        )
    if column.kind == "status":
        return format_html('<span class="badge {}">{}</span>', value, value)
    if column.kind == "key" and value is None:  # recorded without a key: imported history
        return SafeString('<span class="muted">No key (imported)</span>')
    return escape("" if value is None else str(value))


def _job_html(row: dict, links: Links) -> SafeString:
    job_id = row.get("job_id")
    if job_id:
        title = row.get("job__title") or str(job_id)
        href = f"?{links.drill_query}&group=generation&job={job_id}"
        return format_html('<a href="{}">{}</a>', href, title)
    draft = row.get("draft") or row.get("draft_job_id")
    label = "Abandoned draft" if row.get("status") == "abandoned" else "Draft"
    if draft:
        return format_html(
            '<span class="badge {}">{}</span> <span class="id">{}</span>',
            row.get("status") or "draft",
            label,
            draft,
        )
    return format_html('<span class="badge draft">{}</span>', label)


NO_PRICE = SafeString('<span class="badge unpriced">no price</span>')


def cost_html(row: dict, currency: str) -> SafeString:
    """A row's cost by the display rule, saying what it leaves out.

    A generation without a price reads "no price" (never $0.00); a group with
    some says how many of its generations its cost leaves out.
    """
    cost, unpriced = row.get("cost"), row.get("unpriced", 0)
    generations = row.get("generations", 1)
    if (
        row.get("cost_source") == "unpriced"
        or (cost is None)
        or (unpriced and unpriced == generations)
    ):
        return NO_PRICE
    shown = money_html(cost, currency)
    if unpriced:
        return format_html(
            '{} <span class="badge unpriced" title="not in this cost">+{} no price</span>',
            shown,
            f"{unpriced:,}",
        )
    for marker in ("reported", "prepaid"):  # a generation's cost not priced here, or not debited
        if row.get("cost_source") == marker or (marker == "prepaid" and row.get("prepaid")):
            return format_html('{} <span class="muted small">{}</span>', shown, marker)
    return shown


def rows_html(rows: list[list[SafeString]], columns: list[Column]) -> SafeString:
    """The table body's <tr>s, joined in Python.

    Hundreds of rows of a dozen cells each are ~10x faster this way than as
    nested template loops; the first cell of each row is its header (th scope=row).
    """
    css = [f' class="{c.css}"' if c.css else "" for c in columns]
    lines = []
    for row in rows:
        cells = [f'<th scope="row"{css[0]}>{row[0]}</th>']
        cells += [f"<td{css[i]}>{cell}</td>" for i, cell in enumerate(row) if i]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return mark_safe("\n".join(lines))  # noqa: S308 - every cell is escaped above

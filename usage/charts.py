"""A server-rendered SVG chart of cost per day, stacked by model.

No JavaScript and no external assets: the view hands a :class:`Chart` to the
template, which draws rectangles with a `<title>` each (the browser shows it
as a tooltip, screen readers read it). Geometry is float; amounts stay
Decimal and are formatted with billing.money for the labels.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from billing.money import format_money

PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0ea5e9", "#f97316", "#64748b"]
WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 28


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass
class Chart:
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[Bar] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    x_labels: list[tuple[float, str]] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)
    summary: str = ""
    bars_markup: str = ""
    plot_left: int = LEFT
    plot_right: int = WIDTH - RIGHT
    plot_bottom: int = HEIGHT - BOTTOM


def nice_step(top: Decimal) -> Decimal:
    """A 1/2/5 x 10^k step that splits `top` into about four gridlines."""
    raw = top / 4
    magnitude = Decimal(1).scaleb(raw.adjusted())
    for factor in (1, 2, 5, 10):
        if raw <= magnitude * factor:
            return magnitude * factor
    return magnitude * 10


def daily_stacked_chart(
    points: list[tuple[date, str, Decimal]], start: date, end: date, currency: str
) -> Chart | None:
    """The chart for days [start, end]; None when there is no cost to draw."""
    by_day: dict[date, dict[str, Decimal]] = defaultdict(dict)
    for day, model, cost in points:
        if cost:
            by_day[day][model] = by_day[day].get(model, Decimal(0)) + cost
    if not by_day:
        return None
    models = sorted({model for costs in by_day.values() for model in costs})
    colors = {model: PALETTE[i % len(PALETTE)] for i, model in enumerate(models)}
    step = nice_step(max(sum(costs.values()) for costs in by_day.values()))
    top = step * 4
    chart = Chart(legend=[(colors[m], m) for m in models])
    days = (end - start).days + 1
    slot = (chart.plot_right - chart.plot_left) / days
    plot_height = chart.plot_bottom - TOP
    for i in range(5):
        value = step * i
        y = chart.plot_bottom - plot_height * float(value / top)
        chart.y_ticks.append((round(y, 1), format_money(value, currency)))
    label_every = max(1, round(days / 8))
    for index in range(days):
        day = start + timedelta(days=index)
        x = chart.plot_left + slot * index
        if index % label_every == 0:
            chart.x_labels.append((round(x + slot / 2, 1), day.strftime("%b %-d")))
        chart.bars.extend(
            _stack(day, by_day.get(day, {}), x, slot, top, plot_height, colors, currency)
        )
    total = sum(sum(costs.values()) for costs in by_day.values())
    chart.summary = (
        f"Cost per day from {start:%b %-d} to {end:%b %-d, %Y}, stacked by model; "
        f"{format_money(total, currency)} in total over {len(by_day)} days with usage."
    )
    chart.bars_markup = bars_svg(chart)
    return chart


def _stack(day, costs, x, slot, top, plot_height, colors, currency) -> list[Bar]:
    bars, base = [], float(HEIGHT - BOTTOM)
    day_total = sum(costs.values(), Decimal(0))
    for model in sorted(costs):
        height = plot_height * float(costs[model] / top)
        base -= height
        title = (
            f"{day:%a %b %-d}: {model} {format_money(costs[model], currency)} "
            f"(day total {format_money(day_total, currency)})"
        )
        bars.append(
            Bar(
                x=round(x + slot * 0.12, 2),
                y=round(base, 2),
                width=round(max(slot * 0.76, 1), 2),
                height=round(max(height, 0.5), 2),
                color=colors[model],
                title=title,
            )
        )
    return bars


def bars_svg(chart: Chart) -> SafeString:
    """The bars as SVG markup, built in Python (a month has ~100 of them); titles escaped."""
    return mark_safe(  # noqa: S308 - every interpolated text is escaped
        "".join(
            f'<rect x="{b.x}" y="{b.y}" width="{b.width}" height="{b.height}" '
            f'fill="{b.color}" class="bar"><title>{escape(b.title)}</title></rect>'
            for b in chart.bars
        )
    )

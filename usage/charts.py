"""Server-rendered SVG charts: cost per day stacked by model, and a spend trend.

No JavaScript and no external assets: the view hands a :class:`Chart` to the
template, which draws rectangles with a `<title>` each (the browser shows it
as a tooltip, screen readers read it). Geometry is float; amounts stay
Decimal and are formatted with billing.money for the labels.

A chart is drawn twice, wide and narrow (billing.css shows one): SVG text
scales with the drawing, so a 760-unit chart squeezed onto a phone would have
5 px labels; the narrow one keeps them readable at 390 px.

Generations without a price have no cost to stack: each day that has some
gets a marker under its bar, and the legend names their models, so the chart
never hides them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from billing.money import format_money

PALETTE_SIZE = 8  # colours .c0-.c7 in billing.css, and the same fills here
PALETTE = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0284c7", "#ea580c", "#475569"]
UNPRICED_FILL = "#94a3b8"


@dataclass(frozen=True)
class Geometry:
    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    labels: int  # about how many day labels fit under the axis


WIDE = Geometry(width=760, height=260, left=64, right=12, top=12, bottom=40, labels=8)
NARROW = Geometry(width=340, height=240, left=52, right=6, top=10, bottom=40, labels=4)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass(frozen=True)
class LegendItem:
    css: str
    label: str


@dataclass
class Chart:
    geometry: Geometry
    bars: list[Bar] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    x_labels: list[tuple[float, str]] = field(default_factory=list)
    legend: list[LegendItem] = field(default_factory=list)
    summary: str = ""
    bars_markup: str = ""
    id: str = "chart"
    top: Decimal = Decimal(0)  # the amount at the top gridline

    @property
    def width(self) -> int:
        return self.geometry.width

    @property
    def height(self) -> int:
        return self.geometry.height

    @property
    def plot_left(self) -> int:
        return self.geometry.left

    @property
    def plot_right(self) -> int:
        return self.geometry.width - self.geometry.right

    @property
    def plot_bottom(self) -> int:
        return self.geometry.height - self.geometry.bottom

    @property
    def label_y(self) -> int:
        return self.plot_bottom + 26


def nice_step(top: Decimal) -> Decimal:
    """A 1/2/5 x 10^k step that splits `top` into about four gridlines."""
    if top <= 0:
        return Decimal("0.01")
    raw = top / 4
    magnitude = Decimal(1).scaleb(raw.adjusted())
    for factor in (1, 2, 5, 10):
        if raw <= magnitude * factor:
            return magnitude * factor
    return magnitude * 10


def daily_stacked_chart(
    points: list[tuple[date, str, Decimal, int]],
    start: date,
    end: date,
    currency: str,
    *,
    narrow: bool = False,
) -> Chart | None:
    """Days [start, end] stacked by model, unpriced days marked; None when there is nothing."""
    by_day: dict[date, dict[str, Decimal]] = defaultdict(dict)
    unpriced: dict[date, dict[str, int]] = defaultdict(dict)
    for day, model, cost, count in points:
        if cost:
            by_day[day][model] = by_day[day].get(model, Decimal(0)) + cost
        if count:
            unpriced[day][model] = unpriced[day].get(model, 0) + count
    if not by_day and not unpriced:
        return None
    models = sorted({model for costs in by_day.values() for model in costs})
    colors = {model: i % PALETTE_SIZE for i, model in enumerate(models)}
    chart = _frame(
        NARROW if narrow else WIDE,
        max((sum(c.values()) for c in by_day.values()), default=Decimal(0)),
        currency,
    )
    chart.id = "chart-narrow" if narrow else "chart-wide"
    chart.legend = [LegendItem(f"c{colors[m]}", m) for m in models]
    chart.legend += [
        LegendItem("unpriced", f"{model}: no price yet, not in the bars")
        for model in sorted({m for counts in unpriced.values() for m in counts})
    ]
    top = chart.top
    days = (end - start).days + 1
    slot = (chart.plot_right - chart.plot_left) / days
    every = max(1, round(days / chart.geometry.labels))
    for index in range(days):
        day = start + timedelta(days=index)
        x = chart.plot_left + slot * index
        if index % every == 0:
            chart.x_labels.append((round(x + slot / 2, 1), day.strftime("%b %-d")))
        costs = by_day.get(day, {})
        chart.bars.extend(_stack(chart, day, costs, x, slot, top, colors, currency))
        if day in unpriced:
            chart.bars.append(_unpriced_marker(chart, day, unpriced[day], x, slot))
    chart.summary = _summary(by_day, unpriced, start, end, currency, stacked=bool(models[1:]))
    chart.bars_markup = bars_svg(chart)
    return chart


def _frame(geometry: Geometry, highest: Decimal, currency: str) -> Chart:
    chart = Chart(geometry=geometry)
    step = nice_step(highest)
    plot_height = chart.plot_bottom - geometry.top
    for i in range(5):
        y = chart.plot_bottom - plot_height * i / 4
        chart.y_ticks.append((round(y, 1), format_money(step * i, currency)))
    chart.top = step * 4
    return chart


def _stack(chart, day, costs, x, slot, top, colors, currency) -> list[Bar]:
    bars, base = [], float(chart.plot_bottom)
    plot_height = chart.plot_bottom - chart.geometry.top
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
                color=PALETTE[colors[model]],
                title=title,
            )
        )
    return bars


def _unpriced_marker(chart: Chart, day: date, counts: dict[str, int], x, slot) -> Bar:
    """A grey tick just under the axis: this day has generations the bars leave out."""
    what = ", ".join(f"{n:,} of {model}" for model, n in sorted(counts.items()))
    return Bar(
        x=round(x + slot * 0.12, 2),
        y=chart.plot_bottom + 3,
        width=round(max(slot * 0.76, 2), 2),
        height=5,
        color=UNPRICED_FILL,
        title=f"{day:%a %b %-d}: generations with no price yet, not in the cost: {what}",
    )


def _summary(by_day, unpriced, start: date, end: date, currency: str, *, stacked: bool) -> str:
    total = sum((sum(costs.values()) for costs in by_day.values()), Decimal(0))
    text = (
        f"Cost per day from {start:%b %-d} to {end:%b %-d, %Y}"
        f"{', stacked by model' if stacked else ''}; "
        f"{format_money(total, currency)} in total over {len(by_day)} days with cost."
    )
    count = sum(sum(c.values()) for c in unpriced.values())
    if count:
        text += f" {count:,} generations have no price yet and are not in the bars."
    return text


def bars_svg(chart: Chart) -> SafeString:
    """The bars as SVG markup, built in Python (a month has ~100 of them); titles escaped."""
    return mark_safe(  # noqa: S308 - every interpolated text is escaped
        "".join(
            f'<rect x="{b.x}" y="{b.y}" width="{b.width}" height="{b.height}" '
            f'fill="{b.color}" class="bar"><title>{escape(b.title)}</title></rect>'
            for b in chart.bars
        )
    )


def spend_trend_chart(
    points: Sequence, start: date, end: date, currency: str, *, narrow: bool = False
) -> Chart | None:
    """Spend per day over [start, end] (the staff overview's trend), one colour.

    `points` have a `day` and a `cost` (usage.selectors.TrendPoint)."""
    if not points:
        return None
    stacked = [(p.day, currency, p.cost, 0) for p in points]
    chart = daily_stacked_chart(stacked, start, end, currency, narrow=narrow)
    if chart is not None:
        chart.legend = []
        chart.id = f"trend-{currency}-{'narrow' if narrow else 'wide'}"
    return chart

"""Report selectors with a fixed clock: months, forecasts and per-zone month starts."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import make_company, make_price, make_usage
from usage.charts import daily_stacked_chart, nice_step
from usage.selectors import companies_overview, spend_overview, with_pending_drafts

pytestmark = pytest.mark.django_db
UTC = ZoneInfo("UTC")


def _dollar(company, at, **kwargs):
    """$1.00 of usage at `at` (100,000 completion tokens at $10 per million)."""
    make_usage(
        company, model="m", prompt_tokens=0, completion_tokens=100_000, occurred_at=at, **kwargs
    )


def test_spend_overview_compares_months_in_company_zone_and_forecasts():
    make_price("m", output="10", effective_from=datetime(2025, 1, 1, tzinfo=UTC))
    company = make_company(timezone="Asia/Tokyo")
    _dollar(company, datetime(2026, 9, 30, 16, 0, tzinfo=UTC))  # Oct 1 in Tokyo
    _dollar(company, datetime(2026, 10, 5, 3, 0, tzinfo=UTC))
    _dollar(company, datetime(2026, 10, 31, 14, 0, tzinfo=UTC))  # Oct 31, 23:00 Tokyo
    _dollar(company, datetime(2026, 10, 31, 15, 30, tzinfo=UTC))  # Nov 1, 00:30 Tokyo
    _dollar(company, datetime(2026, 11, 3, 0, 0, tzinfo=UTC))
    now = datetime(2026, 11, 15, 15, 0, tzinfo=UTC)  # Nov 16, 00:00 Tokyo: half of November
    spend = spend_overview(company, now)
    assert spend.this_month == Decimal(2)  # Nov 1 00:30 and Nov 3
    assert spend.last_month == Decimal(3)
    assert spend.last_month_same_period == Decimal(2)  # Oct 1 and Oct 5, not Oct 31
    assert spend.forecast == Decimal(4)  # $2 in 15 of 30 days
    assert (spend.pending.generations, spend.pending.cost) == (5, Decimal(5))  # all drafts
    assert spend.abandoned.generations == 0


def test_staff_overview_month_starts_in_each_company_zone():
    make_price("m", output="10", effective_from=datetime(2025, 1, 1, tzinfo=UTC))
    tokyo = make_company(name="Tokyo", timezone="Asia/Tokyo")
    utc = make_company(name="Utc", timezone="UTC")
    at = datetime(2026, 10, 31, 20, 0, tzinfo=UTC)  # November in Tokyo, October in UTC
    _dollar(tokyo, at)
    _dollar(utc, at)
    listed = list(companies_overview(now=datetime(2026, 11, 2, tzinfo=UTC)))
    rows = {c.name: c for c in with_pending_drafts(listed)}
    assert rows["Tokyo"].month_spend == Decimal(1)
    assert rows["Utc"].month_spend == Decimal(0)
    assert rows["Tokyo"].pending_cost == Decimal(1)  # recorded as a draft
    assert rows["Tokyo"].pending_generations == 1


def test_staff_overview_sorted_by_pending_drafts_shows_the_sums_it_sorts_by():
    make_price("m", output="10", effective_from=datetime(2025, 1, 1, tzinfo=UTC))
    at = datetime(2026, 10, 31, 20, 0, tzinfo=UTC)
    none, one, three = (make_company(name=n) for n in ("None", "One", "Three"))
    _dollar(one, at)
    for _ in range(3):
        _dollar(three, at)
    now = datetime(2026, 11, 2, tzinfo=UTC)
    ordered = list(companies_overview(now=now, sort="pending", descending=True))
    assert [c.name for c in ordered][:3] == ["Three", "One", "None"]
    sorted_by = [c.pending_cost for c in ordered]
    shown = with_pending_drafts(ordered)
    assert [c.pending_cost for c in shown] == sorted_by
    assert [(c.pending_cost, c.pending_generations) for c in shown[:3]] == [
        (Decimal(3), 3),
        (Decimal(1), 1),
        (Decimal(0), 0),
    ]


def test_chart_scale_and_tooltips():
    assert nice_step(Decimal("0.37")) == Decimal("0.1")
    assert nice_step(Decimal("13")) == Decimal("5")
    day = datetime(2026, 11, 2).date()
    chart = daily_stacked_chart(
        [(day, "a", Decimal("1.5"), 0), (day, "b", Decimal("0.5"), 0)], day, day, "USD"
    )
    assert [b.title for b in chart.bars] == [
        "Mon Nov 2: a $1.50 (day total $2.00)",
        "Mon Nov 2: b $0.50 (day total $2.00)",
    ]
    assert daily_stacked_chart([], day, day, "USD") is None


def test_chart_marks_days_with_unpriced_generations_and_names_them_in_the_legend():
    day = datetime(2026, 11, 2).date()
    points = [(day, "a", Decimal("0.0015"), 0), (day, "llama", Decimal(0), 3)]
    chart = daily_stacked_chart(points, day, day, "USD")
    assert [b.title for b in chart.bars] == [
        "Mon Nov 2: a $0.0015 (day total $0.0015)",
        "Mon Nov 2: generations with no price yet, not in the cost: 3 of llama",
    ]
    assert [item.label for item in chart.legend] == ["a", "llama: no price yet, not in the bars"]
    assert "3 generations have no price yet" in chart.summary
    only_unpriced = daily_stacked_chart([(day, "llama", Decimal(0), 2)], day, day, "USD")
    assert only_unpriced is not None and len(only_unpriced.bars) == 1


def test_narrow_chart_keeps_its_labels_readable_on_a_phone():
    start = datetime(2026, 11, 1).date()
    points = [(start + timedelta(days=i), "a", Decimal("1"), 0) for i in range(30)]
    end = start + timedelta(days=29)
    wide = daily_stacked_chart(points, start, end, "USD")
    narrow = daily_stacked_chart(points, start, end, "USD", narrow=True)
    # Drawn at 340 units for a ~340 px box, text keeps its size; fewer day labels fit.
    assert narrow.width <= 360 < wide.width
    assert len(narrow.x_labels) < len(wide.x_labels) and len(narrow.x_labels) >= 3

"""Reads over usage that are more than a one-line query."""

from __future__ import annotations

import uuid
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import islice

from django.db import connection
from django.db.models import (
    Case,
    Count,
    DateField,
    F,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing.models import AmountField, Company, LedgerEntry
from core.sql import json_rows, recordset
from usage.models import CostSource, Job, QuestionGenerationUsage, UsageDailyRollup, UsageStatus


def month_start(company: Company, now: datetime | None = None) -> date:
    """The first day of the current month in the company's time zone."""
    local = timezone.localtime(now or timezone.now(), company.tz)
    return local.date().replace(day=1)


def month_to_date_spend(company: Company, now: datetime | None = None) -> Decimal:
    """Cost of this month's generations (company time zone), from the exact rollup."""
    return month_to_date_totals(company, now)[0]


def month_to_date_totals(company: Company, now: datetime | None = None) -> tuple[Decimal, int]:
    """This month's cost and its generations still without a price, in one query.

    Unpriced generations are not in the cost until `reprice_usage` prices them:
    callers that show the spend show this count beside it, never a silent zero.
    """
    today = timezone.localtime(now or timezone.now(), company.tz).date()
    totals = UsageDailyRollup.objects.filter(
        company=company, day__gte=today.replace(day=1), day__lte=today
    ).aggregate(total=Sum("cost"), unpriced=Sum("unpriced"))
    return totals["total"] or Decimal(0), totals["unpriced"] or 0


def month_to_date_spend_by_company(companies: list[Company], now: datetime | None = None) -> dict:
    """Month-to-date spend of several companies (each in its own time zone), one query.

    For list pages (the admin company changelist): no query per company.
    """
    if not companies:
        return {}
    windows = {}
    for company in companies:
        today = timezone.localtime(now or timezone.now(), company.tz).date()
        windows[company.pk] = (today.replace(day=1), today)
    totals = _month_spend_sql(windows)
    return {company.pk: totals.get(company.pk) or Decimal(0) for company in companies}


def _month_spend_sql(windows: dict) -> dict:
    """Each company's window joined to the rollup's (company, day) index.

    One OR branch per company would make a BitmapOr of as many index scans plus
    a recheck of every bucket, and this runs inside a batch's locks (the alerts
    read it there).
    """
    rows = json_rows([(c, first, last) for c, (first, last) in windows.items()])
    table = UsageDailyRollup._meta.db_table
    window = recordset("%s", [("company_id", "uuid"), ("first_day", "date"), ("last_day", "date")])
    sql = f"""SELECT rows.company_id, SUM(r.cost) FROM {window}
                JOIN {table} r ON r.company_id = rows.company_id
                 AND r.day BETWEEN rows.first_day AND rows.last_day
               GROUP BY rows.company_id"""
    with connection.cursor() as cursor:
        cursor.execute(sql, [rows])
        return dict(cursor.fetchall())


# --- The billing page's reports ------------------------------------------------
#
# Day, model and status groupings read the exact daily rollup (a few rows per
# company and day, whatever the raw volume). Job and per-generation lists read
# the raw table through the covering index on (company_id, occurred_at), with
# the company's local day range converted to UTC instants (DST included).
# A tab's totals always come from the same source as its rows, so the rows of
# the table (and of the CSV) add up to the totals exactly.

ROLLUP_GROUPS = ("day", "model")
RAW_GROUPS = ("job", "generation")
TOTAL_FIELDS = (
    "generations",
    "questions",
    "prompt_tokens",
    "cached_prompt_tokens",
    "completion_tokens",
    "cost",
)


@dataclass(frozen=True)
class UsageFilters:
    """What the usage tab shows: local days [start, end], filters and grouping."""

    start: date
    end: date
    group: str = "day"
    model: str = ""
    job_id: uuid.UUID | None = None
    status: str = ""

    @property
    def reads_raw(self) -> bool:
        return self.group in RAW_GROUPS or self.job_id is not None


@dataclass(frozen=True)
class UsageTotals:
    generations: int = 0
    questions: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)

    @property
    def cost_per_question(self) -> Decimal | None:
        return self.cost / self.questions if self.questions else None


def local_range_utc(company: Company, start: date, end: date) -> tuple[datetime, datetime]:
    """[start 00:00, day after end 00:00) in the company's zone, as aware instants."""
    tz = company.tz
    return (
        datetime.combine(start, time.min, tzinfo=tz),
        datetime.combine(end + timedelta(days=1), time.min, tzinfo=tz),
    )


def _rollup_rows(company: Company, f: UsageFilters) -> QuerySet:
    rows = UsageDailyRollup.objects.filter(company=company, day__gte=f.start, day__lte=f.end)
    if f.model:
        rows = rows.filter(model=f.model)
    if f.status:
        rows = rows.filter(status=f.status)
    return rows


def _raw_rows(company: Company, f: UsageFilters) -> QuerySet:
    since, until = local_range_utc(company, f.start, f.end)
    rows = QuestionGenerationUsage.objects.filter(
        company=company, occurred_at__gte=since, occurred_at__lt=until
    )
    if f.model:
        rows = rows.filter(model=f.model)
    if f.status:
        rows = rows.filter(status=f.status)
    if f.job_id is not None:
        rows = rows.filter(job_id=f.job_id)
    return rows


def _sums(raw: bool) -> dict:
    """Aggregates named like the rollup's columns, over rollup or raw rows."""
    if not raw:
        return {name: Coalesce(Sum(name), 0) for name in TOTAL_FIELDS[:-1]} | {
            "cost": Coalesce(Sum("cost"), Value(Decimal(0)), output_field=AmountField())
        }
    return {
        "generations": Count("*"),
        "questions": Coalesce(Sum("question_count"), 0),
        "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
        "cached_prompt_tokens": Coalesce(Sum("cached_prompt_tokens"), 0),
        "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
        "cost": Coalesce(Sum("cost"), Value(Decimal(0)), output_field=AmountField()),
    }


def usage_totals(company: Company, f: UsageFilters) -> UsageTotals:
    """The usage tab's totals, from the same source as its rows."""
    rows = _raw_rows(company, f) if f.reads_raw else _rollup_rows(company, f)
    return UsageTotals(**rows.aggregate(**_sums(f.reads_raw)))


def usage_groups(company: Company, f: UsageFilters) -> QuerySet:
    """One dict per row of the usage table (or of its CSV), in display order."""
    if f.group == "generation":
        return generation_rows(company, f)
    if f.group == "job":
        # Grouped without joining jobs (an index-only scan of the covering
        # index); titles are looked up afterwards for the rows shown.
        draft = Case(When(job_id__isnull=True, then=F("draft_job_id")), default=Value(None))
        return (
            _raw_rows(company, f)
            .values("job_id")
            .annotate(draft=draft)
            .values("job_id", "draft")
            .annotate(**_sums(raw=True))
            .order_by("-cost", "job_id", "draft")
        )
    if f.job_id is not None:  # day or model of one job: group the raw rows
        key = {"day": F("occurred_on")} if f.group == "day" else {"model": F("model")}
        return (
            _raw_rows(company, f)
            .values(**key)
            .annotate(**_sums(raw=True))
            .values(*key, *TOTAL_FIELDS)
            .order_by(*key)
        )
    key = "day" if f.group == "day" else "model"
    return _rollup_rows(company, f).values(key).annotate(**_sums(raw=False)).order_by(key)


def usage_rows(
    company: Company, f: UsageFilters, *, limit: int | None = None, chunk_size: int = 2000
) -> Iterator[dict]:
    """The usage table's rows: the first `limit` for the page, or all of them streamed
    from a server-side cursor (the CSV), with job titles on the job grouping."""
    groups = usage_groups(company, f)
    rows = iter(groups[:limit]) if limit is not None else groups.iterator(chunk_size=chunk_size)
    if f.group == "job":
        return _with_job_titles(rows, chunk_size)
    return rows


def _with_job_titles(rows: Iterator[dict], chunk_size: int) -> Iterator[dict]:
    """Add `job__title` to grouped rows, one query per chunk of rows."""
    while chunk := list(islice(rows, chunk_size)):
        ids = {row["job_id"] for row in chunk if row["job_id"]}
        titles = dict(Job.objects.filter(pk__in=ids).values_list("pk", "title")) if ids else {}
        for row in chunk:
            row["job__title"] = titles.get(row["job_id"])
            yield row


def generation_rows(company: Company, f: UsageFilters) -> QuerySet:
    """Per-generation rows, oldest first (job drill-down and the generation grouping)."""
    return (
        _raw_rows(company, f)
        .order_by("occurred_at", "id")
        .values(
            "id",
            "occurred_at",
            "job_id",
            "job__title",
            "draft_job_id",
            "model",
            "status",
            "question_count",
            "prompt_tokens",
            "cached_prompt_tokens",
            "completion_tokens",
            "cost",
            "cost_source",
        )
    )


def daily_cost_by_model(company: Company, f: UsageFilters) -> list[tuple[date, str, Decimal]]:
    """(local day, model, cost) for the chart, oldest day first."""
    if f.job_id is not None:
        rows = (
            _raw_rows(company, f)
            .values_list("occurred_on", "model")
            .order_by("occurred_on", "model")
        )
    else:
        rows = _rollup_rows(company, f).values_list("day", "model").order_by("day", "model")
    return list(rows.annotate(total=_cost_sum(Q())))


def models_used(company: Company) -> list[str]:
    """Model names this company has usage for (for the filter's choices)."""
    return list(
        UsageDailyRollup.objects.filter(company=company)
        .order_by("model")
        .values_list("model", flat=True)
        .distinct()
    )


# --- Overview ----------------------------------------------------------------


@dataclass(frozen=True)
class DraftCost:
    generations: int = 0
    cost: Decimal = Decimal(0)


@dataclass(frozen=True)
class SpendOverview:
    month_start: date
    today: date
    this_month: Decimal
    last_month: Decimal
    last_month_same_period: Decimal
    forecast: Decimal
    pending: DraftCost
    abandoned: DraftCost


def previous_month_start(first: date) -> date:
    return (first - timedelta(days=1)).replace(day=1)


def spend_overview(company: Company, now: datetime | None = None) -> SpendOverview:
    """This month against last month, the month-end forecast, and draft costs."""
    local_now = timezone.localtime(now or timezone.now(), company.tz)
    today, first = local_now.date(), local_now.date().replace(day=1)
    last_first = previous_month_start(first)
    same_day = min(today.day, (first - timedelta(days=1)).day)
    per_period = UsageDailyRollup.objects.filter(
        company=company, day__gte=last_first, day__lte=today
    ).aggregate(
        this_month=_cost_sum(Q(day__gte=first)),
        last_month=_cost_sum(Q(day__lt=first)),
        last_same=_cost_sum(Q(day__lt=first, day__lte=last_first.replace(day=same_day))),
    )
    return SpendOverview(
        month_start=first,
        today=today,
        this_month=per_period["this_month"],
        last_month=per_period["last_month"],
        last_month_same_period=per_period["last_same"],
        forecast=_forecast(per_period["this_month"], local_now, first),
        **_draft_costs(company),
    )


def _cost_sum(condition: Q) -> Coalesce:
    return Coalesce(Sum("cost", filter=condition), Value(Decimal(0)), output_field=AmountField())


def _forecast(spent: Decimal, local_now: datetime, first: date) -> Decimal:
    """Straight-line projection of this month's spend to its last day."""
    next_first = (first + timedelta(days=32)).replace(day=1)
    month_seconds = Decimal((next_first - first).days * 86400)
    elapsed = Decimal(
        (local_now - datetime.combine(first, time.min, tzinfo=local_now.tzinfo)).total_seconds()
    )
    if elapsed <= 0:
        return spent
    return spent * month_seconds / elapsed


def _draft_costs(company: Company) -> dict[str, DraftCost]:
    rows = (
        UsageDailyRollup.objects.filter(company=company, status__in=["draft", "abandoned"])
        .values("status")
        .annotate(generations=Coalesce(Sum("generations"), 0), cost=_cost_sum(Q()))
        .order_by()
    )
    found = {row["status"]: DraftCost(row["generations"], row["cost"]) for row in rows}
    return {
        "pending": found.get("draft", DraftCost()),
        "abandoned": found.get("abandoned", DraftCost()),
    }


# --- Staff overview of all companies ----------------------------------------------

COMPANY_SORTS = {
    "name": ("name",),
    "balance": ("balance", "name"),
    "spend": ("month_spend", "name"),
    "pending": ("pending_cost", "name"),
    "low": ("is_low", "balance", "name"),
}


def companies_overview(
    *, now: datetime | None = None, search: str = "", sort: str = "name", descending: bool = False
) -> QuerySet:
    """All companies with balance, month-to-date spend and the low flag, sorted.

    Two queries whatever the number of companies: the distinct time zones, then
    one SELECT with a correlated subquery over the rollup (an index range scan
    on the company's buckets), which PostgreSQL runs only for the rows a page
    keeps. The pending-draft figures come from :func:`with_pending_drafts` for
    the page's rows, both in one scan; only sorting by them puts the pending
    cost in this SELECT (it must then be known for every company).
    """
    month_first, today = _month_bounds_by_zone(now or timezone.now())
    companies = Company.objects.annotate(month_first=month_first, today=today)
    if search:
        companies = companies.filter(Q(name__icontains=search) | Q(external_id__icontains=search))
    buckets = UsageDailyRollup.objects.filter(company=OuterRef("pk")).order_by().values("company")
    month = buckets.filter(day__gte=OuterRef("month_first"), day__lte=OuterRef("today"))
    companies = companies.annotate(
        balance=Coalesce("credit_balance__balance", Value(Decimal(0)), output_field=AmountField()),
        month_spend=_subquery_cost(month),
    ).annotate(is_low=Case(When(balance__lt=F("low_balance_threshold"), then=True), default=False))
    order = COMPANY_SORTS.get(sort, COMPANY_SORTS["name"])
    if "pending_cost" in order:
        companies = companies.annotate(pending_cost=_subquery_cost(buckets.filter(status="draft")))
    if descending:
        order = tuple(f"-{name}" for name in order[:-1]) + order[-1:]
    return companies.order_by(*order, "pk")


def with_pending_drafts(companies: list[Company]) -> list[Company]:
    """Set `pending_cost` and `pending_generations` on each company: one query for all.

    The two sums read the same draft buckets, so one grouped scan gives both;
    as two correlated subqueries in the page's SELECT they were most of its cost.
    """
    sums = (
        UsageDailyRollup.objects.filter(status="draft", company__in=[c.pk for c in companies])
        .order_by()
        .values("company")
        .annotate(cost=Sum("cost"), generations=Sum("generations"))
        .values_list("company", "cost", "generations")
    )
    found = {company_id: (cost, generations) for company_id, cost, generations in sums}
    for company in companies:
        cost, generations = found.get(company.pk, (None, None))
        company.pending_cost = Decimal(0) if cost is None else cost
        company.pending_generations = generations or 0
    return companies


def _subquery_cost(buckets: QuerySet) -> Coalesce:
    total = buckets.annotate(total=Sum("cost")).values("total")
    return Coalesce(Subquery(total), Value(Decimal(0)), output_field=AmountField())


def _month_bounds_by_zone(now: datetime) -> tuple[Case, Case]:
    """Per-company month start and today, as SQL CASEs over the companies' zones."""
    zones = Company.objects.order_by().values_list("timezone", flat=True).distinct()
    firsts, todays = [], []
    for zone in zones:
        try:
            today = timezone.localtime(now, zoneinfo.ZoneInfo(zone)).date()
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            continue  # a bad zone (the model validates it) shows no spend, not a 500
        firsts.append(When(timezone=zone, then=Value(today.replace(day=1))))
        todays.append(When(timezone=zone, then=Value(today)))
    fallback = Value(date(1, 1, 1))
    return (
        Case(*firsts, default=fallback, output_field=DateField()),
        Case(*todays, default=fallback, output_field=DateField()),
    )


# --- Credits tab -------------------------------------------------------------------


def ledger_rows(
    company: Company,
    *,
    kind: str = "",
    start: date | None = None,
    end: date | None = None,
) -> QuerySet:
    """The company's ledger, newest first, each with its running balance_after."""
    rows = LedgerEntry.objects.filter(company=company)
    if kind:
        rows = rows.filter(kind=kind)
    if start and end:
        since, until = local_range_utc(company, start, end)
        rows = rows.filter(created_at__gte=since, created_at__lt=until)
    return rows.select_related("actor").order_by("-id")


# --- CSV of every generation, written by PostgreSQL itself ---------------------------
#
# A million-row export spends most of its time turning rows into Python objects
# and back into text. COPY ... TO STDOUT writes the same CSV as
# usage.tables.csv_lines (same columns, same text for instants and amounts; a
# test compares the two byte for byte) straight from a streaming cursor.

_GENERATION_COPY = """
COPY (
    SELECT to_char(t.local, 'YYYY-MM-DD"T"HH24:MI:SS.US')
               || CASE WHEN t.off < interval '0' THEN '-' ELSE '+' END
               || to_char(CASE WHEN t.off < interval '0' THEN -t.off ELSE t.off END, 'HH24:MI')
               AS occurred_at,
           u.id, j.title AS job_title, u.job_id, u.draft_job_id, u.model, u.status,
           u.cost_source, u.question_count AS questions, u.prompt_tokens,
           u.cached_prompt_tokens, u.completion_tokens,
           round(u.cost, greatest(2, scale(trim_scale(u.cost)))) AS cost
      FROM question_generation_usage u
      LEFT JOIN usage_job j ON j.id = u.job_id
     CROSS JOIN LATERAL (
           SELECT u.occurred_at AT TIME ZONE %(tz)s AS local,
                  (u.occurred_at AT TIME ZONE %(tz)s) - (u.occurred_at AT TIME ZONE 'UTC') AS off
     ) t
     WHERE u.company_id = %(company)s AND u.occurred_at >= %(since)s AND u.occurred_at < %(until)s
           {filters}
     ORDER BY u.occurred_at, u.id
) TO STDOUT WITH (FORMAT csv, HEADER true)
"""


def generation_csv_copy(company: Company, f: UsageFilters) -> tuple[str, dict]:
    """The COPY statement and parameters for the generation grouping's CSV."""
    since, until = local_range_utc(company, f.start, f.end)
    params: dict = {"tz": company.timezone, "company": company.pk, "since": since, "until": until}
    filters = []
    for name, value in (("model", f.model), ("status", f.status), ("job_id", f.job_id)):
        if value:
            filters.append(f"AND u.{name} = %({name})s")
            params[name] = value
    return _GENERATION_COPY.format(filters=" ".join(filters)), params


# --- Pending drafts and usage that needs a price (admin) -----------------------------


def pending_drafts_by_company(*, limit: int = 200) -> list[dict]:
    """Per company: pending draft usage (job not saved or not yet linked), its cost.

    Reads the partial index of pending drafts only (job IS NULL), so it stays
    cheap however large the usage table grows. Largest backlog first.
    """
    rows = (
        QuestionGenerationUsage.objects.filter(job__isnull=True)
        .values("company_id", "company__name", "company__external_id")
        .annotate(
            rows=Count("id"),
            drafts=Count("draft_job_id", distinct=True),
            total_cost=Sum("cost"),
            abandoned_rows=Count("id", filter=Q(status=UsageStatus.ABANDONED)),
            unpriced_rows=Count("id", filter=Q(cost__isnull=True)),
            oldest=Min("occurred_at"),
        )
        .order_by("-rows", "company__name")
    )
    return list(rows[:limit])


def unpriced_usage_by_model() -> list[dict]:
    """Usage recorded without a price, per model (the partial `usage_unpriced` index)."""
    return list(
        QuestionGenerationUsage.objects.filter(cost_source=CostSource.UNPRICED)
        .values("model")
        .annotate(rows=Count("id"), first=Min("occurred_at"), last=Max("occurred_at"))
        .order_by("-rows", "model")
    )

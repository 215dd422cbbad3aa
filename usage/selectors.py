"""Reads over usage that are more than a one-line query."""

from __future__ import annotations

import uuid
import zoneinfo
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from itertools import islice

from django.conf import settings
from django.core.cache import cache
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

from billing.models import AmountField, APIKey, Company, CreditBalance, LedgerEntry
from billing.prices import Charge as PriceCharge
from billing.prices import charge_for
from core.sql import json_rows, recordset
from usage.models import CostSource, Job, QuestionGenerationUsage, UsageDailyRollup, UsageStatus
from usage.pricing import tokens_of


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
RAW_GROUPS = ("job", "generation", "key")
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
    api_key_id: int | None = None  # the key that sent it (the rollup has no key: raw rows)

    @property
    def reads_raw(self) -> bool:
        return self.group in RAW_GROUPS or self.job_id is not None or self.api_key_id is not None


@dataclass(frozen=True)
class UsageTotals:
    generations: int = 0
    questions: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal(0)  # of the priced and reported generations only
    unpriced: int = 0  # generations without a price yet: not in `cost`
    # Cost and questions of the generations that all have a cost (a rollup bucket
    # counts only when none of its generations is unpriced): cost per question
    # must not divide a cost that leaves some out by questions that do not.
    priced_cost: Decimal = Decimal(0)
    priced_questions: int = 0

    @property
    def cost_per_question(self) -> Decimal | None:
        return self.priced_cost / self.priced_questions if self.priced_questions else None


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
    if f.api_key_id is not None:
        rows = rows.filter(api_key_id=f.api_key_id)
    return rows


def _sums(raw: bool) -> dict:
    """Aggregates named like the rollup's columns, over rollup or raw rows."""
    if not raw:
        return {name: Coalesce(Sum(name), 0) for name in (*TOTAL_FIELDS[:-1], "unpriced")} | {
            "cost": Coalesce(Sum("cost"), Value(Decimal(0)), output_field=AmountField())
        }
    return {
        # Before "cost": once `cost` names the sum, `cost IS NULL` would mean the sum's.
        "unpriced": _unpriced_count(),
        "generations": Count("*"),
        "questions": Coalesce(Sum("question_count"), 0),
        "prompt_tokens": Coalesce(Sum("prompt_tokens"), 0),
        "cached_prompt_tokens": Coalesce(Sum("cached_prompt_tokens"), 0),
        "completion_tokens": Coalesce(Sum("completion_tokens"), 0),
        "cost": Coalesce(Sum("cost"), Value(Decimal(0)), output_field=AmountField()),
    }


def _unpriced_count() -> Coalesce:
    # Reads only `cost`, which the covering index holds (COUNT(id) would visit the heap).
    unpriced = Case(When(cost__isnull=True, then=Value(1)), default=Value(0))
    return Coalesce(Sum(unpriced), 0)


def usage_totals(company: Company, f: UsageFilters) -> UsageTotals:
    """The usage tab's totals, from the same source as its rows."""
    rows = _raw_rows(company, f) if f.reads_raw else _rollup_rows(company, f)
    priced = Q(cost__isnull=False) if f.reads_raw else Q(unpriced=0)
    question = "question_count" if f.reads_raw else "questions"
    return UsageTotals(
        **rows.aggregate(
            priced_cost=_cost_sum(priced),
            priced_questions=Coalesce(Sum(question, filter=priced), 0),
            **_sums(f.reads_raw),
        )
    )


# The columns each grouping's table may be sorted by (the page's column keys),
# its default order, and the unique key that breaks ties so pages never overlap.
SORTABLE = {
    "day": {"day", *TOTAL_FIELDS},
    "model": {"model", *TOTAL_FIELDS},
    "job": set(TOTAL_FIELDS),
    "key": set(TOTAL_FIELDS),
    "generation": {
        "occurred_at",
        "model",
        "status",
        "questions",
        "prompt_tokens",
        "cached_prompt_tokens",
        "completion_tokens",
        "cost",
    },
}
DEFAULT_SORT = {
    "day": ("day", False),
    "model": ("model", False),
    "job": ("cost", True),
    "key": ("cost", True),
    "generation": ("occurred_at", False),
}
TIE_BREAKERS = {
    "day": ("day",),
    "model": ("model",),
    "job": ("job_id", "draft"),
    "key": ("api_key_id",),
    "generation": ("occurred_at", "id"),
}


@dataclass(frozen=True)
class Sort:
    key: str
    descending: bool = False


def sort_for(group: str, key: str, descending: bool) -> Sort:
    """The requested sort if the grouping's table has that column, else its default."""
    if key in SORTABLE[group]:
        return Sort(key, descending)
    return Sort(*DEFAULT_SORT[group])


def _ordering(group: str, sort: Sort) -> list:
    field = "question_count" if group == "generation" and sort.key == "questions" else sort.key
    # Unpriced costs (NULL) sort after every priced one, whichever the direction.
    first = F(field).desc(nulls_last=True) if sort.descending else F(field).asc(nulls_last=True)
    return [first, *(name for name in TIE_BREAKERS[group] if name != field)]


def usage_groups(company: Company, f: UsageFilters, sort: Sort | None = None) -> QuerySet:
    """One dict per row of the usage table (or of its CSV), in display order."""
    order = _ordering(f.group, sort or Sort(*DEFAULT_SORT[f.group]))
    return _groups(company, f).order_by(*order)


def _groups(company: Company, f: UsageFilters) -> QuerySet:
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
        )
    if f.group == "key":  # names are looked up afterwards for the rows shown
        return _raw_rows(company, f).values("api_key_id").annotate(**_sums(raw=True))
    if f.reads_raw:  # day or model of one job or key: group the raw rows
        # `model` is the field itself (an expression of that name would clash with it).
        rows = _raw_rows(company, f)
        rows = rows.values(day=F("occurred_on")) if f.group == "day" else rows.values("model")
        name = "day" if f.group == "day" else "model"
        return rows.annotate(**_sums(raw=True)).values(name, *TOTAL_FIELDS, "unpriced")
    key = "day" if f.group == "day" else "model"
    return _rollup_rows(company, f).values(key).annotate(**_sums(raw=False))


def usage_rows(
    company: Company,
    f: UsageFilters,
    *,
    limit: int | None = None,
    offset: int = 0,
    sort: Sort | None = None,
    chunk_size: int = 2000,
) -> Iterator[dict]:
    """The usage table's rows: one page (`offset`, `limit`) for the page, or all of them
    streamed from a server-side cursor (the CSV), with job titles on the job grouping."""
    groups = usage_groups(company, f, sort)
    if limit is not None:
        rows = iter(groups[offset : offset + limit])
    else:
        rows = groups.iterator(chunk_size=chunk_size)
    if f.group == "job":
        return _with_job_titles(rows, chunk_size)
    if f.group == "key":
        return _with_key_names(rows, chunk_size)
    return rows


def _with_key_names(rows: Iterator[dict], chunk_size: int) -> Iterator[dict]:
    """Add `api_key__name` (never its prefix or secret) to rows grouped by key."""
    while chunk := list(islice(rows, chunk_size)):
        ids = {row["api_key_id"] for row in chunk if row["api_key_id"]}
        names = dict(APIKey.objects.filter(pk__in=ids).values_list("pk", "name")) if ids else {}
        for row in chunk:
            row["api_key__name"] = names.get(row["api_key_id"])
            yield row


def keys_for_filter(company: Company) -> list[tuple[int, str]]:
    """The keys the usage tab may filter by: the company's own and the platform's, by name."""
    keys = APIKey.objects.filter(Q(company=company) | Q(company__isnull=True))
    return list(keys.order_by("name", "pk").values_list("pk", "name"))


def _with_job_titles(rows: Iterator[dict], chunk_size: int) -> Iterator[dict]:
    """Add `job__title` to grouped rows, one query per chunk of rows."""
    while chunk := list(islice(rows, chunk_size)):
        ids = {row["job_id"] for row in chunk if row["job_id"]}
        titles = dict(Job.objects.filter(pk__in=ids).values_list("pk", "title")) if ids else {}
        for row in chunk:
            row["job__title"] = titles.get(row["job_id"])
            yield row


def generation_rows(company: Company, f: UsageFilters) -> QuerySet:
    """Per-generation rows (job drill-down and the generation grouping), unordered."""
    return _raw_rows(company, f).values(
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
        "prepaid",
    )


def daily_cost_by_model(company: Company, f: UsageFilters) -> list[tuple[date, str, Decimal, int]]:
    """(local day, model, cost, unpriced generations) for the chart, oldest day first."""
    if f.reads_raw:
        rows = (
            _raw_rows(company, f)
            .values_list("occurred_on", "model")
            .order_by("occurred_on", "model")
            .annotate(total=_cost_sum(Q()), unpriced=_unpriced_count())
        )
    else:
        rows = (
            _rollup_rows(company, f)
            .values_list("day", "model")
            .order_by("day", "model")
            .annotate(total=_cost_sum(Q()), unpriced=Coalesce(Sum("unpriced"), 0))
        )
    return list(rows)


@dataclass(frozen=True)
class Unpriced:
    """Generations of one model that have no price yet (so no cost in any total)."""

    model: str
    generations: int

    def __str__(self) -> str:
        noun = "generation" if self.generations == 1 else "generations"
        verb = "has" if self.generations == 1 else "have"
        return f"{self.generations:,} {noun} of {self.model} {verb} no price yet"


def unpriced_by_model(points: list[tuple[date, str, Decimal, int]]) -> list[Unpriced]:
    """The chart's points summed per model: what a total leaves out, most first."""
    counts: dict[str, int] = {}
    for _day, model, _cost, unpriced in points:
        if unpriced:
            counts[model] = counts.get(model, 0) + unpriced
    return [Unpriced(m, n) for m, n in sorted(counts.items(), key=lambda i: (-i[1], i[0]))]


def models_used(company: Company) -> list[str]:
    """Model names this company has usage for (for the filter's choices)."""
    return list(
        UsageDailyRollup.objects.filter(company=company)
        .order_by("model")
        .values_list("model", flat=True)
        .distinct()
    )


def unpriced_of(company: Company) -> list[Unpriced]:
    """The company's generations still without a price, per model (all time).

    Reads the company's rollup buckets that have any (the bucket index leads
    with the company), so it stays cheap however much usage there is.
    """
    rows = (
        UsageDailyRollup.objects.filter(company=company, unpriced__gt=0)
        .values_list("model")
        .annotate(n=Sum("unpriced"))
        .order_by("-n", "model")
    )
    return [Unpriced(model, n) for model, n in rows]


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


# --- Platform totals (the staff overview's head) -------------------------------------
#
# Credit outstanding and debt are sums over the balance rows (one per company).
# Spend reads the rollup's local days: "this month" is every company's days
# from the 1st of the UTC month on. Over every company that is a scan of two
# months of buckets (hundreds of thousands of rows at 10M usage rows, where
# the per-company page needs a few), so the totals are computed at most once
# per PLATFORM_TOTALS_CACHE_SECONDS and the page says when.

TREND_DAYS = 30
PLATFORM_TOTALS_KEY = "billing:platform-totals"


@dataclass(frozen=True)
class TrendPoint:
    day: date
    cost: Decimal


@dataclass(frozen=True)
class CurrencyTotals:
    currency: str
    credit_outstanding: Decimal = Decimal(0)  # unconsumed credit: sum of balance + debt
    debt: Decimal = Decimal(0)
    this_month: Decimal = Decimal(0)
    last_month: Decimal = Decimal(0)
    last_month_same_period: Decimal = Decimal(0)
    trend: tuple[TrendPoint, ...] = ()


@dataclass(frozen=True)
class PlatformTotals:
    as_of: datetime
    month_start: date
    trend_start: date
    today: date
    currencies: tuple[CurrencyTotals, ...]
    unpriced: tuple[Unpriced, ...]  # every generation still without a price, per model
    unpriced_by_company: dict  # company id -> generations without a price

    @property
    def unpriced_generations(self) -> int:
        return sum(u.generations for u in self.unpriced)


def platform_totals(now: datetime | None = None) -> PlatformTotals:
    """The platform's totals, from the cache when they are fresh enough."""
    seconds = settings.PLATFORM_TOTALS_CACHE_SECONDS
    if seconds <= 0:
        return compute_platform_totals(now)
    return cache.get_or_set(
        PLATFORM_TOTALS_KEY, lambda: compute_platform_totals(now), timeout=seconds
    )


def forget_platform_totals() -> None:
    """After a write the staff should see at once (a re-pricing)."""
    cache.delete(PLATFORM_TOTALS_KEY)


def compute_platform_totals(now: datetime | None = None) -> PlatformTotals:
    """Three queries: balances per currency, the rollup's last two months per day and
    currency, and the unpriced generations per company and model."""
    now = now or timezone.now()
    today = now.astimezone(UTC).date()
    first, trend_start = today.replace(day=1), today - timedelta(days=TREND_DAYS - 1)
    last_first = previous_month_start(first)
    same_day = last_first.replace(day=min(today.day, (first - timedelta(days=1)).day))
    totals: dict[str, dict] = defaultdict(lambda: {"trend": {}})
    balances = (
        CreditBalance.objects.values_list("company__currency")
        .annotate(outstanding=Sum(F("balance") + F("debt")), debt=Sum("debt"))
        .order_by()
    )
    for currency, outstanding, debt in balances:
        totals[currency].update(credit_outstanding=outstanding, debt=debt)
    days = (
        UsageDailyRollup.objects.filter(day__gte=min(last_first, trend_start))
        .values_list("company__currency", "day")
        .annotate(cost=Sum("cost"))
        .order_by()
    )
    for currency, day, cost in days:
        _add_day(totals[currency], day, cost, first=first, trend_start=trend_start, same=same_day)
    unpriced, by_company = _unpriced_everywhere()
    return PlatformTotals(
        as_of=now,
        month_start=first,
        trend_start=trend_start,
        today=today,
        currencies=tuple(_currency_totals(c, totals[c]) for c in sorted(totals)),
        unpriced=unpriced,
        unpriced_by_company=by_company,
    )


def _add_day(row: dict, day: date, cost: Decimal, *, first, trend_start, same) -> None:
    month = "this_month" if day >= first else "last_month"
    row[month] = row.get(month, Decimal(0)) + cost
    if day < first and day <= same:
        row["last_month_same_period"] = row.get("last_month_same_period", Decimal(0)) + cost
    if day >= trend_start:
        row["trend"][day] = row["trend"].get(day, Decimal(0)) + cost


def _currency_totals(currency: str, row: dict) -> CurrencyTotals:
    trend = tuple(TrendPoint(day, cost) for day, cost in sorted(row.pop("trend").items()))
    return CurrencyTotals(currency=currency, trend=trend, **row)


def _unpriced_everywhere() -> tuple[tuple[Unpriced, ...], dict]:
    """Read through the partial index of unpriced usage: cheap while prices keep up."""
    rows = (
        QuestionGenerationUsage.objects.filter(cost_source=CostSource.UNPRICED)
        .values_list("company_id", "model")
        .annotate(n=Count("*"))
        .order_by()
    )
    per_model: dict[str, int] = defaultdict(int)
    per_company: dict = defaultdict(int)
    for company_id, model, n in rows:
        per_model[model] += n
        per_company[company_id] += n
    ordered = sorted(per_model.items(), key=lambda item: (-item[1], item[0]))
    return tuple(Unpriced(m, n) for m, n in ordered), dict(per_company)


# --- Credits tab -------------------------------------------------------------------


# The ledger sorts by when (its id: entries are numbered in posting order) or amount.
LEDGER_SORTS = {"when": "id", "amount": "amount"}


def ledger_sort(key: str, descending: bool) -> Sort:
    """The requested ledger order, else newest first."""
    return Sort(key, descending) if key in LEDGER_SORTS else Sort("when", True)


def ledger_rows(
    company: Company,
    *,
    kind: str = "",
    start: date | None = None,
    end: date | None = None,
    sort: Sort = Sort("when", True),
) -> QuerySet:
    """The company's ledger, newest first unless sorted, each with its balance_after."""
    rows = LedgerEntry.objects.filter(company=company)
    if kind:
        rows = rows.filter(kind=kind)
    if start and end:
        since, until = local_range_utc(company, start, end)
        rows = rows.filter(created_at__gte=since, created_at__lt=until)
    field = LEDGER_SORTS[sort.key]
    order = [f"-{field}" if sort.descending else field]
    if field != "id":
        order.append("-id")
    return rows.select_related("actor").order_by(*order)


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
    named = (("model", f.model), ("status", f.status), ("job_id", f.job_id))
    for name, value in (*named, ("api_key_id", f.api_key_id)):
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
        .values("company_id", "company__name", "company__external_id", "company__currency")
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


# --- Explaining one charge ------------------------------------------------------------


@dataclass(frozen=True)
class ChargeLine:
    """One priced dimension of a generation: tokens x the rate per million tokens."""

    label: str
    tokens: int
    rate: Decimal | None  # per million tokens; None when nothing here priced it
    cost: Decimal | None


@dataclass(frozen=True)
class Charge:
    usage: QuestionGenerationUsage
    lines: list[ChargeLine]
    total: Decimal | None  # the sum of the lines (== usage.cost for a priced row)
    note: str  # how the cost came about, for a reader

    @property
    def per_question(self) -> Decimal | None:
        questions = self.usage.question_count
        return self.total / questions if self.total is not None and questions else None


DIMENSION_LABELS = {
    "input": "Uncached input tokens",
    "cache_read": "Cache reads",
    "cache_write_5m": "Cache writes (5 minutes)",
    "cache_write_1h": "Cache writes (1 hour)",
    "output": "Output tokens",
    "reasoning": "Reasoning tokens",
}


ALWAYS_SHOWN = ("input", "cache_read", "output")


def charge_lines(usage: QuestionGenerationUsage) -> Charge:
    """What a generation cost, dimension by dimension, at the price period that priced it.

    The lines are billing.prices.charge_for's (the one computation of a cost,
    as recording and reprice_usage make it), labelled for a reader; a cache
    write or reasoning dimension with no tokens is left out. A reported or
    unpriced cost has no lines, only its note.
    """
    if usage.cost_source != CostSource.PRICED or usage.price is None:
        return Charge(usage=usage, lines=[], total=usage.cost, note=_charge_note(usage, None))
    charge = charge_for(usage.price, tokens_of(usage))
    lines = [
        ChargeLine(
            DIMENSION_LABELS[line.dimension], line.tokens, line.rate_per_million, line.amount
        )
        for line in charge.lines
        if line.tokens or line.dimension in ALWAYS_SHOWN
    ]
    return Charge(usage=usage, lines=lines, total=charge.total, note=_charge_note(usage, charge))


def _charge_note(usage: QuestionGenerationUsage, charge: PriceCharge | None) -> str:
    if usage.cost_source == CostSource.UNPRICED:
        return (
            f"No price of {usage.model} covered this generation when it was recorded: it has "
            "no cost and no debit yet. It is priced and debited once platform staff add the "
            "price and reprice."
        )
    if usage.cost_source == CostSource.REPORTED:
        return "The caller reported this cost with the generation; no price table priced it."
    note = f"Priced at the {usage.model} price in effect when it occurred"
    if charge is not None and charge.service_tier != "standard":
        note += f", {charge.service_tier} tier"
    note += "."
    if charge is not None and charge.long_context:
        note += (
            f" Its prompt exceeded {charge.long_context_threshold:,} tokens: the long-context"
            " rates apply to the whole request."
        )
    if usage.prepaid:
        note += " Imported history paid for outside this system: it carries no debit."
    return note


def charge_entries(usage: QuestionGenerationUsage) -> list[LedgerEntry]:
    """The generation's debit and any corrections, oldest first, with balance_after."""
    return list(
        LedgerEntry.objects.filter(company_id=usage.company_id, usage_id=usage.pk).order_by("id")
    )

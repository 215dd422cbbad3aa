"""The billing pages: the staff overview and each company's overview/usage/credits tabs.

Thin: every view gets its company from usage.access.company_for (the one
tenant check), parses GET parameters with usage.forms, reads through
usage.selectors and renders. The usage tab's CSV is streamed from a
server-side cursor so that a million rows keep memory flat.
"""

from __future__ import annotations

import csv
import functools
import io
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.db import connections, router, transaction
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from billing.models import Company, Statement, StatementLine
from billing.selectors import credit_summary
from config.routers import use_replica
from core.errors import InvalidInput
from usage import selectors, statements
from usage.access import company_for, is_platform_staff, visible_companies
from usage.budgets import budget_use
from usage.charts import daily_stacked_chart, spend_trend_chart
from usage.forms import CreditFilterForm, UsageFilterForm, form_error_fields
from usage.models import Job, QuestionGenerationUsage
from usage.selectors import previous_month_start
from usage.tables import WEB_COLUMNS, Links, csv_chunks, csv_lines, html_cells, normalise, rows_html

TABS = [
    ("overview", "Overview"),
    ("usage", "Usage"),
    ("credits", "Credits"),
    ("statements", "Statements"),
]
PAGE_ROWS = 100
ONE_DAY = timedelta(days=1)
LEDGER_ROWS = 100
CSV_CHUNK = 5000
STAFF_PAGE = 50


@login_required
@require_GET
def billing_home(request: HttpRequest) -> HttpResponse:
    """Staff get the list of companies; a company's members go to their company."""
    if is_platform_staff(request.user):
        return staff_overview(request)
    companies = list(visible_companies(request.user).order_by("name")[:50])
    if len(companies) == 1:
        return redirect("billing:company", company_id=companies[0].pk)
    return render(request, "billing/choose_company.html", {"companies": companies})


@use_replica()
def staff_overview(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()[:100]
    sort = request.GET.get("sort", "name")
    sort = sort if sort in selectors.COMPANY_SORTS else "name"
    descending = request.GET.get("dir") == "desc"
    page = _page_number(request)
    rows = selectors.companies_overview(search=search, sort=sort, descending=descending)
    # One row more than the page shows, to know whether there is a next page
    # without counting every company.
    companies = list(rows[(page - 1) * STAFF_PAGE : page * STAFF_PAGE + 1])
    platform = selectors.platform_totals()
    context = {
        "platform": platform,
        "trends": _trend_charts(platform),
        "companies": selectors.with_pending_drafts(companies[:STAFF_PAGE]),
        "search": search,
        "sort": sort,
        "descending": descending,
        "page": page,
        "has_next": len(companies) > STAFF_PAGE,
        "base_query": urlencode({"q": search, "sort": sort, "dir": "desc" if descending else ""}),
    }
    return render(request, "billing/staff_overview.html", context)


def _trend_charts(platform: selectors.PlatformTotals) -> list[dict]:
    span = {"start": platform.trend_start, "end": platform.today}
    return [
        {
            "totals": totals,
            "chart": spend_trend_chart(totals.trend, currency=totals.currency, **span),
            "chart_narrow": spend_trend_chart(
                totals.trend, currency=totals.currency, narrow=True, **span
            ),
        }
        for totals in platform.currencies
    ]


@login_required
@require_GET
def company_page(request: HttpRequest, company_id: str) -> HttpResponse:
    company = company_for(request.user, company_id)
    tab = request.GET.get("tab", "overview")
    builders = {
        "overview": _overview,
        "usage": _usage,
        "credits": _credits,
        "statements": _statements,
    }
    if tab not in builders:
        tab = "overview"
    with use_replica():  # reports only read: a replica, when configured, serves them
        return _render_tab(request, company, tab, builders[tab])


@login_required
@require_GET
def charge_page(request: HttpRequest, company_id: str, usage_id: uuid.UUID) -> HttpResponse:
    """One generation's charge: its tokens x the rates that priced it, its debit, the
    running balance after it. Another company's generation is a 404."""
    company = company_for(request.user, company_id)
    with use_replica():
        usage = (
            QuestionGenerationUsage.objects.filter(company=company, pk=usage_id)
            .select_related("job", "price")
            .first()
        )
        if usage is None:
            raise Http404("No such generation.")
        context = {
            "company": company,
            "charge": selectors.charge_lines(usage),
            "entries": selectors.charge_entries(usage),
            "is_staff_view": is_platform_staff(request.user),
            "back": _back_link(request, company),
        }
        with timezone.override(company.tz):
            return render(request, "billing/charge.html", context)


def _back_link(request: HttpRequest, company: Company) -> str:
    """Back to the page the reader came from, if it is this company's billing page."""
    page = reverse("billing:company", args=[company.pk])
    referer = request.headers.get("referer", "")
    host_page = request.build_absolute_uri(page)
    return referer if referer.startswith(host_page + "?") else f"{page}?tab=usage"


def _render_tab(request: HttpRequest, company: Company, tab: str, builder) -> HttpResponse:
    context = builder(request, company)
    if isinstance(context, HttpResponseBase):
        return context
    context.update(
        company=company,
        tab=tab,
        tabs=TABS,
        is_staff_view=is_platform_staff(request.user),
    )
    with timezone.override(company.tz):
        return render(request, f"billing/tab_{tab}.html", context)


def _overview(request: HttpRequest, company: Company) -> dict:
    summary = credit_summary(company)
    spend = selectors.spend_overview(company)
    warnings = []
    if summary.balance < company.low_balance_threshold:
        warnings.append(
            "The balance is below the low-balance threshold. Buy credit to keep generating."
        )
    if summary.balance <= -company.overdraft_allowance:
        warnings.append("The balance has reached the overdraft allowance: new generations stop.")
    limit = company.monthly_spend_limit
    if limit is not None and spend.this_month >= limit:
        warnings.append("This month's spend limit is reached: new generations stop.")
    elif limit is not None and spend.forecast > limit:
        warnings.append("At this pace, this month's spend will pass the monthly limit.")
    return {
        "summary": summary,
        "spend": spend,
        "warnings": warnings,
        "unpriced": selectors.unpriced_of(company),
        "budget": budget_use(company),
    }


def _usage(request: HttpRequest, company: Company) -> dict | HttpResponseBase:
    today = timezone.localtime(timezone.now(), company.tz).date()
    models = selectors.models_used(company)
    keys = functools.cache(functools.partial(selectors.keys_for_filter, company))  # read once
    form = UsageFilterForm(request.GET, today=today, models=models, keys=keys, auto_id="usage-%s")
    filters = form.filters()
    job = None
    if filters.job_id is not None:
        # A job of another company is a 404, exactly like its company page.
        job = Job.objects.filter(pk=filters.job_id, company=company).first()
        if job is None:
            raise Http404("No such job.")
    if request.GET.get("format") == "csv":
        if form.errors:  # a file of another period than asked for would mislead
            raise InvalidInput("Invalid filters.", fields=form_error_fields(form))
        return _usage_csv(company, filters)
    totals = selectors.usage_totals(company, filters)
    empty_month = None
    if not form.chose_period() and not totals.generations and job is None:
        empty_month, filters, totals = _last_month_instead(company, filters, totals)
    return {
        "form": form.shown_with(filters.start, filters.end, _preset_shown(form, empty_month)),
        "filters": filters,
        "empty_month": empty_month,
        "job": job,
        "totals": totals,
        **_usage_table(request, company, filters, totals),
        **_usage_chart(company, filters),
        "csv_query": _with(_without(request.GET, "format", "page", "sort", "dir"), format="csv"),
        "range_query": _range_query(filters),
    }


def _last_month_instead(company: Company, filters: selectors.UsageFilters, totals):
    """This month has nothing yet (the 1st, say): last month, if it has usage, with the
    empty month to say so; else this month as it is. One query more, only then."""
    earlier = replace(
        filters, start=previous_month_start(filters.start), end=filters.start - ONE_DAY
    )
    earlier_totals = selectors.usage_totals(company, earlier)
    if not earlier_totals.generations:
        return None, filters, totals
    return filters, earlier, earlier_totals


def _preset_shown(form: UsageFilterForm, empty_month) -> str | None:
    if empty_month is not None:
        return "last_month"
    return None if form.chose_period() else "this_month"


def _usage_table(
    request: HttpRequest, company: Company, filters: selectors.UsageFilters, totals
) -> dict:
    """One page of the table, sorted as asked, with its headers and page links."""
    sort = selectors.sort_for(
        filters.group, request.GET.get("sort", ""), request.GET.get("dir") == "desc"
    )
    page = _page_number(request)
    found = selectors.usage_rows(
        company, filters, limit=PAGE_ROWS + 1, offset=(page - 1) * PAGE_ROWS, sort=sort
    )
    rows = [normalise(row) for row in found]
    columns = WEB_COLUMNS[filters.group]
    links = Links(
        drill_query=_range_query(filters),
        charge_base=reverse("billing:company", args=[company.pk]),
    )
    cells = [
        html_cells(row, columns, currency=company.currency, tz=company.tz, links=links)
        for row in rows[:PAGE_ROWS]
    ]
    query = _without(request.GET, "format")
    # The generation grouping has one row per generation, so its page count is known.
    pages = -(-totals.generations // PAGE_ROWS) if filters.group == "generation" else None
    return {
        "columns": columns,
        "headers": [_header(column, filters.group, sort, query) for column in columns],
        "rows": rows[:PAGE_ROWS],
        "rows_html": rows_html(cells, columns),
        "page": page,
        "pages": pages,
        "first_row": (page - 1) * PAGE_ROWS + 1,
        "last_row": (page - 1) * PAGE_ROWS + len(cells),
        "next_query": _with(query, page=page + 1) if len(rows) > PAGE_ROWS else "",
        "previous_query": _with(query, page=page - 1) if page > 1 else "",
        "first_query": _with(query, page=1),
    }


def _header(column, group: str, sort: selectors.Sort, query) -> dict:
    """A column header: its sort link (numbers sort largest first), and aria-sort."""
    header = {"column": column, "href": "", "aria_sort": ""}
    if column.key not in selectors.SORTABLE[group]:
        return header
    if sort.key == column.key:
        header["aria_sort"] = "descending" if sort.descending else "ascending"
        descending = not sort.descending
    else:
        descending = column.numeric
    changes = {"sort": column.key, "dir": "desc" if descending else "asc"}
    header["href"] = "?" + _with(_without(query, "page"), **changes)
    return header


def _usage_chart(company: Company, filters: selectors.UsageFilters) -> dict:
    points = selectors.daily_cost_by_model(company, filters)
    chart = {"currency": company.currency, "start": filters.start, "end": filters.end}
    return {
        "chart": daily_stacked_chart(points, **chart),
        "chart_narrow": daily_stacked_chart(points, narrow=True, **chart),
        "unpriced": selectors.unpriced_by_model(points),
    }


def _usage_csv(company: Company, filters: selectors.UsageFilters) -> StreamingHttpResponse:
    if filters.group == "generation":
        chunks = _copy_chunks(*selectors.generation_csv_copy(company, filters))
    else:
        rows = selectors.usage_rows(company, filters, chunk_size=CSV_CHUNK)
        chunks = csv_chunks(csv_lines(filters.group, rows, company.tz))
    response = StreamingHttpResponse(_on_replica(chunks), content_type="text/csv; charset=utf-8")
    name = f"usage-{company.pk}-{filters.start}-{filters.end}-by-{filters.group}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _on_replica(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The CSV is produced while the response streams, after the view returned:
    its reads opt in to the replica there, in one read transaction. The
    transaction is what lets the server-side cursor of `.iterator()` stream a
    million rows with flat memory through PgBouncer's transaction pooling: a
    cursor lives in its transaction, which keeps one server connection. (Inside a
    caller's transaction it joins that one: it only reads, there is nothing to
    roll back alone.)"""
    with use_replica():
        alias = router.db_for_read(QuestionGenerationUsage)
        with transaction.atomic(using=alias, savepoint=False):
            yield from chunks


def _copy_chunks(sql: str, params: dict) -> Iterator[bytes]:
    """Stream PostgreSQL's COPY ... TO STDOUT output in chunks of about 64 KB."""
    buffer = bytearray()
    alias = router.db_for_read(QuestionGenerationUsage)
    with connections[alias].cursor() as cursor:
        with cursor.cursor.copy(sql, params) as copy:
            for block in copy:
                buffer += block
                if len(buffer) >= 65536:
                    yield bytes(buffer)
                    buffer.clear()
    if buffer:
        yield bytes(buffer)


def _credits(request: HttpRequest, company: Company) -> dict:
    today = timezone.localtime(timezone.now(), company.tz).date()
    form = CreditFilterForm(request.GET, today=today, auto_id="credits-%s")
    valid = form.is_valid()
    data = form.cleaned_data if valid else {}
    page = _page_number(request)
    sort = selectors.ledger_sort(request.GET.get("sort", ""), request.GET.get("dir") == "desc")
    rows = selectors.ledger_rows(
        company,
        kind=data.get("kind") or "",
        start=data.get("start"),
        end=data.get("end"),
        sort=sort,
    )
    entries = list(rows[(page - 1) * LEDGER_ROWS : page * LEDGER_ROWS + 1])
    query = request.GET.copy()
    return {
        "form": form,
        "summary": credit_summary(company),
        "unpriced": selectors.unpriced_of(company),
        "entries": entries[:LEDGER_ROWS],
        "headers": _ledger_headers(sort, query),
        "page": page,
        "first_row": (page - 1) * LEDGER_ROWS + 1,
        "last_row": (page - 1) * LEDGER_ROWS + len(entries[:LEDGER_ROWS]),
        "rows": entries,
        "next_query": _with(query, page=page + 1) if len(entries) > LEDGER_ROWS else "",
        "previous_query": _with(query, page=page - 1) if page > 1 else "",
        "charge_base": reverse("billing:company", args=[company.pk]),
    }


ISSUED_SHOWN = 120  # ten years of months


def _statements(request: HttpRequest, company: Company) -> dict:
    issued = list(
        Statement.objects.filter(company=company).order_by("-month").defer("company")[:ISSUED_SHOWN]
    )
    return {
        "issued": issued,
        "unissued": [built.statement for built in statements.unissued_statements(company)],
    }


@login_required
@require_GET
def statement_page(request: HttpRequest, company_id: str, month: str) -> HttpResponse:
    """One month's statement, printable: the issued one, else the month so far (live)."""
    company = company_for(request.user, company_id)
    built = _statement_or_404(company, month)
    context = {
        "company": company,
        "built": built,
        "statement": built.statement,
        "movements": statements.movement_rows(built.statement),
        "sections": {name: built.section(name) for name in StatementLine.Section.values},
        "is_staff_view": is_platform_staff(request.user),
    }
    with timezone.override(company.tz):
        return render(request, "billing/statement.html", context)


@login_required
@require_GET
def statement_csv(request: HttpRequest, company_id: str, month: str) -> HttpResponse:
    """The statement as CSV, every amount exact."""
    company = company_for(request.user, company_id)
    built = _statement_or_404(company, month)
    out = io.StringIO()
    csv.writer(out).writerows(statements.csv_rows(built))
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    state = "" if built.issued else "-open"
    name = f"statement-{company.pk}-{built.statement.month:%Y-%m}{state}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _statement_or_404(company: Company, month: str) -> statements.Built:
    try:
        first = statements.parse_month(month)
    except ValueError:
        raise Http404("No such month.")
    with use_replica():
        built = statements.statement_for(company, first)
    if built is None:
        raise Http404("No statement for this month.")
    return built


def _ledger_headers(sort: selectors.Sort, query) -> dict:
    """The ledger's sortable columns (When, Amount): their links and aria-sort."""
    headers = {}
    for key in selectors.LEDGER_SORTS:
        current = sort.key == key
        descending = not sort.descending if current else True
        headers[key] = {
            "href": "?"
            + _with(_without(query, "page"), sort=key, dir="desc" if descending else "asc"),
            "aria_sort": ("descending" if sort.descending else "ascending") if current else "",
        }
    return headers


def _page_number(request: HttpRequest) -> int:
    try:
        return max(1, min(int(request.GET.get("page", 1)), 10_000))
    except ValueError:
        return 1


def _without(query, *names):
    query = query.copy()
    for name in names:
        query.pop(name, None)
    return query


def _with(query, **changes) -> str:
    query = query.copy()
    for key, value in changes.items():
        query[key] = value
    return query.urlencode()


def _range_query(filters: selectors.UsageFilters) -> str:
    return urlencode({"tab": "usage", "from": filters.start, "to": filters.end})

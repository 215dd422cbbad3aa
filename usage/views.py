"""The billing pages: the staff overview and each company's overview/usage/credits tabs.

Thin: every view gets its company from usage.access.company_for (the one
tenant check), parses GET parameters with usage.forms, reads through
usage.selectors and renders. The usage tab's CSV is streamed from a
server-side cursor so that a million rows keep memory flat.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.db import connections, router, transaction
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from billing.models import Company
from billing.selectors import credit_summary
from config.routers import use_replica
from usage import selectors
from usage.access import company_for, is_platform_staff, visible_companies
from usage.charts import daily_stacked_chart
from usage.forms import CreditFilterForm, UsageFilterForm
from usage.models import Job, QuestionGenerationUsage
from usage.tables import COLUMNS, csv_chunks, csv_lines, html_cells, normalise, rows_html

TABS = [("overview", "Overview"), ("usage", "Usage"), ("credits", "Credits")]
PAGE_ROWS = 300
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
    context = {
        "companies": selectors.with_pending_drafts(companies[:STAFF_PAGE]),
        "search": search,
        "sort": sort,
        "descending": descending,
        "page": page,
        "has_next": len(companies) > STAFF_PAGE,
        "base_query": urlencode({"q": search, "sort": sort, "dir": "desc" if descending else ""}),
    }
    return render(request, "billing/staff_overview.html", context)


@login_required
@require_GET
def company_page(request: HttpRequest, company_id: str) -> HttpResponse:
    company = company_for(request.user, company_id)
    tab = request.GET.get("tab", "overview")
    builders = {"overview": _overview, "usage": _usage, "credits": _credits}
    if tab not in builders:
        tab = "overview"
    with use_replica():  # reports only read: a replica, when configured, serves them
        return _render_tab(request, company, tab, builders[tab])


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
    return {"summary": summary, "spend": spend, "warnings": warnings}


def _usage(request: HttpRequest, company: Company) -> dict | HttpResponseBase:
    today = timezone.localtime(timezone.now(), company.tz).date()
    form = UsageFilterForm(
        request.GET, today=today, models=selectors.models_used(company), auto_id="usage-%s"
    )
    filters = form.filters()
    job = None
    if filters.job_id is not None:
        # A job of another company is a 404, exactly like its company page.
        job = Job.objects.filter(pk=filters.job_id, company=company).first()
        if job is None:
            raise Http404("No such job.")
    if request.GET.get("format") == "csv":
        return _usage_csv(company, filters)
    rows = [normalise(row) for row in selectors.usage_rows(company, filters, limit=PAGE_ROWS + 1)]
    chart_points = selectors.daily_cost_by_model(company, filters)
    query = request.GET.copy()
    query.pop("format", None)
    columns = COLUMNS[filters.group]
    range_query = _range_query(filters)
    cells = [
        html_cells(row, columns, currency=company.currency, tz=company.tz, drill_query=range_query)
        for row in rows[:PAGE_ROWS]
    ]
    return {
        "form": form,
        "filters": filters,
        "job": job,
        "totals": selectors.usage_totals(company, filters),
        "columns": columns,
        "rows": rows[:PAGE_ROWS],
        "rows_html": rows_html(cells),
        "truncated": len(rows) > PAGE_ROWS,
        "chart": daily_stacked_chart(chart_points, filters.start, filters.end, company.currency),
        "csv_query": _with(query, format="csv"),
        "range_query": range_query,
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
    rows = selectors.ledger_rows(
        company, kind=data.get("kind") or "", start=data.get("start"), end=data.get("end")
    )
    entries = list(rows[(page - 1) * LEDGER_ROWS : page * LEDGER_ROWS + 1])
    query = request.GET.copy()
    return {
        "form": form,
        "summary": credit_summary(company),
        "entries": entries[:LEDGER_ROWS],
        "page": page,
        "next_query": _with(query, page=page + 1) if len(entries) > LEDGER_ROWS else "",
        "previous_query": _with(query, page=page - 1) if page > 1 else "",
    }


def _page_number(request: HttpRequest) -> int:
    try:
        return max(1, min(int(request.GET.get("page", 1)), 10_000))
    except ValueError:
        return 1


def _with(query, **changes) -> str:
    query = query.copy()
    for key, value in changes.items():
        query[key] = value
    return query.urlencode()


def _range_query(filters: selectors.UsageFilters) -> str:
    return urlencode({"tab": "usage", "from": filters.start, "to": filters.end})

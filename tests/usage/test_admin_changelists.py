"""Big-table admin changelists: few queries, no full COUNT(*), filters still work."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.admin_paging import CappedCountPaginator
from tests.conftest import give_credit, make_company, make_price, make_usage

pytestmark = pytest.mark.django_db
USAGE = "/admin/usage/questiongenerationusage/"
# A count whose FROM is the table itself, not a capped (LIMIT) subquery.
FULL_COUNT = re.compile(r'SELECT COUNT\(\*\) AS "__count" FROM "question_generation_usage"', re.I)


# ...except the "needs a price" count, which reads only the partial index usage_unpriced.
UNPRICED_COUNT = """"question_generation_usage"."cost_source" = 'unpriced'"""


def full_counts(queries) -> list[str]:
    return [
        q["sql"]
        for q in queries
        if FULL_COUNT.search(q["sql"]) and not q["sql"].rstrip().endswith(UNPRICED_COUNT)
    ]


@pytest.mark.parametrize("query", ["", "?company__id__exact={company}", "?needs_price=yes"])
def test_usage_changelist_never_counts_the_whole_table(
    staff_client, company, price, query, django_assert_max_num_queries
):
    for _ in range(5):
        make_usage(company)
    make_usage(company, model="no-price-yet")
    with django_assert_max_num_queries(8), CaptureQueriesContext(connection) as ctx:
        response = staff_client.get(USAGE + query.format(company=company.pk))
    assert response.status_code == 200
    assert full_counts(ctx.captured_queries) == []
    assert not any("DISTINCT" in q["sql"] and "date_trunc" in q["sql"].lower() for q in ctx)
    expected = 1 if "needs_price" in query else 6
    assert len(response.context["cl"].result_list) == expected
    assert f"{expected:,} question generation usage" in response.content.decode()


def test_model_filter_lists_priced_and_unpriced_models_and_filters(staff_client, company, price):
    make_price("gpt-unused")
    make_usage(company)
    make_usage(company, model="no-price-yet")
    response = staff_client.get(USAGE)
    spec = next(f for f in response.context["cl"].filter_specs if f.title == "model")
    assert [value for value, _ in spec.lookup_choices] == ["gpt-test", "gpt-unused", "no-price-yet"]
    filtered = staff_client.get(USAGE + "?model=no-price-yet")
    assert [u.model for u in filtered.context["cl"].result_list] == ["no-price-yet"]


def test_capped_count_says_more_than_when_filtered(staff_client, company, price, monkeypatch):
    monkeypatch.setattr(CappedCountPaginator, "cap", 2)
    for _ in range(4):
        make_usage(company)
    response = staff_client.get(f"{USAGE}?company__id__exact={company.pk}")
    paginator = response.context["cl"].paginator
    assert (paginator.count, paginator.exact) == (3, False)
    assert "more than 2 question generation usage" in response.content.decode()
    assert len(response.context["cl"].result_list) == 4  # one page of list_per_page


def test_unfiltered_count_past_the_cap_is_the_planner_estimate(
    staff_client, company, price, monkeypatch
):
    monkeypatch.setattr(CappedCountPaginator, "cap", 2)
    for _ in range(4):
        make_usage(company)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE question_generation_usage")
    with CaptureQueriesContext(connection) as ctx:
        response = staff_client.get(USAGE)
    assert full_counts(ctx.captured_queries) == []
    paginator = response.context["cl"].paginator
    assert paginator.estimated and paginator.count == 4
    assert "about 4 question generation usage" in response.content.decode()


def test_small_results_are_counted_exactly(company, price):
    from usage.models import QuestionGenerationUsage

    make_usage(company)
    paginator = CappedCountPaginator(QuestionGenerationUsage.objects.all(), 100)
    assert (paginator.count, paginator.exact, paginator.count_label) == (1, True, "1")


@pytest.mark.parametrize(
    "url",
    [
        "/admin/billing/ledgerentry/",
        "/admin/billing/ledgerentry/?kind__exact=purchase",
        "/admin/usage/usagedailyrollup/",
        "/admin/usage/usagedailyrollup/?model=gpt-test",
        "/admin/billing/auditevent/",
    ],
)
def test_other_big_changelists_use_capped_counts(
    staff_client, company, price, url, django_assert_max_num_queries
):
    give_credit(company)
    make_usage(company)
    with django_assert_max_num_queries(8), CaptureQueriesContext(connection) as ctx:
        response = staff_client.get(url)
    assert response.status_code == 200
    assert isinstance(response.context["cl"].paginator, CappedCountPaginator)
    counts = [q["sql"] for q in ctx if re.search(r"SELECT COUNT\(\*\)", q["sql"], re.I)]
    assert counts and all("LIMIT" in sql.upper() for sql in counts)
    assert not any("date_trunc" in q["sql"].lower() for q in ctx)


def test_status_filter_reads_pending_rows_through_the_pending_index(staff_client, company, price):
    make_usage(company, draft_job_id="still-open")
    with CaptureQueriesContext(connection) as ctx:
        response = staff_client.get(USAGE + "?status__exact=draft")
    assert [u.draft_job_id for u in response.context["cl"].result_list] == ["still-open"]
    listed = [
        q["sql"] for q in ctx if q["sql"].startswith('SELECT "question_generation_usage"."id"')
    ]
    assert listed and '"question_generation_usage"."job_id" IS NULL' in listed[0]


def test_facets_are_never_offered_on_big_changelists(staff_client, company, price):
    make_usage(company)
    with CaptureQueriesContext(connection) as ctx:
        response = staff_client.get(USAGE + "?_facets=True")
    assert response.status_code == 200
    assert not any('COUNT("question_generation_usage"."id") FILTER' in q["sql"] for q in ctx)


def test_searching_a_company_external_id_or_name_shows_its_usage(staff_client):
    make_price()
    mine = make_company(name="Acme Hiring", external_id="org_acme_search")
    other = make_company()
    make_usage(mine)
    make_usage(other)
    for term in ("org_acme_search", "acme hiring"):
        response = staff_client.get(USAGE, {"q": term})
        rows = list(response.context["cl"].result_list)
        assert [r.company_id for r in rows] == [mine.pk]

"""Every billing page runs a fixed number of queries, however many rows it shows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tests.conftest import give_credit, make_company, make_job, make_price, make_usage

pytestmark = pytest.mark.django_db

# session + user + the company (tenant check), then the tab's own reads:
# overview: credit summary (3: balance, lot totals, expiring lots) + spend periods
# + drafts + unpriced usage per model; usage: models and API keys for the filters
# + totals + rows + chart (its points also give the unpriced warning); credits: credit
# summary (3) + unpriced usage per model + one ledger page.
MAX_QUERIES = {
    ("overview", ""): 11,  # + holds and API keys (usage.budgets.budget_use)
    ("usage", "day"): 8,
    ("usage", "model"): 8,
    ("usage", "job"): 9,  # + the shown jobs' titles
    ("usage", "key"): 9,  # + the shown keys' names
    ("usage", "generation"): 8,
    ("credits", ""): 8,
}


def _fill(company, n: int) -> None:
    give_credit(company, "1000")
    job = make_job(company)
    for i in range(n):
        where = {"job_id": str(job.pk)} if i % 2 else {"draft_job_id": f"d{i}"}
        make_usage(
            company, model=f"m{i % 3}", occurred_at=timezone.now() - timedelta(hours=i), **where
        )


@pytest.mark.parametrize("rows", [1, 12])
@pytest.mark.parametrize(("tab", "group"), list(MAX_QUERIES))
def test_company_tabs_query_count_is_fixed(
    staff_client, django_assert_max_num_queries, tab, group, rows
):
    for model in ("m0", "m1", "m2"):
        make_price(model)
    company = make_company()
    _fill(company, rows)
    params = {"tab": tab, "group": group} if group else {"tab": tab}
    with django_assert_max_num_queries(MAX_QUERIES[(tab, group)]):
        response = staff_client.get(reverse("billing:company", args=[company.pk]), params)
    assert response.status_code == 200


@pytest.mark.parametrize("companies", [1, 15])
def test_staff_overview_query_count_is_fixed(
    staff_client, django_assert_max_num_queries, settings, companies
):
    make_price("m0")
    for _ in range(companies):
        company = make_company()
        make_usage(company, model="m0")
        make_usage(company, model="unpriced-model")
    # session, user, time zones, the companies, the page's pending-draft sums, and
    # the platform totals: balances, the rollup's two months, unpriced usage.
    with django_assert_max_num_queries(8):
        response = staff_client.get(reverse("billing:home"))
    assert len(response.context["companies"]) == companies
    assert response.context["platform"].unpriced_generations == companies
    settings.PLATFORM_TOTALS_CACHE_SECONDS = 60
    staff_client.get(reverse("billing:home"))
    with django_assert_max_num_queries(5):  # the platform totals come from the cache
        staff_client.get(reverse("billing:home"))


def test_job_drill_down_and_csv_query_counts(staff_client, django_assert_max_num_queries):
    make_price("m0")
    company = make_company()
    job = make_job(company)
    for _ in range(5):
        make_usage(company, model="m0", job_id=str(job.pk))
    url = reverse("billing:company", args=[company.pk])
    with django_assert_max_num_queries(9):  # + the job's own lookup
        staff_client.get(url, {"tab": "usage", "group": "generation", "job": job.pk})
    with django_assert_max_num_queries(5):
        response = staff_client.get(url, {"tab": "usage", "group": "generation", "format": "csv"})
        assert len(b"".join(response.streaming_content).splitlines()) == 6

"""What the billing pages show: amounts, unpriced usage, pages, sorting, periods, charges."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.members import add_member
from billing.models import LedgerEntry
from tests.conftest import give_credit, make_company, make_job, make_price, make_usage
from usage.models import QuestionGenerationUsage
from usage.views import PAGE_ROWS

pytestmark = pytest.mark.django_db


def page(client, company, **params):
    return client.get(reverse("billing:company", args=[company.pk]), params)


def amounts(html: str) -> list[tuple[str, str]]:
    """(exact amount, shown text) of every amount the page shows."""
    return re.findall(r'data-amount="([^"]+)"[^>]*>([^<]*)<', html)


@pytest.fixture
def small_costs(company):
    """Generations of a few hundredths of a cent each, one without a price."""
    # 1,000 prompt and 500 completion tokens: $0.00045 a generation.
    make_price("gpt-test", input="0.15", cached="0.075", output="0.6")
    give_credit(company, "10")
    now = timezone.now()
    for i in range(3):
        make_usage(company, occurred_at=now - timedelta(minutes=i))
    make_usage(company, model="llama-3-70b", occurred_at=now - timedelta(minutes=5))
    return company


@pytest.mark.parametrize("group", ["day", "model", "job", "generation"])
def test_no_non_zero_amount_reads_zero_on_any_tab(staff_client, small_costs, group):
    for params in ({"tab": "usage", "group": group}, {"tab": "overview"}, {"tab": "credits"}):
        html = page(staff_client, small_costs, **params).content.decode()
        shown = amounts(html)
        assert shown, params
        for exact, text in shown:
            assert Decimal(exact) == 0 or text not in ("$0.00", "-$0.00"), (params, exact, text)
        assert "0E-" not in html


def test_a_sub_cent_cost_shows_its_digits_with_the_exact_figure_a_focus_away(
    staff_client, small_costs
):
    html = page(staff_client, small_costs, tab="usage", group="generation").content.decode()
    assert 'data-amount="0.00045">$0.00045<' in html  # shown exactly: nothing to reveal
    response = page(staff_client, small_costs, tab="usage")
    totals = response.context["totals"]
    assert totals.cost == Decimal("0.00135") and totals.cost_per_question == Decimal(
        "0.00009"
    )  # 3 priced of 15 questions
    html = response.content.decode()
    # Two significant digits, the exact figure one focus away.
    assert (
        'data-amount="0.00135" tabindex="0">$0.0014<span class="exact"> (exactly $0.00135)' in html
    )


def test_unpriced_usage_is_named_wherever_a_total_leaves_it_out(staff_client, small_costs):
    warning = "1 generation of llama-3-70b has no price yet"
    for params in ({"tab": "usage"}, {"tab": "overview"}, {"tab": "credits"}):
        html = page(staff_client, small_costs, **params).content.decode()
        assert warning in html, params
    usage = page(staff_client, small_costs, tab="usage", group="generation")
    html = usage.content.decode()
    assert '<span class="badge unpriced">no price</span>' in html
    assert "+ 1 generation with no price" in html  # beside the Cost total
    assert "llama-3-70b: no price yet, not in the bars" in html  # the chart's legend
    staff = staff_client.get(reverse("billing:home")).content.decode()
    assert warning in staff
    assert reverse("admin:usage_price_model") + "?model=llama-3-70b" in staff


def test_a_company_admin_is_told_but_not_sent_to_the_admin(member_client, small_costs):
    html = page(member_client, small_costs, tab="usage").content.decode()
    assert "1 generation of llama-3-70b has no price yet" in html
    assert reverse("admin:usage_price_model") not in html


@pytest.fixture
def many_generations(company):
    make_price("gpt-test")
    job = make_job(company)
    start = timezone.now() - timedelta(hours=1)
    for i in range(PAGE_ROWS * 2 + 10):
        make_usage(
            company,
            job_id=str(job.pk),
            prompt_tokens=1000 + i,
            occurred_at=start + timedelta(seconds=i),
        )
    return company


def _ids(response) -> list[str]:
    return [str(row["id"]) for row in response.context["rows"]]


def test_generations_are_paged_without_overlap_and_say_which_rows(staff_client, many_generations):
    pages = [
        page(staff_client, many_generations, tab="usage", group="generation", page=n)
        for n in (1, 2, 3)
    ]
    seen = [_ids(p) for p in pages]
    assert [len(ids) for ids in seen] == [PAGE_ROWS, PAGE_ROWS, 10]
    assert len(set().union(*seen)) == PAGE_ROWS * 2 + 10
    html = pages[1].content.decode()
    assert f"Page 2 of 3 · rows {PAGE_ROWS + 1}–{PAGE_ROWS * 2}" in html
    assert 'rel="next"' in html and 'rel="prev"' in html
    past = page(staff_client, many_generations, tab="usage", group="generation", page=9)
    assert "fewer pages than that" in past.content.decode()


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_every_column_sorts_the_table_across_pages(staff_client, many_generations, direction):
    response = page(
        staff_client, many_generations, tab="usage", group="generation", sort="cost", dir=direction
    )
    costs = [row["cost"] for row in response.context["rows"]]
    assert costs == sorted(costs, reverse=direction == "desc")
    everything = QuestionGenerationUsage.objects.filter(company=many_generations)
    extreme = everything.order_by("cost" if direction == "asc" else "-cost").first().cost
    assert costs[0] == extreme
    html = response.content.decode()
    assert f'aria-sort="{direction}ending"' in html
    # Every column the grouping shows links to its sort; the current one flips.
    flipped = "asc" if direction == "desc" else "desc"
    assert f"sort=cost&amp;dir={flipped}" in html and "sort=prompt_tokens&amp;dir=desc" in html


def test_an_unknown_sort_falls_back_to_the_groupings_default(staff_client, many_generations):
    response = page(staff_client, many_generations, tab="usage", group="job", sort="nope")
    assert response.status_code == 200 and 'aria-sort="descending"' in response.content.decode()


def test_a_generation_shows_the_part_of_its_id_that_differs_and_a_copy_button(
    staff_client, many_generations
):
    response = page(staff_client, many_generations, tab="usage", group="generation")
    first, second = response.context["rows"][:2]
    assert str(first["id"])[:8] == str(second["id"])[:8]  # UUIDv7: the prefix is the time
    html = response.content.decode()
    assert f"…{str(first['id'])[-8:]}</a>" in html
    assert f'data-copy="{first["id"]}"' in html
    charge = reverse("billing:charge", args=[many_generations.pk, first["id"]])
    assert f'href="{charge}"' in html


def test_an_empty_this_month_shows_last_month_and_says_so(
    staff_client, company, django_assert_max_num_queries
):
    make_price("gpt-test")
    first = timezone.localtime(timezone.now(), company.tz).date().replace(day=1)
    last_month = timezone.now().replace(day=1) - timedelta(days=3)
    make_usage(company, occurred_at=last_month)
    with django_assert_max_num_queries(9):  # the usage tab's 8, and last month's totals
        response = page(staff_client, company, tab="usage")
    filters = response.context["filters"]
    assert filters.end == first - timedelta(days=1) and filters.start.day == 1
    html = response.content.decode()
    assert "Nothing is recorded yet for" in html and "preset=this_month" in html
    assert f'value="{filters.start.isoformat()}"' in html  # the date inputs show it
    # Asked for explicitly, this month stays (empty).
    chosen = page(staff_client, company, tab="usage", preset="this_month").context["filters"]
    assert chosen.start == first


def test_presets_carry_their_ranges_and_the_heading_names_period_and_zone(staff_client):
    company = make_company(timezone="Asia/Kolkata")
    html = page(staff_client, company, tab="usage", preset="last_7").content.decode()
    today = timezone.localtime(timezone.now(), company.tz).date()
    week = today - timedelta(days=6)
    assert f'data-from="{week.isoformat()}" data-to="{today.isoformat()}"' in html
    assert f'name="from" value="{week.isoformat()}"' in html
    assert f"Usage {week:%b} {week.day}, {week.year}" in html
    assert "days and times in Asia/Kolkata" in html


def test_the_ledger_pages_and_sorts_by_amount(staff_client, company):
    make_price("gpt-test")
    give_credit(company, "5")
    for i in range(3):
        make_usage(company, prompt_tokens=1000 * (i + 1))
    response = page(staff_client, company, tab="credits", sort="amount", dir="asc")
    entries = response.context["entries"]
    assert [e.amount for e in entries] == sorted(e.amount for e in entries)
    html = response.content.decode()
    debit = next(e for e in entries if e.usage_id)
    assert reverse("billing:charge", args=[company.pk, debit.usage_id]) in html


# --- Explaining a charge ------------------------------------------------------------


def charge_page(client, usage):
    return client.get(reverse("billing:charge", args=[usage.company_id, usage.pk]))


def test_a_charge_is_its_tokens_times_the_rates_its_debit_and_the_balance_after(
    member_client, company, django_assert_max_num_queries
):
    make_price("gpt-test", input="2.5", cached="1.25", output="10")
    give_credit(company, "1")
    usage = make_usage(company, prompt_tokens=1200, cached_prompt_tokens=200).usage
    with django_assert_max_num_queries(6):
        response = charge_page(member_client, usage)
    charge = response.context["charge"]
    assert [(line.tokens, line.rate) for line in charge.lines] == [
        (1000, Decimal("2.5")),
        (200, Decimal("1.25")),
        (500, Decimal("10")),
    ]
    assert [line.cost for line in charge.lines] == [
        Decimal("0.0025"),
        Decimal("0.00025"),
        Decimal("0.005"),
    ]
    assert charge.total == usage.cost == Decimal("0.00775")
    [debit] = response.context["entries"]
    assert (debit.amount, debit.balance_after) == (-usage.cost, Decimal("1") - usage.cost)
    html = response.content.decode()
    assert "× $2.50" in html and "× $1.25" in html and "$0.00775" in html
    assert "$0.99225" in html  # the exact balance after the debit


def test_unpriced_and_reported_charges_say_how_their_cost_came_about(member_client, company):
    unpriced = make_usage(company, model="no-price-model").usage
    html = charge_page(member_client, unpriced).content.decode()
    assert "no price" in html and "No debit yet" in html
    reported = make_usage(company, model="no-price-model", cost="0.42").usage
    html = charge_page(member_client, reported).content.decode()
    assert "The caller reported this cost" in html and "$0.42" in html


def test_another_companys_charge_is_a_404(client, company, other_company):
    make_price("gpt-test")
    theirs = make_usage(other_company).usage
    membership = add_member(company=company, username="owner", password="pw-owner-123")
    client.force_login(membership.membership.user)
    assert charge_page(client, theirs).status_code == 404
    # Nor through their own company's URL with our company's id.
    mixed = reverse("billing:charge", args=[company.pk, theirs.pk])
    assert client.get(mixed).status_code == 404


def test_staff_overview_shows_platform_totals_and_the_trend(staff_client):
    make_price("gpt-test")  # $0.0075 a generation
    a, b = make_company(), make_company()
    give_credit(a, "30")
    give_credit(b, "12")
    make_usage(a)
    make_usage(b, model="llama-3-70b")
    context = staff_client.get(reverse("billing:home")).context
    [usd] = context["platform"].currencies
    assert usd.credit_outstanding == Decimal("42") - Decimal("0.0075")
    assert usd.this_month + usd.last_month >= Decimal("0.0075")
    assert context["platform"].unpriced_generations == 1
    [trend] = context["trends"]
    assert trend["chart"] is not None and trend["chart_narrow"] is not None
    assert LedgerEntry.objects.filter(company=b, kind="usage").count() == 0

"""The seeded demo (`manage.py seed_demo`) walked in Chromium as platform staff and as a
company admin: every page's money, Cost on screen at 1366 and 390 px, the unpriced
warning, pages, sorting, a charge explained, the confirmation steps, axe-core."""

from __future__ import annotations

import re
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from billing.api_keys import create_api_key
from billing.members import add_member
from billing.models import Company, LedgerEntry
from billing.money import format_exact
from tests.browser.checks import amounts_shown, axe_violations, look_at
from usage.events import UsageEvent
from usage.models import CostSource, QuestionGenerationUsage
from usage.recording import record_usage
from usage.reservations import Estimate, reserve

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

UNPRICED_MODEL = "llama-3-70b"  # the demo's model without a price


@pytest.fixture
def demo(django_user_model):
    """The demo world, smaller than `bin/run`'s but the same shape; a staff user and an
    admin of Acme."""
    call_command("seed_demo", "--companies", "3", "--usage-rows", "1500", stdout=StringIO())
    acme = Company.objects.get(external_id="org_acme")
    assert QuestionGenerationUsage.objects.filter(
        company=acme, cost_source=CostSource.UNPRICED
    ).exists()
    _keys_with_limits_and_a_hold(acme)
    django_user_model.objects.create_superuser("staff", "staff@example.com", "pw-staff-123")
    add_member(company=acme, username="owner", password="pw-owner-123")
    return acme


def _keys_with_limits_and_a_hold(acme) -> None:
    """Two of Acme's keys with limits, some of their usage, and a generation under way."""
    main, _ = create_api_key(
        name="Main product (prod)", company=acme, daily_limit="40", monthly_limit="900"
    )
    ci, _ = create_api_key(name="Nightly evaluation", company=acme, daily_limit="5")
    for i, key in enumerate((main, main, main, ci)):
        record_usage(
            UsageEvent(
                company=str(acme.pk),
                idempotency_key=f"demo-key-{i}",
                model="gpt-4o",
                prompt_tokens=3000,
                completion_tokens=1200,
                draft_job_id="tmp-keys",
                cost=f"{1.75 + i}",
                api_key=key,
            ),
            company=acme,
        )
    reserve(company=acme, api_key=main, estimate=Estimate(cost="0.85"), idempotency_key="demo")


@pytest.fixture
def tab(browser, _short_lived_connections, live_server, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # bypass_csp: axe-core is injected as a script, whatever the pages' policy.
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1366, "height": 900}, bypass_csp=True
    )
    context.set_default_timeout(15_000)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    yield page
    context.close()


def log_in(page, username: str, password: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_load_state()


def billing_tab(page, name: str) -> None:
    page.get_by_role("navigation", name="Billing sections").get_by_role("link", name=name).click()
    page.wait_for_load_state()


def apply_filters(page, **choices: str) -> None:
    for label, value in choices.items():
        page.get_by_label(label, exact=True).select_option(value)
    page.get_by_role("button", name="Apply").click()
    page.wait_for_load_state()


def unpriced_in_view(page) -> bool:
    return page.locator(".unpriced-warning").count() > 0


def costs_in_table(page) -> list[Decimal | None]:
    """The Cost column of the usage table, top to bottom (None: no price)."""
    values = []
    for cell in page.locator("table.usage-table tbody tr td:last-child").all():
        amount = cell.locator("[data-amount]")
        values.append(
            Decimal(amount.first.get_attribute("data-amount")) if amount.count() else None
        )
    return values


# --- As platform staff ---------------------------------------------------------------


def test_staff_walk_through_every_billing_page(tab, demo):
    page = tab
    log_in(page, "staff", "pw-staff-123")
    page.wait_for_url("**/billing/")
    assert page.get_by_role("heading", name=re.compile("Platform totals")).is_visible()
    assert (
        f"of {UNPRICED_MODEL} have no price yet" in page.locator(".unpriced-warning").inner_text()
    )
    assert page.locator("figure.chart svg.chart-wide").is_visible()  # the 30-day trend
    look_at(page, "staff-01-overview")

    page.get_by_role("link", name="Acme Recruiting").click()
    page.wait_for_load_state()
    assert unpriced_in_view(page)  # the balance and spend leave it out
    look_at(page, "staff-02-company-overview")

    billing_tab(page, "Usage")
    heading = page.get_by_role("heading", level=2).first.inner_text()
    assert "America/New_York" in heading and re.search(
        r"\w{3} \d+, \d{4} – \w{3} \d+, \d{4}", heading
    )
    assert page.locator("table.usage-table tbody tr").count() > 0  # the default shows data
    look_at(page, "staff-03-usage-by-day")

    # A preset fills the date inputs as soon as it is picked (static/js/billing.js).
    preset = page.get_by_label("Period", exact=True)
    option = preset.locator("option[value=last_30]")
    preset.select_option("last_30")
    assert page.get_by_label("From", exact=True).input_value() == option.get_attribute("data-from")
    assert page.get_by_label("To", exact=True).input_value() == option.get_attribute("data-to")

    for group, name in (("job", "job"), ("model", "model"), ("key", "key")):
        apply_filters(page, **{"Group by": group})
        look_at(page, f"staff-04-usage-by-{name}")
    apply_filters(page, **{"Group by": "generation", "Period": "last_30"})
    look_at(page, "staff-05-usage-by-generation")
    _pages_and_sorting(page)
    _generation_id_and_copy(page)
    _charge_explained(page, demo, "staff-07-charge")

    page.goto(f"/billing/{demo.pk}/?tab=credits")
    look_at(page, "staff-08-credits")
    page.locator("table.ledger a.badge.usage").first.click()  # a debit -> its charge
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="How the cost is made").is_visible()


def _pages_and_sorting(page) -> None:
    first_page = costs_in_table(page)
    assert len(first_page) == 100
    page.get_by_role("link", name=re.compile("Next")).first.click()
    page.wait_for_load_state()
    assert "Page 2" in page.locator(".pager").inner_text()
    assert costs_in_table(page) != first_page
    look_at(page, "staff-06-usage-page-2")
    page.get_by_role("link", name=re.compile("^Cost")).click()  # a number sorts largest first
    page.wait_for_load_state()
    assert page.locator("th[aria-sort=descending]").inner_text().startswith("Cost")
    assert "page=" not in page.url  # a new order starts on the first page
    costs = [c for c in costs_in_table(page) if c is not None]
    assert costs == sorted(costs, reverse=True) and costs[0] > 0
    page.get_by_role("link", name=re.compile("^Cost")).click()
    page.wait_for_load_state()
    priced = [c for c in costs_in_table(page) if c is not None]
    assert priced == sorted(priced)


def _generation_id_and_copy(page) -> None:
    link = page.locator("table.usage-table a.id").first
    full = link.get_attribute("href").rstrip("/").rsplit("/", 1)[-1]
    assert link.inner_text() == "…" + full[-8:]
    button = page.locator("table.usage-table button.copy").first
    assert button.is_visible()
    button.click()
    assert page.evaluate("navigator.clipboard.readText()") == full


def _charge_explained(page, company: Company, name: str) -> None:
    link = (
        page.locator("table.usage-table tbody tr")
        .filter(has=page.locator("[data-amount]"))
        .first.locator("a.id")
    )
    usage_id = link.get_attribute("href").rstrip("/").rsplit("/", 1)[-1]
    link.click()
    page.wait_for_load_state()
    usage = QuestionGenerationUsage.objects.get(pk=usage_id)
    assert page.get_by_role("heading", name="How the cost is made").is_visible()
    lines = page.locator("table.charge-lines tbody tr")
    assert lines.count() == 3
    text = page.locator("table.charge-lines").inner_text()
    assert f"{usage.prompt_tokens - usage.cached_prompt_tokens:,}" in text
    assert f"{usage.completion_tokens:,}" in text and "×" in text
    debit = LedgerEntry.objects.get(usage_id=usage.pk, kind="usage")
    shown = dict(amounts_shown(page))
    assert debit.amount in shown and debit.balance_after in shown  # the debit, the balance after
    exactly = page.locator("main").inner_text()
    assert format_exact(debit.balance_after, company.currency) in exactly
    look_at(page, name)


def test_staff_post_credit_after_confirming_and_price_unpriced_usage(tab, demo):
    page = tab
    log_in(page, "staff", "pw-staff-123")
    page.goto(f"/admin/billing/company/{demo.pk}/credits/")
    assert unpriced_in_view(page)
    look_at(page, "admin-01-credits", cost_at=(1366,))
    before = LedgerEntry.objects.filter(company=demo).count()
    page.get_by_label("Kind").select_option("grant")
    page.get_by_label("Amount (USD)").fill("0")
    page.get_by_label("Reason").fill("Goodwill for the outage")
    page.get_by_role("button", name="Review").click()
    page.wait_for_load_state()
    assert page.locator(".errorlist li").all_inner_texts() == ["Enter an amount above zero."]
    page.get_by_label("Amount (USD)").fill("25")
    page.get_by_label("Expires on").fill("2099-01-01")  # the date picker's value
    page.get_by_role("button", name="Review").click()
    page.wait_for_load_state()
    confirm = page.locator("#credit-confirm-form").inner_text()
    assert "Balance before" in confirm and "Balance after" in confirm
    assert "Jan 1, 2099 00:00 EST" in confirm and "America/New_York" in confirm
    assert LedgerEntry.objects.filter(company=demo).count() == before  # nothing posted yet
    look_at(page, "admin-02-credit-confirmation", cost_at=(1366,))
    page.get_by_role("button", name="Post $25.00 to the ledger").click()
    page.wait_for_load_state()
    posted = page.locator(".messagelist li.success").inner_text()
    assert posted.startswith("Posted: Grant") and "of $25.00; balance now $" in posted
    assert LedgerEntry.objects.filter(company=demo).count() == before + 1

    page.goto("/admin/usage/questiongenerationusage/")
    look_at(page, "admin-03-usage-list")
    page.goto("/admin/billing/ledgerentry/")
    look_at(page, "admin-03-ledger-list", cost_at=(1366,))
    page.goto("/admin/billing/reservation/?holding=yes")
    assert page.locator("#result_list tbody tr").count() == 1
    look_at(page, "admin-03-holds-list", cost_at=(1366,))
    page.goto("/admin/usage/questiongenerationusage/pending-drafts/")
    look_at(page, "admin-04-pending-drafts", cost_at=(1366,))
    page.locator("#needs-price ~ .table-scroll").get_by_role(
        "link", name="Add a price and reprice"
    ).click()
    page.wait_for_load_state()
    look_at(page, "admin-05-price-form")
    page.get_by_label("Uncached input, USD per 1M tokens").fill("0.59")
    page.get_by_label("Output, USD per 1M tokens").fill("0.79")
    page.get_by_role("button", name="Preview").click()
    page.wait_for_load_state()
    preview = page.locator("#reprice-preview").inner_text()
    unpriced = QuestionGenerationUsage.objects.filter(model=UNPRICED_MODEL).count()
    assert "Acme Recruiting" in preview and f"{unpriced}" in preview
    assert not QuestionGenerationUsage.objects.filter(
        model=UNPRICED_MODEL, cost_source=CostSource.PRICED
    ).exists()
    look_at(page, "admin-06-price-preview", cost_at=(1366,))
    page.get_by_role("button", name=re.compile("Add the price and reprice")).click()
    page.wait_for_load_state()
    assert (
        f"priced {unpriced:,} generations" in page.locator(".messagelist li.success").inner_text()
    )
    page.goto(f"/billing/{demo.pk}/?tab=overview")
    assert not unpriced_in_view(page)  # priced and debited: nothing left out


def test_error_pages_are_styled_with_a_way_back(tab, demo):
    page = tab
    log_in(page, "staff", "pw-staff-123")
    response = page.goto("/billing/not-a-company/")
    assert response.status == 404
    assert page.get_by_role("link", name="Go to billing").is_visible()
    look_at(page, "error-404")
    response = page.goto("/api/v1/nowhere")
    assert response.status == 404 and response.json()["error"]["code"] == "not_found"


# --- As a company admin --------------------------------------------------------------


def test_company_admin_walk_sees_only_their_company(tab, demo):
    page = tab
    log_in(page, "owner", "pw-owner-123")
    page.wait_for_url(f"**/billing/{demo.pk}/")
    assert unpriced_in_view(page) and "add a price" not in page.locator("main").inner_text()
    look_at(page, "owner-01-overview")
    billing_tab(page, "Usage")
    look_at(page, "owner-02-usage")
    apply_filters(page, **{"Group by": "generation", "Period": "last_30"})
    look_at(page, "owner-03-usage-by-generation")
    _charge_explained(page, demo, "owner-04-charge")
    billing_tab_url = f"/billing/{demo.pk}/?tab=credits"
    page.goto(billing_tab_url)
    look_at(page, "owner-05-credits")
    billing_tab(page, "Statements")
    assert "open (not yet issued)" in page.locator("table.statements").inner_text()
    look_at(page, "owner-06-statements")
    page.locator("table.statements tbody th a").first.click()  # this month, so far
    page.wait_for_load_state()
    assert page.get_by_role("heading", name=re.compile("^Statement for")).is_visible()
    look_at(page, "owner-07-statement-open")

    other = Company.objects.exclude(pk=demo.pk).first()
    theirs = QuestionGenerationUsage.objects.filter(company=other).first()
    for url in (f"/billing/{other.pk}/", f"/billing/{other.pk}/usage/{theirs.pk}/"):
        assert page.goto(url).status == 404
    assert page.goto(f"/billing/{demo.pk}/usage/{theirs.pk}/").status == 404
    assert "There is nothing at this address" in page.locator("main").inner_text()
    assert axe_violations(page) == []

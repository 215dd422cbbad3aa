"""The admin speaks money: every amount by the display rule with its currency, times in
the company's zone with the zone named, full precision only in read-only detail."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import CreditLot, LedgerEntry
from tests.billing.conftest import grant
from tests.conftest import make_company, make_price, make_usage

pytestmark = pytest.mark.django_db

RAW = ("0E-", ".000000000000", "00000000")  # a stored NUMERIC(28, 12) shown as is


@pytest.fixture
def world():
    make_price("gpt-test", input="0.15", cached="0.075", output="0.6")  # $0.00045 each
    company = make_company(timezone="America/New_York")
    grant(company, "1468.317968875", kind="grant")
    for _ in range(3):
        make_usage(company)
    make_usage(company, model="llama-3-70b")
    return company


@pytest.mark.parametrize(
    "name",
    ["ledgerentry", "creditlot", "creditbalance", "billingalert", "company", "modelprice"],
)
def test_billing_lists_show_amounts_by_the_rule_never_raw(staff_client, world, name):
    html = staff_client.get(reverse(f"admin:billing_{name}_changelist")).content.decode()
    for raw in RAW:
        assert raw not in html, (name, raw)


def test_usage_list_shows_cost_no_price_and_the_explanation(staff_client, world):
    html = staff_client.get(reverse("admin:usage_questiongenerationusage_changelist")).content
    html = html.decode()
    assert ">$0.00045<" in html and '<span class="no-price">no price</span>' in html
    assert "EST" in html or "EDT" in html  # the company's zone, named
    assert "1 generation of llama-3-70b has no price yet" in html
    usage = world.usage.filter(cost__isnull=False).first()
    assert reverse("billing:charge", args=[world.pk, usage.pk]) in html
    for raw in RAW:
        assert raw not in html


def test_ledger_list_and_detail_in_the_company_zone_with_exact_figures_in_detail(
    staff_client, world
):
    entry = LedgerEntry.objects.get(company=world, kind="grant")
    listing = staff_client.get(reverse("admin:billing_ledgerentry_changelist")).content.decode()
    text = re.sub(r"<[^>]+>", " ", listing)  # what a person reads, not the attributes
    assert "$1,468.32" in text and "317968875" not in text
    detail = staff_client.get(reverse("admin:billing_ledgerentry_change", args=[entry.pk]))
    html = detail.content.decode()
    assert "(exactly $1,468.317968875 USD)" in html
    local = entry.created_at.astimezone(world.tz)
    assert local.strftime("%b %-d, %Y %H:%M %Z") in html


def test_company_form_reads_like_money_with_its_currency(staff_client, world):
    html = staff_client.get(reverse("admin:billing_company_change", args=[world.pk]))
    html = html.content.decode()
    assert 'value="0.00"' in html and "0E-12" not in html  # the overdraft allowance
    assert "Overdraft allowance (USD)" in html
    response = staff_client.post(
        reverse("admin:billing_company_change", args=[world.pk]),
        {
            "name": world.name,
            "external_id": world.external_id,
            "timezone": world.timezone,
            "currency": "USD",
            "is_active": "on",
            "low_balance_threshold": "12.50",
            "overdraft_allowance": "0.00",
            "monthly_spend_limit": "",
            "billing_emails": "",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302
    world.refresh_from_db()
    assert world.low_balance_threshold == Decimal("12.5")


def test_lot_detail_shows_every_digit(staff_client, world):
    lot = CreditLot.objects.get(company=world)
    html = staff_client.get(reverse("admin:billing_creditlot_change", args=[lot.pk]))
    assert "(exactly $1,468.317968875 USD)" in html.content.decode()

"""Admin: posting credit through the services after a confirmation step, the read-only
ledger, the company list."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from billing.ledger import current_balance
from billing.models import AuditEvent, BillingAlert, LedgerEntry
from billing.money import plain
from tests.billing.conftest import grant
from tests.conftest import make_company, make_usage

pytestmark = pytest.mark.django_db


def _credits_url(company) -> str:
    return reverse("admin:billing_company_credits", args=[company.pk])


def _post(staff_client, company, *, confirm: bool = True, **data):
    """Submit the form; with `confirm`, as the confirmation step's button does."""
    form = {"kind": "purchase", "amount": "25", "reason": "Invoice 42", "idempotency_key": "f-1"}
    form.update(data)
    if confirm:
        form["confirm"] = "1"
    return staff_client.post(_credits_url(company), form)


def test_change_page_links_to_the_credits_page(staff_client, company):
    page = staff_client.get(reverse("admin:billing_company_change", args=[company.pk]))
    assert _credits_url(company) in page.content.decode()


@pytest.mark.parametrize(
    ("kind", "amount", "balance"),
    [
        ("purchase", "25", "25"),
        ("grant", "25", "25"),
        ("refund", "3", "3"),
        ("adjustment", "-4", "-4"),
    ],
)
def test_each_kind_is_posted_through_the_service_with_the_acting_user(
    staff_client, company, kind, amount, balance
):
    response = _post(staff_client, company, kind=kind, amount=amount)
    assert response.status_code == 302
    entry = LedgerEntry.objects.get(company=company)
    assert (entry.kind, entry.amount, entry.reason) == (kind, Decimal(amount), "Invoice 42")
    assert entry.actor.username == "staff"
    assert current_balance(company) == Decimal(balance)
    assert AuditEvent.objects.get(action=f"credit.{kind}").actor.username == "staff"


def test_reason_is_required_and_a_double_submit_posts_once(staff_client, company):
    response = _post(staff_client, company, reason="")
    assert response.status_code == 200 and not LedgerEntry.objects.exists()
    assert "This field is required" in response.content.decode()
    _post(staff_client, company)
    _post(staff_client, company)  # same hidden idempotency key
    assert LedgerEntry.objects.count() == 1


def test_refund_cannot_expire_and_purchase_must_be_positive(staff_client, company):
    assert _post(staff_client, company, kind="refund", expires_on="2099-01-01").status_code == 200
    assert _post(staff_client, company, amount="-1").status_code == 200
    assert not LedgerEntry.objects.exists()


def test_the_form_shows_a_confirmation_with_the_balance_before_and_after_and_posts_nothing(
    staff_client, company
):
    grant(company, "100.5")
    company.timezone = "America/New_York"
    company.save()
    response = _post(staff_client, company, confirm=False, kind="grant", expires_on="2099-01-01")
    assert response.status_code == 200 and LedgerEntry.objects.count() == 1
    confirm = response.context["confirm"]
    assert (confirm.balance_before, confirm.balance_after) == (Decimal("100.5"), Decimal("125.5"))
    html = response.content.decode()
    assert "$100.50" in html and "$125.50" in html and "Post $25.00 to the ledger" in html
    # The expiry is the start of the chosen day in the company's zone, named.
    assert confirm.expires_at.isoformat() == "2099-01-01T00:00:00-05:00"
    assert "Jan 1, 2099 00:00 EST" in html and "(America/New_York)" in html
    posted = staff_client.post(_credits_url(company), {**confirm.hidden, "confirm": "1"})
    assert posted.status_code == 302
    entry = LedgerEntry.objects.latest("id")
    assert (entry.kind, entry.amount, entry.expires_at) == ("grant", 25, confirm.expires_at)


def test_change_on_the_confirmation_step_goes_back_to_the_filled_form(staff_client, company):
    response = _post(staff_client, company, confirm=False, edit="1", amount="7")
    assert response.context["confirm"] is None and not LedgerEntry.objects.exists()
    assert 'value="7"' in response.content.decode()


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"amount": "0"}, "amount", "Enter an amount above zero."),
        ({"kind": "adjustment", "amount": "0"}, "amount", "An adjustment must not be zero."),
        ({"kind": "refund", "expires_on": "2099-01-01"}, "expires_on", "Only purchases and"),
        ({"expires_on": "2020-01-01"}, "expires_on", "Choose a day after today."),
    ],
)
def test_each_wrong_field_gets_one_clear_error(staff_client, company, data, field, message):
    response = _post(staff_client, company, confirm=False, **data)
    errors = response.context["form"].errors
    assert list(errors) == [field] and len(errors[field]) == 1
    assert errors[field][0].startswith(message)
    assert not LedgerEntry.objects.exists()


def test_ledger_is_shown_read_only_with_its_running_balance(
    staff_client, company, price, django_assert_max_num_queries
):
    grant(company, "100", reason="Annual plan")
    for _ in range(5):
        make_usage(company)
    with django_assert_max_num_queries(12):
        page = staff_client.get(_credits_url(company))
    html = page.content.decode()
    assert "Annual plan" in html and "Balance after" in html
    for entry in LedgerEntry.objects.filter(company=company):
        assert f'data-amount="{plain(entry.balance_after)}"' in html
    assert "0E-" not in html and ".000000000000" not in html
    usage = LedgerEntry.objects.filter(company=company, kind="usage").first()
    assert reverse("billing:charge", args=[company.pk, usage.usage_id]) in html


def test_company_list_shows_balance_spend_and_low_balance_without_n_plus_1(
    staff_client, price, django_assert_max_num_queries
):
    companies = [make_company(low_balance_threshold=Decimal(50)) for _ in range(6)]
    for company in companies:
        grant(company, "60")
        make_usage(company, cost="20")  # 40 < 50: low
    grant(companies[0], "100")
    with django_assert_max_num_queries(10):
        page = staff_client.get(reverse("admin:billing_company_changelist"))
    html = page.content.decode()
    assert "$20.00" in html and "$140.00" in html and "$40.00" in html
    assert html.count('alt="False"') == 1  # only the topped-up company is not low
    low = staff_client.get(reverse("admin:billing_company_changelist") + "?low_balance=yes")
    assert companies[0].name not in low.content.decode()


def test_alert_and_lot_admin_pages_load(staff_client, company):
    grant(company, "12")
    make_usage(company, cost="5")
    assert BillingAlert.objects.exists()
    for name in ("billingalert", "creditlot"):
        assert staff_client.get(reverse(f"admin:billing_{name}_changelist")).status_code == 200

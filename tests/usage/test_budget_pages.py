"""The billing page and the admin show open holds, the limits of each key and their use."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from billing.api_keys import create_api_key
from billing.models import APIKey, AuditEvent, Reservation
from tests.conftest import give_credit, make_company, make_usage
from usage.reservations import Estimate, reserve

pytestmark = pytest.mark.django_db


def _world(keys: int):
    company = make_company()
    give_credit(company, "100")
    made = [
        create_api_key(name=f"key {i}", company=company, daily_limit="4", monthly_limit="40")[0]
        for i in range(keys)
    ]
    for key in made:
        make_usage(company, cost="3", api_key=key)
        reserve(
            company=company, api_key=key, estimate=Estimate(cost="0.5"), idempotency_key=key.name
        )
    return company, made


@pytest.mark.parametrize("keys", [1, 6])
def test_the_overview_shows_holds_and_each_keys_use_in_fixed_queries(
    staff_client, django_assert_max_num_queries, keys
):
    company, made = _world(keys)
    with django_assert_max_num_queries(
        12
    ):  # tests/usage/test_billing_queries.py, + the keys' spend
        response = staff_client.get(reverse("billing:company", args=[company.pk]))
    html = response.content.decode()
    assert f"in {keys} open hold" in html
    assert "Holds and API key limits" in html
    use = response.context["budget"].keys[0]
    assert (use.day_spend, use.month_spend, use.held) == (Decimal(3), Decimal(3), Decimal("0.5"))
    assert "75%" in html and "$4.00" in html and made[0].prefix not in html


def test_a_company_without_keys_or_holds_shows_no_budget_section(staff_client):
    company = make_company()
    response = staff_client.get(reverse("billing:company", args=[company.pk]))
    assert "Holds and API key limits" not in response.content.decode()


def test_the_admin_changes_a_keys_limits_through_the_service(staff_client):
    company = make_company()
    key, _ = create_api_key(name="ci", company=company)
    url = reverse("admin:billing_apikey_change", args=[key.pk])
    page = staff_client.get(url)
    assert "0 holding" in page.content.decode()
    response = staff_client.post(url, {"name": "ci", "daily_limit": "7.5", "monthly_limit": ""})
    assert response.status_code == 302, response.content
    key.refresh_from_db()
    assert (key.daily_limit, key.monthly_limit) == (Decimal("7.5"), None)
    audit = AuditEvent.objects.get(action="api_key.limits")
    assert audit.after == {"daily_limit": "7.50", "monthly_limit": None}


def test_the_admin_refuses_limits_on_a_platform_key_naming_the_field(staff_client):
    key, _ = create_api_key(name="platform")
    url = reverse("admin:billing_apikey_change", args=[key.pk])
    response = staff_client.post(url, {"name": "platform", "daily_limit": "1", "monthly_limit": ""})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"daily_limit": ["company keys only"]}
    assert APIKey.objects.get(pk=key.pk).daily_limit is None


def test_the_holds_changelist_filters_what_holds_now(staff_client, django_assert_max_num_queries):
    company, made = _world(3)
    Reservation.objects.filter(api_key=made[0]).update(expires_at="2000-01-01T00:00:00Z")
    url = reverse("admin:billing_reservation_changelist")
    with django_assert_max_num_queries(8):
        response = staff_client.get(url, {"holding": "yes"})
    assert len(response.context["cl"].result_list) == 2
    assert len(staff_client.get(url, {"holding": "expired"}).context["cl"].result_list) == 1

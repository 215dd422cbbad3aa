"""Pricing unpriced usage from the admin: a preview that changes nothing, then apply,
through the same services as set_model_price and reprice_usage."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from billing.models import AuditEvent, LedgerEntry, ModelPrice
from tests.conftest import give_credit, make_company, make_price, make_usage
from usage.models import CostSource, QuestionGenerationUsage

pytestmark = pytest.mark.django_db
URL = reverse("admin:usage_price_model")


@pytest.fixture
def unpriced():
    """Two companies with llama usage recorded before any llama price existed."""
    acme, globex = make_company(name="Acme"), make_company(name="Globex")
    for company, n in ((acme, 3), (globex, 1)):
        give_credit(company, "10")
        for i in range(n):
            make_usage(
                company,
                model="llama",
                prompt_tokens=2000,
                completion_tokens=1000,
                occurred_at=timezone.now() - timedelta(days=2, minutes=i),
            )
    return acme, globex


def _form(**changes) -> dict:
    start = (timezone.now() - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    data = {
        "model": "llama",
        "input_per_million": "1",
        "cached_input_per_million": "",
        "output_per_million": "2",
        "effective_from": start,
    }
    return data | changes


def test_the_warning_links_to_a_form_started_at_the_first_unpriced_usage(staff_client, unpriced):
    response = staff_client.get(URL, {"model": "llama"})
    html = response.content.decode()
    assert "4 generations of llama have no price yet" in html
    first = QuestionGenerationUsage.objects.order_by("occurred_at").first().occurred_at
    assert response.context["form"].initial["effective_from"].date() == first.date()


def test_preview_shows_each_company_and_changes_nothing(staff_client, unpriced):
    balances = list(LedgerEntry.objects.order_by("id").values_list("balance_after", flat=True))
    response = staff_client.post(URL, _form(preview="1"))
    report = response.context["preview"]
    # 2,000 x $1 + 1,000 x $2 per million tokens: $0.004 a generation.
    rows = {c.company_name: (c.rows, c.old_total, c.new_total, c.debited) for c in report.companies}
    assert rows == {
        "Acme": (3, 0, Decimal("0.012"), Decimal("0.012")),
        "Globex": (1, 0, Decimal("0.004"), Decimal("0.004")),
    }
    html = response.content.decode()
    assert "Preview: nothing is changed yet" in html and "Add the price and reprice 4" in html
    assert not ModelPrice.objects.filter(model="llama").exists()
    assert QuestionGenerationUsage.objects.filter(cost_source=CostSource.UNPRICED).count() == 4
    assert list(LedgerEntry.objects.order_by("id").values_list("balance_after", flat=True)) == (
        balances
    )


def test_apply_adds_the_price_prices_and_debits_and_records_who(staff_client, unpriced):
    acme, _ = unpriced
    response = staff_client.post(URL, _form(apply="1"))
    assert response.status_code == 302
    price = ModelPrice.objects.get(model="llama")
    assert price.created_by.username == "staff"
    assert not QuestionGenerationUsage.objects.filter(cost_source=CostSource.UNPRICED).exists()
    debits = LedgerEntry.objects.filter(company=acme, kind="usage")
    assert sum(e.amount for e in debits) == Decimal("-0.012")
    assert AuditEvent.objects.filter(action="usage.reprice", actor__username="staff").count() == 2
    # Applying the same form again prices nothing twice: the period already exists.
    again = staff_client.post(URL, _form(apply="1"))
    assert again.status_code == 200 and "already has a price" in again.content.decode()
    assert LedgerEntry.objects.filter(kind="usage").count() == 4


def test_a_price_that_starts_after_the_usage_leaves_it_unpriced_and_says_so(staff_client, unpriced):
    late = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    report = staff_client.post(URL, _form(preview="1", effective_from=late)).context["preview"]
    assert report.rows == 0 and report.still_unpriced == 4


def test_an_overlapping_period_is_refused_on_its_field(staff_client, unpriced):
    make_price("llama", effective_from=timezone.now() - timedelta(days=1))
    response = staff_client.post(URL, _form(preview="1"))
    errors = response.context["form"].errors
    assert list(errors) == ["effective_from"] and response.context["preview"] is None


def test_only_staff_who_may_add_prices_open_it(client, django_user_model, unpriced):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_questiongenerationusage"))
    client.force_login(user)
    assert client.get(URL).status_code == 403

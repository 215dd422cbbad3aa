"""A company made only through `POST /api/v1/companies` (no balance row, no usage, no
members, no prices) renders cleanly everywhere: every admin page (changelists, add,
change, history and delete pages, custom pages) and every billing tab and export."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import URLPattern, reverse

from billing.members import add_member
from billing.models import Company, CreditBalance
from tests.api.conftest import api_client_for
from usage.forms import GROUPS

pytestmark = pytest.mark.django_db


@pytest.fixture
def api_company(db) -> Company:
    response = api_client_for().post("/companies", {"external_id": "org-new", "name": "New Co"})
    assert response.status_code == 201, response.content
    company = Company.objects.get(pk=response.json()["id"])
    assert not CreditBalance.objects.filter(company=company).exists()
    return company


def admin_pages(company: Company) -> list[str]:
    """Every GET page of every registered model admin, for the objects there are."""
    pages = [reverse("admin:index")]
    for model, model_admin in admin.site._registry.items():
        obj = company if model is Company else model._default_manager.first()
        for pattern in model_admin.get_urls():
            if not isinstance(pattern, URLPattern) or not pattern.name:
                continue
            wanted = set(pattern.pattern.converters) | set(pattern.pattern.regex.groupindex)
            if not wanted:
                pages.append(reverse(f"admin:{pattern.name}"))
            elif wanted == {"object_id"} and obj is not None:
                pages.append(reverse(f"admin:{pattern.name}", args=[obj.pk]))
    return pages


def billing_pages(company: Company) -> list[str]:
    base = reverse("billing:company", args=[company.pk])
    pages = ["/billing/", f"/billing/?q={company.name}", base]
    pages += [f"{base}?tab={tab}" for tab in ("overview", "usage", "credits")]
    for group, _ in GROUPS:
        pages += [f"{base}?tab=usage&group={group}", f"{base}?tab=usage&group={group}&format=csv"]
    pages += [f"{base}?tab=usage&preset={p}" for p in ("last_month", "last_7", "last_30")]
    pages += [f"{base}?tab=credits&kind=purchase", f"{base}?tab=credits&preset=last_month"]
    return pages


def read(response) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


def test_every_admin_page_renders_for_a_company_made_through_the_api(staff_client, api_company):
    pages = admin_pages(api_company)
    assert reverse("admin:billing_company_changelist") in pages
    assert reverse("admin:billing_company_credits", args=[api_company.pk]) in pages
    for page in pages:
        response = staff_client.get(page)
        # 403: the change page of a read-only model (an audit event) is not offered.
        assert response.status_code in (200, 302, 403), (page, response.status_code)
        read(response)
    changelist = staff_client.get(reverse("admin:billing_company_changelist")).content.decode()
    assert "New Co" in changelist and "$0.00" in changelist


def test_every_billing_tab_and_export_renders_for_staff_and_a_member(
    staff_client, django_user_model, api_company
):
    add_member(company=api_company, username="member")
    member_client = Client()
    member_client.force_login(django_user_model.objects.get(username="member"))
    for page in billing_pages(api_company):
        for who in (staff_client, member_client):
            response = who.get(page)
            assert response.status_code in (200, 302), (page, response.status_code)
            read(response)


@pytest.mark.parametrize(
    "query",
    [
        "from=9999-12-30&to=9999-12-31",
        "from=9999-12-30&to=9999-12-31&format=csv",
        "from=9999-12-30&to=9999-12-31&group=generation&format=csv",
        "from=0001-01-01&to=0001-01-02&group=generation",
        "from=99999-01-01",
    ],
)
def test_dates_out_of_range_are_refused_not_a_500(staff_client, api_company, query):
    base = reverse("billing:company", args=[api_company.pk])
    response = staff_client.get(f"{base}?tab=usage&{query}")
    if "format=csv" in query:
        assert response.status_code == 400
        assert "Choose a day between" in response.content.decode()
    else:  # the page says what is wrong and shows this month instead
        assert response.status_code == 200
        assert "Showing this month instead" in response.content.decode()


@pytest.mark.parametrize("before", ["²", "١٢", "12a", "9" * 40])
def test_a_cursor_that_is_not_an_ascii_id_is_a_400(staff_client, api_company, before):
    page = reverse("admin:billing_company_credits", args=[api_company.pk])
    response = staff_client.get(page, {"before": before})
    assert response.status_code == 400
    assert "before" in response.content.decode()

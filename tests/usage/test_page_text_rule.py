"""The pages apply core.text's rule at the request edge: NUL in a query parameter or a
posted form field is a 400 page naming it (it was a 500 from the database)."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

NUL_REASON = "must not contain NUL (\\u0000) characters"


def assert_refused(response, field: str) -> None:
    assert response.status_code == 400
    text = response.content.decode()
    assert f"<code>{field}</code>" in text and "must not contain NUL" in text


def test_nul_in_the_usage_tabs_model_filter(staff_client, company):
    page = reverse("billing:company", args=[company.pk])
    assert_refused(staff_client.get(f"{page}?tab=usage&model=%00"), "model")


def test_nul_in_the_staff_overview_search(staff_client, company):
    assert_refused(staff_client.get("/billing/?q=%00"), "q")


def test_nul_in_an_admin_search(staff_client, company):
    assert_refused(staff_client.get("/admin/billing/company/?q=a%00"), "q")


def test_nul_in_a_posted_admin_form_field_changes_nothing(staff_client, company):
    change = reverse("admin:billing_company_change", args=[company.pk])
    response = staff_client.post(change, {"name": "x\x00y", "timezone": "UTC"})
    assert_refused(response, "name")
    company.refresh_from_db()
    assert "\x00" not in company.name


def test_nul_in_the_login_form(client):
    response = client.post("/accounts/login/", {"username": "a\x00", "password": "p"})
    assert_refused(response, "username")

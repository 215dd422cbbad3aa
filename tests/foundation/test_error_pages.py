"""Error pages in the billing look with a way back; the API keeps its JSON error shape."""

from __future__ import annotations

import json
import uuid

import pytest
from django.test import RequestFactory

from billing.members import add_member
from config import error_pages

pytestmark = pytest.mark.django_db


def test_a_wrong_link_gets_a_styled_404_with_a_way_back(staff_client):
    response = staff_client.get(f"/billing/{uuid.uuid4()}/")
    html = response.content.decode()
    assert response.status_code == 404
    assert "There is nothing at this address" in html and 'href="/billing/"' in html
    assert "billing.css" in html and "Go to the admin" in html  # staff get the admin too


def test_a_company_admin_opening_another_company_sees_the_same_404(client, company, other_company):
    client.force_login(add_member(company=company, username="owner", password="pw").membership.user)
    response = client.get(f"/billing/{other_company.pk}/")
    assert response.status_code == 404 and "There is nothing at this address" in (
        response.content.decode()
    )


@pytest.mark.parametrize("path", ["/api/v1/no-such-endpoint", "/api/v2/usage"])
def test_the_api_answers_its_json_error_shape(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response["Content-Type"].split(";")[0] == "application/json"
    assert json.loads(response.content)["error"]["code"] == "not_found"


def test_a_refused_page_gets_a_styled_403(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    client.force_login(user)
    response = client.get("/admin/usage/questiongenerationusage/price-model/")
    assert response.status_code == 403
    assert "Your account may not open this page" in response.content.decode()


def test_a_server_error_gets_a_styled_500_without_the_request_context():
    request = RequestFactory().get("/billing/")
    response = error_pages.server_error(request)
    html = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong on our side" in html and 'href="/billing/"' in html
    api = error_pages.server_error(RequestFactory().post("/api/v1/usage"))
    assert json.loads(api.content)["error"]["code"] == "internal_error"

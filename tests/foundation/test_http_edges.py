"""The edges of HTTP, through Django: every method on every unknown path under /api/
is the JSON 404 (CSRF enforced, as in production); a chunked body the server did not
de-chunk is a 411; with SECURE_SSL_REDIRECT on, /healthz answers over http and the API
refuses plain http in its error shape; the API docs load without a CDN; HTML pages
carry a Content-Security-Policy. (Over a real gunicorn: tests/ops/test_gunicorn_edges.py.)"""

from __future__ import annotations

import pytest
from django.test import Client

from tests.api.conftest import api_client_for, assert_error

pytestmark = pytest.mark.django_db

METHODS = ["get", "post", "put", "patch", "delete", "options"]
UNKNOWN = ["/api/v1/nope", "/api/v1/usage/", "/api/v2/usage", "/api/nope", "/api/", "/api"]


@pytest.mark.parametrize("path", UNKNOWN)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_every_unknown_api_path_is_the_json_404(method, path):
    client = Client(enforce_csrf_checks=True)
    if method == "get":
        response = client.get(path)
    else:
        response = getattr(client, method)(path, "{}", content_type="application/json")
    error = assert_error(response, 404, "not_found")
    assert path in error["message"]


def test_a_known_path_with_a_wrong_method_is_still_a_json_405():
    response = Client(enforce_csrf_checks=True).delete("/api/v1/usage")
    assert_error(response, 405, "method_not_allowed")


def test_a_chunked_body_that_reached_django_undechunked_is_a_411(company):
    api = api_client_for(company)
    response = api.post("/jobs", {"title": "x"}, HTTP_TRANSFER_ENCODING="chunked")
    assert_error(response, 411, "length_required")


@pytest.fixture
def https_only(settings):
    settings.SECURE_SSL_REDIRECT = True


def test_healthz_answers_over_plain_http_with_the_ssl_redirect_on(https_only):
    response = Client().get("/healthz")
    assert response.status_code in (200, 503)
    assert response["Content-Type"].startswith("application/json")


def test_the_api_refuses_plain_http_in_its_error_shape(https_only, company):
    api = api_client_for(company)
    assert_error(api.get(f"/companies/{company.pk}/balance"), 403, "https_required")
    assert_error(api.post("/jobs", {"title": "x"}), 403, "https_required")
    assert_error(Client().get("/api/v1/nope"), 403, "https_required")


def test_the_api_answers_over_https_and_pages_still_redirect(https_only, company):
    api = api_client_for(company)
    assert api.get(f"/companies/{company.pk}/balance", secure=True).status_code == 200
    response = Client().get("/billing/")
    assert response.status_code == 301 and response["Location"].startswith("https://")


def test_the_interactive_docs_load_their_own_assets_not_a_cdn():
    response = Client().get("/api/v1/docs")
    html = response.content.decode()
    assert response.status_code == 200
    assert "/static/ninja/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()


def test_html_pages_carry_a_content_security_policy(staff_client):
    for page in ("/accounts/login/", "/billing/", "/admin/", "/api/v1/docs"):
        policy = staff_client.get(page)["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy, page
        assert "unsafe-inline" not in policy

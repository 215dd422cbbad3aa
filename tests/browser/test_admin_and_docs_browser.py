"""The admin and the interactive API docs in real headless Chromium, under the
Content-Security-Policy (the page fixture fails a test on any violation)."""

from __future__ import annotations

import pytest

from tests.conftest import give_credit, make_company, make_price, make_usage

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def world(django_user_model):
    make_price()
    company = make_company(name="Acme Hiring")
    give_credit(company, "100")
    make_usage(company)
    make_company(name="Made By The API")  # no balance row, no usage
    django_user_model.objects.create_superuser("staff", "s@example.com", "pw-staff-123")
    return company


def test_staff_use_the_admin_under_the_policy(page, world, shoot):
    page.goto("/admin/login/")
    page.fill("#id_username", "staff")
    page.fill("#id_password", "pw-staff-123")
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    for path, name in [
        ("/admin/", "admin-index"),
        ("/admin/billing/company/", "admin-companies"),
        (f"/admin/billing/company/{world.pk}/change/", "admin-company"),
        (f"/admin/billing/company/{world.pk}/credits/", "admin-credits"),
        ("/admin/usage/questiongenerationusage/", "admin-usage"),
    ]:
        page.goto(path)
        assert page.locator("#content").is_visible()
        for width, height in ((1366, 900), (390, 844)):
            page.set_viewport_size({"width": width, "height": height})
            shoot(page, f"{name}-{width}")
    page.goto("/admin/billing/company/")
    assert page.locator("text=Made By The API").is_visible()
    page.fill("#searchbar", "Acme")
    with page.expect_navigation():
        page.press("#searchbar", "Enter")
    assert page.locator("#result_list tbody tr").count() == 1


def test_the_api_docs_render_from_local_assets_under_the_policy(page, world, shoot, live_server):
    external: list[str] = []
    page.on(
        "request",
        lambda r: external.append(r.url) if not r.url.startswith(live_server.url) else None,
    )
    page.goto("/api/v1/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "Question generation billing API" in page.locator(".info .title").inner_text()
    page.locator(".opblock-summary-path", has_text="/api/v1/usage").first.click()
    for width, height in ((1366, 900), (390, 844)):
        page.set_viewport_size({"width": width, "height": height})
        shoot(page, f"api-docs-{width}")
    assert not [u for u in external if not u.startswith("data:")], external

"""The provider reconciliation page in headless Chromium: read it, drill down, on a phone too."""

from __future__ import annotations

import pytest

from tests.usage.provider_world import (
    OPENAI_MAP,
    import_anthropic,
    import_openai,
    record_anthropic_usage,
    record_openai_usage,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PAGE = (
    "/admin/usage/providerbucket/reconciliation/?provider=openai&since=2026-11-03&until=2026-11-05"
)


@pytest.fixture
def world(django_user_model):
    record_openai_usage()
    record_anthropic_usage()
    import_openai(project_map=str(OPENAI_MAP))
    import_anthropic()
    django_user_model.objects.create_superuser("staff", "s@example.com", "pw-staff-123")


def log_in(page) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill("pw-staff-123")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/")


def test_staff_find_the_lost_generations_and_our_rows_behind_them(page, world, shoot):
    log_in(page)
    page.get_by_role("link", name="Provider buckets").first.click()
    page.get_by_role("link", name="Reconciliation against the provider").click()
    page.get_by_role("link", name="OpenAI").click()
    page.get_by_label("From (UTC day)").fill("2026-11-03")
    page.get_by_label("To (UTC day)").fill("2026-11-05")
    page.get_by_role("button", name="Compare").click()
    page.set_viewport_size({"width": 1366, "height": 900})
    summary = page.get_by_role("list", name="Summary")
    assert "1 tokens lost" not in summary.inner_text()
    assert "27,000 tokens lost" in summary.inner_text() and "$0.08" in summary.inner_text()
    less = page.locator("tr", has=page.locator(".recon-status.we_recorded_less"))
    assert less.count() == 1 and "2026-11-04" in less.inner_text()
    assert page.locator(".recon-status.we_recorded_more").count() == 1
    shoot(page, "provider-reconciliation-1366")
    # The table fits the page at 1366 px: the last column is on screen.
    box = page.get_by_role("columnheader", name="Our rows").bounding_box()
    assert box and box["x"] + box["width"] <= 1366

    page.set_viewport_size({"width": 390, "height": 844})
    shoot(page, "provider-reconciliation-390")
    assert page.get_by_role("button", name="Compare").is_visible()
    page.set_viewport_size({"width": 1366, "height": 900})

    less.get_by_role("link", name="3 rows").click()
    page.wait_for_url("**/questiongenerationusage/?utc_day=2026-11-04&model=gpt-4o")
    assert page.locator("#result_list tbody tr").count() == 3
    assert "UTC day" in page.locator("#changelist-filter").inner_text()
    shoot(page, "provider-reconciliation-drill-down")


def test_only_differences_and_the_other_provider(page, world):
    log_in(page)
    page.goto(PAGE)
    page.get_by_label("Only differences").check()
    page.get_by_role("button", name="Compare").click()
    assert page.locator(".recon-table tbody tr").count() == 2
    page.get_by_role("navigation", name="Providers").get_by_role("link", name="Anthropic").click()
    assert page.locator(".recon-status.we_recorded_less").count() == 1
    assert "claude-sonnet-4" in page.locator("tr.gap").first.inner_text()


def test_staff_upload_the_saved_pages_in_the_admin(page, django_user_model, shoot):
    from tests.usage.provider_world import ANTHROPIC_COSTS, ANTHROPIC_USAGE

    record_anthropic_usage()
    django_user_model.objects.create_superuser("staff", "s@example.com", "pw-staff-123")
    log_in(page)
    page.goto("/admin/usage/providerbucket/")
    page.get_by_role("link", name="Import saved pages").click()
    page.get_by_label("Provider").select_option("anthropic")
    page.get_by_label("Saved pages").set_input_files([str(ANTHROPIC_USAGE), str(ANTHROPIC_COSTS)])
    shoot(page, "provider-import-1366")
    page.get_by_role("button", name="Import").click()
    assert "Imported 4 daily buckets of anthropic" in page.locator(".messagelist").inner_text()
    assert page.locator(".recon-status.we_recorded_less").count() == 1

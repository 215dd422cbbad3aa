"""Drafts in the admin: saving a job links its usage, filters, the backlog page, the action."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from tests.conftest import make_usage
from tests.usage.rollup_check import assert_rollup_matches_raw
from usage.models import Job, QuestionGenerationUsage
from usage.reconcile import reconcile_drafts

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/usage/questiongenerationusage/"


def test_saving_a_job_in_the_admin_links_its_draft_usage(staff_client, company, price):
    make_usage(company, draft_job_id="adm-1")
    make_usage(company, draft_job_id="adm-1")
    response = staff_client.post(
        "/admin/usage/job/add/",
        {"company": str(company.pk), "title": "Data Analyst", "draft_id": "adm-1"},
        follow=True,
    )
    assert response.status_code == 200
    job = Job.objects.get(draft_id="adm-1")
    assert "Linked 2 draft usage rows" in response.content.decode()
    usage = QuestionGenerationUsage.objects.filter(draft_job_id="adm-1")
    assert {(u.job_id, u.status) for u in usage} == {(job.pk, "linked")}
    assert_rollup_matches_raw()


def test_adding_a_draft_id_to_an_existing_job_links_it(staff_client, company, price):
    job = Job.objects.create(company=company, title="Later")
    make_usage(company, draft_job_id="adm-2")
    staff_client.post(
        f"/admin/usage/job/{job.pk}/change/",
        {"company": str(company.pk), "title": "Later", "draft_id": "adm-2"},
    )
    assert QuestionGenerationUsage.objects.get(draft_job_id="adm-2").job == job


def test_pending_filters(staff_client, company, other_company, price):
    make_usage(company, draft_job_id="saved")
    make_usage(company, draft_job_id="open")
    make_usage(company, draft_job_id="old", occurred_at=timezone.now() - timedelta(days=60))
    make_usage(other_company, draft_job_id="saved")  # the job below is not theirs
    Job.objects.create(company=company, title="S", draft_id="saved")
    reconcile_drafts(dry_run=False, abandon_after_days=30, company=other_company)
    reconcile_drafts(dry_run=True)

    def drafts(query: str) -> list[str]:
        response = staff_client.get(f"{CHANGELIST}?{query}")
        assert response.status_code == 200
        return sorted(u.draft_job_id for u in response.context["cl"].result_list)

    assert drafts("pending=saved") == ["saved"]
    assert drafts("pending=all") == ["old", "open", "saved", "saved"]
    assert drafts("pending=abandoned") == []
    reconcile_drafts(abandon_after_days=30, company=company)
    assert drafts("pending=abandoned") == ["old"]
    assert drafts("pending=draft") == ["open", "saved"]


def test_needs_a_price_filter_counts_unpriced_usage(staff_client, company, price):
    make_usage(company, model="no-price-yet")
    make_usage(company)
    response = staff_client.get(f"{CHANGELIST}?needs_price=yes")
    assert "Needs a price (1)" in response.content.decode()
    assert [u.model for u in response.context["cl"].result_list] == ["no-price-yet"]


def test_backlog_page_counts_pending_drafts_per_company(
    staff_client, company, other_company, price, django_assert_max_num_queries
):
    for _ in range(3):
        make_usage(company, draft_job_id="p1")
    make_usage(company, draft_job_id="p2", model="no-price-yet")
    make_usage(other_company, draft_job_id="q")
    with django_assert_max_num_queries(8):
        response = staff_client.get(reverse("admin:usage_pending_drafts"))
    assert response.status_code == 200
    rows = {r["company_id"]: r for r in response.context["companies"]}
    assert (rows[company.pk]["drafts"], rows[company.pk]["rows"]) == (2, 4)
    assert rows[company.pk]["unpriced_rows"] == 1
    assert str(rows[company.pk]["total_cost"]).startswith("0.0225")
    assert (rows[other_company.pk]["drafts"], rows[other_company.pk]["rows"]) == (1, 1)
    assert [r["model"] for r in response.context["unpriced"]] == ["no-price-yet"]
    assert "Pending drafts per company" in response.content.decode()


def test_reconcile_selected_drafts_action(staff_client, company, price):
    first = make_usage(company, draft_job_id="act").usage
    make_usage(company, draft_job_id="act")
    lone = make_usage(company, draft_job_id="no-job").usage
    job = Job.objects.create(company=company, title="A", draft_id="act")
    response = staff_client.post(
        CHANGELIST,
        {"action": "reconcile_selected", "_selected_action": [str(first.pk), str(lone.pk)]},
        follow=True,
    )
    assert "Reconciled 2 rows of 1 drafts" in response.content.decode()
    assert set(
        QuestionGenerationUsage.objects.filter(job=job).values_list("draft_job_id", flat=True)
    ) == {"act"}
    assert QuestionGenerationUsage.objects.get(pk=lone.pk).status == "draft"
    assert_rollup_matches_raw()


def test_the_action_needs_the_change_permission(client, django_user_model, company, price):
    viewer = django_user_model.objects.create_user(
        "viewer", password="pw-viewer-123", is_staff=True
    )
    viewer.user_permissions.add(Permission.objects.get(codename="view_questiongenerationusage"))
    client.force_login(viewer)
    response = client.get(CHANGELIST)
    assert response.status_code == 200
    assert "reconcile_selected" not in response.content.decode()

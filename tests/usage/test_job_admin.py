"""The job admin: staff edits must not link usage across companies, and a job added there links its drafts."""

from __future__ import annotations

import pytest

from tests.conftest import make_job, make_usage
from usage.models import Job, QuestionGenerationUsage

pytestmark = pytest.mark.django_db


def test_moving_a_job_to_another_company_is_not_possible(
    staff_client, company, other_company, price
):
    # The company field was editable: the job's linked usage (of `company`) then
    # belonged to a job of another company, a cross-tenant link.
    job = make_job(company)
    make_usage(company, job_id=str(job.pk))
    staff_client.post(
        f"/admin/usage/job/{job.pk}/change/",
        {"title": "moved", "company": str(other_company.pk), "draft_id": ""},
    )
    job.refresh_from_db()
    assert job.company_id == company.pk
    usage = QuestionGenerationUsage.objects.get()
    assert usage.job.company_id == usage.company_id


def test_a_job_added_in_the_admin_links_its_draft_usage(staff_client, company, price):
    # "Saving a job (API, admin, service) links its drafts": the admin saved the row only.
    make_usage(company, draft_job_id="tmp-9")
    response = staff_client.post(
        "/admin/usage/job/add/", {"title": "t", "company": str(company.pk), "draft_id": "tmp-9"}
    )
    assert response.status_code == 302, response.content[:2000]
    job = Job.objects.get()
    usage = QuestionGenerationUsage.objects.get()
    assert (usage.status, usage.job_id) == ("linked", job.pk)

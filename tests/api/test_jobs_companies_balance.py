"""POST /jobs, POST /companies, GET /companies/{company}/balance."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from billing.models import AuditEvent, Company
from tests.api.conftest import assert_error, usage_payload
from tests.conftest import give_credit, make_job

pytestmark = pytest.mark.django_db


def test_saving_a_job_links_its_draft_usage(api, company, price):
    api.post("/usage", usage_payload(company, draft_job_id="tmp-1", idempotency_key="a"))
    api.post("/usage", usage_payload(company, draft_job_id="tmp-1", idempotency_key="b"))
    job_id = str(uuid.uuid4())
    body = {"company": str(company.pk), "job_id": job_id, "title": "SRE", "draft_job_id": "tmp-1"}
    first = api.post("/jobs", body)
    assert first.status_code == 201, first.content
    assert first.json() == {
        "id": job_id,
        "company": str(company.pk),
        "title": "SRE",
        "draft_job_id": "tmp-1",
        "created": True,
        "linked_usage_rows": 2,
    }
    again = api.post("/jobs", body)
    assert again.status_code == 200
    assert (again.json()["id"], again.json()["linked_usage_rows"]) == (job_id, 0)


def test_job_id_is_generated_when_absent(api, company):
    response = api.post("/jobs", {"company": company.external_id, "title": "Data"})
    assert response.status_code == 201 and uuid.UUID(response.json()["id"])


def test_job_of_another_company_cannot_be_saved_again(api, company, other_company):
    foreign = make_job(other_company)
    body = {"company": str(company.pk), "job_id": str(foreign.pk), "title": "x"}
    assert_error(api.post("/jobs", body), 403, "job_of_another_company")


def test_job_needs_a_title_and_a_uuid(api, company):
    error = assert_error(
        api.post("/jobs", {"company": str(company.pk), "title": ""}), 422, "validation_error"
    )
    assert error["fields"] == {"title": "must not be empty"}
    body = {"company": str(company.pk), "title": "x", "job_id": "not-a-uuid"}
    assert assert_error(api.post("/jobs", body), 422, "validation_error")["fields"] == {
        "job_id": "must be a UUID"
    }


def test_company_key_cannot_save_jobs_for_others(company_api, other_company):
    body = {"company": str(other_company.pk), "title": "x"}
    assert_error(company_api.post("/jobs", body), 403, "forbidden")


def test_companies_are_created_then_updated_idempotently(api):
    body = {"external_id": "org_42", "name": "Acme", "timezone": "Europe/Berlin"}
    first = api.post("/companies", body)
    assert first.status_code == 201, first.content
    company = Company.objects.get(external_id="org_42")
    assert first.json() == {**body, "id": str(company.pk), "created": True}
    again = api.post("/companies", body)
    assert again.status_code == 200 and again.json()["id"] == str(company.pk)
    renamed = api.post("/companies", {**body, "name": "Acme GmbH"})
    assert renamed.json()["name"] == "Acme GmbH"
    assert Company.objects.filter(external_id="org_42").count() == 1
    actions = list(AuditEvent.objects.filter(company=company).values_list("action", flat=True))
    assert sorted(actions) == ["company.create", "company.update"]


def test_companies_refuse_bad_time_zones_and_company_keys(api, company_api):
    error = assert_error(
        api.post("/companies", {"external_id": "o", "name": "n", "timezone": "Mars/Base"}),
        422,
        "validation_error",
    )
    assert "timezone" in error["fields"]
    body = {"external_id": "o", "name": "n"}
    assert_error(company_api.post("/companies", body), 403, "forbidden")


def test_balance_reports_quota(api, company, price):
    give_credit(company, "1")
    company.monthly_spend_limit = Decimal("0.005")
    company.save()
    api.post("/usage", usage_payload(company))  # 0.0075
    response = api.get(f"/companies/{company.external_id}/balance")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "company": str(company.pk),
        "currency": "USD",
        "balance": "0.9925",
        "month_to_date_spend": "0.0075",
        "unpriced_generations_this_month": 0,
        "limits": {
            "overdraft_allowance": "0.00",
            "monthly_spend_limit": "0.005",
            "low_balance_threshold": "10.00",
        },
        "low_balance": True,
        "allowed": False,
        "reasons": ["monthly spend limit reached"],
        "reason_codes": ["company_monthly_limit"],
        "held": "0.00",
        "key": None,  # a platform key has no limits of its own
    }


def test_balance_of_another_tenant_is_refused(company_api, other_company):
    assert_error(company_api.get(f"/companies/{other_company.pk}/balance"), 403, "forbidden")
    assert_error(company_api.get("/companies/org-unknown/balance"), 403, "forbidden")


def test_balance_of_unknown_company_is_404(api):
    assert_error(api.get("/companies/nope/balance"), 404, "company_not_found")

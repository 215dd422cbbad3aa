"""Every admin page a staff user can reach loads, with a small world in it."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.conftest import give_credit, make_company, make_job, make_price, make_usage

pytestmark = pytest.mark.django_db
MODELS = sorted(admin.site._registry, key=lambda m: m._meta.label)


@pytest.fixture
def world(db):
    company = make_company()
    make_price()
    give_credit(company, "50")
    job = make_job(company, draft_job_id="draft-1")
    make_usage(company, job_id=str(job.pk))
    make_usage(company, draft_job_id="draft-2")
    make_usage(company, model="unpriced-model")
    return company


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m._meta.label)
def test_changelist_add_and_change_pages_load_for_staff(staff_client, world, model):
    opts = model._meta
    changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    assert staff_client.get(changelist).status_code == 200
    model_admin = admin.site._registry[model]
    if model_admin.has_add_permission(_request(staff_client)):
        add = reverse(f"admin:{opts.app_label}_{opts.model_name}_add")
        assert staff_client.get(add).status_code == 200
    obj = model._default_manager.first()
    if obj is not None:
        change = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        assert staff_client.get(change).status_code == 200


def _request(client):
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.user = client.get("/admin/").wsgi_request.user
    return request


def test_admin_index_loads(staff_client, world):
    assert staff_client.get(reverse("admin:index")).status_code == 200

"""A company's members see their company only: anything else is a 404 or nothing."""

from __future__ import annotations

import pytest
from django.urls import reverse

from billing.members import add_member
from tests.conftest import make_job, make_price, make_usage
from usage.access import company_for, visible_companies

pytestmark = pytest.mark.django_db


@pytest.fixture
def foreign(other_company):
    make_price("m")
    job = make_job(other_company, title="Their secret job")
    make_usage(other_company, model="m", job_id=str(job.pk), question_count=77)
    return other_company, job


def url(company, **params):
    from urllib.parse import urlencode

    return reverse("billing:company", args=[company.pk]) + "?" + urlencode(params)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"tab": "usage"},
        {"tab": "credits"},
        {"tab": "statements"},
        {"tab": "usage", "format": "csv"},
        {"tab": "usage", "group": "generation", "format": "csv"},
    ],
)
def test_member_gets_404_for_another_company(member_client, foreign, params):
    other, _ = foreign
    assert member_client.get(url(other, **params)).status_code == 404


def test_member_gets_404_for_another_company_job_drill_down(member_client, company, foreign):
    _, job = foreign
    for fmt in ("", "csv"):
        response = member_client.get(
            url(company, tab="usage", group="generation", job=job.pk, format=fmt)
        )
        assert response.status_code == 404


def test_tampered_filters_show_nothing_of_another_company(member_client, company, foreign):
    make_usage(company, model="m", question_count=3)
    response = member_client.get(url(company, tab="usage", model="m", group="generation"))
    assert response.status_code == 200
    assert response.context["totals"].questions == 3  # 77 is the other company's
    assert "Their secret job" not in response.content.decode()
    bogus = member_client.get(url(company, tab="usage", job="not-a-uuid"))
    assert bogus.status_code == 200 and bogus.context["filters"].job_id is None
    assert bogus.context["totals"].questions == 3


def test_member_cannot_see_the_staff_overview_or_admin(member_client, company, foreign):
    response = member_client.get(reverse("billing:home"))
    assert response.status_code == 302  # to their own company, not the list
    assert member_client.get(reverse("admin:index")).status_code == 302  # admin login
    assert member_client.get("/admin/billing/company/").status_code == 302


def test_staff_without_view_permission_sees_nothing(client, django_user_model, company):
    user = django_user_model.objects.create_user("clerk", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(url(company)).status_code == 404
    assert visible_companies(user).count() == 0


def test_user_without_membership_gets_404_and_a_hint(client, django_user_model, company):
    client.force_login(django_user_model.objects.create_user("nobody", password="pw"))
    assert client.get(url(company)).status_code == 404
    assert "not a member of any company" in client.get(reverse("billing:home")).content.decode()


def test_company_for_is_the_single_gate(django_user_model, company, other_company):
    member = add_member(company=company, username="a").membership.user
    assert company_for(member, company.pk) == company
    from django.http import Http404

    for bad in (other_company.pk, "garbage", "00000000-0000-0000-0000-000000000000"):
        with pytest.raises(Http404):
            company_for(member, bad)

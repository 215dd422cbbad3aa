"""Adding a company's members: the service, the command, and the admin links."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse

from billing.members import add_member
from billing.models import AuditEvent, Membership
from core.errors import ServiceError

pytestmark = pytest.mark.django_db


def test_add_member_creates_user_and_is_idempotent(company):
    first = add_member(company=company, username="ana", password="s3cret-pass!")
    assert first.user_created and first.created
    user = first.membership.user
    assert user.check_password("s3cret-pass!") and not user.is_staff
    again = add_member(company=company, username="ana", password="other")
    assert not (again.user_created or again.created or again.role_changed)
    assert get_user_model().objects.get(username="ana").check_password("s3cret-pass!")
    viewer = add_member(company=company, username="ana", role="viewer")
    assert viewer.role_changed and Membership.objects.get(user=user).role == "viewer"
    assert list(AuditEvent.objects.values_list("action", flat=True).order_by("id")) == [
        "member.add",
        "member.role",
    ]


def test_add_member_refuses_unknown_role(company):
    with pytest.raises(ServiceError):
        add_member(company=company, username="x", role="owner")
    assert not get_user_model().objects.filter(username="x").exists()


def test_command_adds_member_and_reports_json(company, capsys):
    call_command(
        "add_member", str(company.pk), "bob", "--role", "viewer", "--password", "pw-123456"
    )
    user = get_user_model().objects.get(username="bob")
    assert user.memberships.get().role == "viewer" and user.check_password("pw-123456")
    call_command("add_member", company.external_id, "bob", "--role", "viewer", "--json")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["membership_created"] is False and summary["user_created"] is False


def test_command_dry_run_changes_nothing_and_unknown_company_fails(company):
    call_command("add_member", str(company.pk), "carol", "--dry-run")
    assert not get_user_model().objects.filter(username="carol").exists()
    with pytest.raises(CommandError):
        call_command("add_member", "no-such-company", "carol")


def test_admin_links_to_the_billing_page(staff_client, company):
    billing_url = reverse("billing:company", args=[company.pk])
    change = staff_client.get(reverse("admin:billing_company_change", args=[company.pk]))
    assert billing_url in change.content.decode()
    assert "membership" in change.content.decode().lower()  # members are added inline
    index = staff_client.get(reverse("admin:index"))
    assert reverse("billing:home") in index.content.decode()

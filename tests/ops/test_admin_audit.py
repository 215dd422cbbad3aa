"""Staff changes of credit policy and model prices in the admin land in the audit trail."""

from __future__ import annotations

import pytest

from billing.models import AuditEvent, ModelPrice
from tests.conftest import make_company, make_price

pytestmark = pytest.mark.django_db


def company_form(company, **changes) -> dict:
    data = {
        "name": company.name,
        "external_id": company.external_id,
        "timezone": company.timezone,
        "currency": company.currency,
        "is_active": "on",
        "low_balance_threshold": str(company.low_balance_threshold),
        "overdraft_allowance": str(company.overdraft_allowance),
        "monthly_spend_limit": "",
        "billing_emails": company.billing_emails,
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    data.update(changes)
    return data


def price_form(**values) -> dict:
    data = {
        "model": "gpt-new",
        "service_tier": "standard",
        "input_per_million": "1.000000",
        "cached_input_per_million": "0.500000",
        "output_per_million": "4.000000",
        "currency": "USD",
        "effective_from_0": "2026-01-01",
        "effective_from_1": "00:00:00",
        "effective_to_0": "",
        "effective_to_1": "",
    }
    data.update(values)
    return data


def test_credit_policy_change_is_audited_with_before_and_after(staff_client):
    company = make_company()
    url = f"/admin/billing/company/{company.pk}/change/"
    response = staff_client.post(
        url, company_form(company, overdraft_allowance="25", monthly_spend_limit="500")
    )
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(action="company.credit_policy.change")
    assert event.actor.username == "staff" and event.company == company
    assert event.before == {"overdraft_allowance": "0", "monthly_spend_limit": None}
    assert event.after == {"overdraft_allowance": "25", "monthly_spend_limit": "500"}
    assert "low_balance_threshold" not in event.after  # unchanged fields are not listed


def test_company_created_in_the_admin_records_its_credit_policy(staff_client):
    data = company_form(make_company(), name="New Co", external_id="org_new")
    response = staff_client.post("/admin/billing/company/add/", data)
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(action="company.credit_policy.create")
    assert event.company.external_id == "org_new" and event.before is None
    assert event.after == {"low_balance_threshold": "10", "overdraft_allowance": "0"}


def test_saving_a_company_without_policy_changes_writes_no_audit(staff_client):
    company = make_company()
    staff_client.post(
        f"/admin/billing/company/{company.pk}/change/", company_form(company, name="Renamed")
    )
    assert not AuditEvent.objects.filter(action__startswith="company.").exists()


def test_model_price_create_change_and_delete_are_audited(staff_client):
    response = staff_client.post("/admin/billing/modelprice/add/", price_form())
    assert response.status_code == 302, response.content[:2000]
    price = ModelPrice.objects.get(model="gpt-new")
    assert price.created_by.username == "staff"
    # Added through set_model_price: defaults filled in, audited as the service does.
    created = AuditEvent.objects.get(action="model_price.set")
    assert created.before is None and created.after["output_per_million"] == "4"
    assert created.after["cache_write_5m_per_million"] == "1"  # the input rate
    assert created.actor.username == "staff" and created.object_id == str(price.pk)

    # Rates are fixed once written: the change form shows them read-only, and only
    # the end of a period that priced nothing may move.
    end = {"effective_to_0": "2026-06-01", "effective_to_1": "00:00:00"}
    response = staff_client.post(
        f"/admin/billing/modelprice/{price.pk}/change/", price_form(output_per_million="5", **end)
    )
    assert response.status_code == 302
    price.refresh_from_db()
    assert price.output_per_million == 4
    changed = AuditEvent.objects.get(action="model_price.change")
    assert changed.before == {"effective_to": None}
    assert changed.after == {"effective_to": "2026-06-01T00:00:00+00:00"}

    response = staff_client.post(f"/admin/billing/modelprice/{price.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    deleted = AuditEvent.objects.get(action="model_price.delete")
    assert deleted.before["model"] == "gpt-new" and deleted.after["model"] is None


def test_audit_trail_is_visible_read_only_in_the_admin(staff_client):
    price = make_price()
    staff_client.post(
        f"/admin/billing/modelprice/{price.pk}/change/",
        price_form(
            model=price.model,
            effective_from_0=price.effective_from.date().isoformat(),
            effective_from_1=price.effective_from.time().replace(microsecond=0).isoformat(),
            effective_to_0="2031-01-01",
            effective_to_1="00:00:00",
        ),
    )
    event = AuditEvent.objects.get(action="model_price.change")
    listing = staff_client.get("/admin/billing/auditevent/")
    assert listing.status_code == 200 and b"model_price.change" in listing.content
    detail = staff_client.get(f"/admin/billing/auditevent/{event.pk}/change/")
    assert (
        detail.status_code == 200
        and b"&quot;effective_to&quot;: &quot;2031-01-01T00:00:00+00:00&quot;" in detail.content
    )
    assert staff_client.get("/admin/billing/auditevent/add/").status_code == 403


def test_a_price_that_priced_usage_is_read_only_in_the_admin(staff_client, company):
    from tests.conftest import make_usage

    used = make_price("used-model")
    unused = make_price("unused-model")
    make_usage(company, model="used-model")
    page = staff_client.get(f"/admin/billing/modelprice/{used.pk}/change/").content.decode()
    assert 'name="output_per_million"' not in page  # shown, not editable
    page = staff_client.get(f"/admin/billing/modelprice/{unused.pk}/change/").content.decode()
    # Rates are fixed once written; an unused period's end may still move.
    assert 'name="output_per_million"' not in page and 'name="effective_to_0"' in page
    page = staff_client.get(f"/admin/billing/modelprice/{used.pk}/change/").content.decode()
    assert 'name="effective_to_0"' not in page

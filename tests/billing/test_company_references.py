"""A company reference (UUID or external id) names exactly one company: an external id
that reads as another company's UUID is refused (API, admin, and by a trigger for any
writer, concurrent ones included), and so is a company whose id is another's external id."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from billing.companies import reference_uuid, resolve_company
from billing.models import Company
from tests.api.conftest import api_client_for, assert_error
from tests.conftest import make_company

pytestmark = pytest.mark.django_db


def spellings(value: uuid.UUID) -> list[str]:
    return [str(value), str(value).upper(), "{" + str(value) + "}", value.hex]


@pytest.mark.parametrize("form", range(4))
def test_an_external_id_equal_to_another_companys_uuid_is_refused(form):
    target = make_company()
    body = {"external_id": spellings(target.pk)[form], "name": "Impostor"}
    error = assert_error(api_client_for().post("/companies", body), 422, "validation_error")
    assert error["fields"] == {"external_id": "is the id of another company"}
    assert Company.objects.count() == 1
    assert resolve_company(str(target.pk)) == target


def test_a_uuid_shaped_external_id_of_no_company_is_still_fine():
    free = "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    response = api_client_for().post("/companies", {"external_id": free, "name": "UUID tenant"})
    assert response.status_code == 201
    assert resolve_company(free).name == "UUID tenant"


def test_the_admin_form_refuses_another_companys_uuid_as_external_id(staff_client):
    target, other = make_company(), make_company()
    response = staff_client.post(
        reverse("admin:billing_company_change", args=[other.pk]),
        {
            "name": other.name,
            "external_id": str(target.pk),
            "timezone": "UTC",
            "currency": "USD",
            "low_balance_threshold": "10",
            "overdraft_allowance": "0",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 200
    assert "is the id of another company" in response.content.decode()
    other.refresh_from_db()
    assert other.external_id != str(target.pk)


def test_the_database_refuses_it_from_any_writer():
    target, other = make_company(), make_company()
    with pytest.raises(IntegrityError, match="is the id of another company"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "UPDATE billing_company SET external_id = %s WHERE id = %s",
                ["{" + str(target.pk).upper() + "}", other.pk],
            )


def test_a_company_whose_id_is_another_companys_external_id_is_refused():
    taken = uuid.uuid4()
    make_company(external_id=str(taken))
    with pytest.raises(IntegrityError, match="is the external id of another company"):
        with transaction.atomic():
            Company.objects.create(id=taken, name="Clash")


def test_a_company_may_carry_its_own_uuid_as_external_id():
    company = make_company()
    company.external_id = str(company.pk)
    company.save()
    assert resolve_company(str(company.pk)) == company


def test_references_read_as_uuids_the_way_the_database_reads_them():
    value = uuid.uuid4()
    for text in spellings(value):
        assert reference_uuid(text) == value
        with connection.cursor() as cursor:
            cursor.execute("SELECT billing_ref_uuid(%s)", [text])
            assert cursor.fetchone()[0] == value
    for text in ["urn:uuid:" + str(value), str(value)[:-1], "org_42", "١" * 32]:
        assert reference_uuid(text) is None
        with connection.cursor() as cursor:
            cursor.execute("SELECT billing_ref_uuid(%s)", [text])
            assert cursor.fetchone()[0] is None


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_cannot_make_a_reference_ambiguous():
    # One transaction creates a company with id X and holds it open; another sets an
    # external id X meanwhile. It waits for the first to commit, then sees X and is refused.
    new_id = uuid.uuid4()
    other = make_company()
    created, go = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def create() -> None:
        with transaction.atomic():
            Company.objects.create(id=new_id, name="New")
            created.set()
            go.wait(5)
        connection.close()

    def claim() -> None:
        created.wait(5)
        try:
            with transaction.atomic():
                Company.objects.filter(pk=other.pk).update(external_id=str(new_id))
            outcome["claim"] = "committed"
        except IntegrityError as exc:
            outcome["claim"] = str(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=create), threading.Thread(target=claim)]
    for thread in threads:
        thread.start()
    created.wait(5)
    threading.Timer(0.5, go.set).start()  # the claim is waiting on the lock by then
    for thread in threads:
        thread.join(10)
    assert "is the id of another company" in str(outcome["claim"])
    other.refresh_from_db()
    assert other.external_id != str(new_id)


def test_the_schema_doctor_finds_a_dropped_reference_trigger_and_its_fix_restores_it():
    from ops.doctor import diagnose

    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER company_reference_unambiguous ON billing_company")
    (finding,) = [f for f in diagnose() if f.name == "company_reference_unambiguous"]
    assert finding.code == "missing_guard" and "company_references_unambiguous" in finding.fix
    with connection.cursor() as cursor:
        for sql in finding.sql:
            cursor.execute(sql)
    assert not [f for f in diagnose() if f.name == "company_reference_unambiguous"]

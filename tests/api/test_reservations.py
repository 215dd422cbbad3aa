"""POST/GET/DELETE /api/v1/reservations, and usage events that settle a hold."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import LedgerEntry, Reservation
from tests.api.conftest import api_client_for, assert_error, usage_payload
from tests.conftest import give_credit, make_company

pytestmark = pytest.mark.django_db


def hold_body(company, key="hold-1", **kwargs) -> dict:
    body = {"company": str(company.pk), "estimate": {"cost": "1.00"}, "idempotency_key": key}
    body.update(kwargs)
    return body


def test_a_hold_is_admitted_and_counts_against_the_balance_at_once(api, company):
    give_credit(company, "2.5")
    first = api.post("/reservations", hold_body(company, "a"))
    assert first.status_code == 201, first.content
    body = first.json()
    assert body["amount"] == "1.00" and body["status"] == "open" and body["holding"]
    assert body["api_key"] == "test key"
    api.post("/reservations", hold_body(company, "b"))
    quota = api.get(f"/companies/{company.pk}/balance").json()
    assert quota["balance"] == "2.50" and quota["held"] == "2.00" and quota["allowed"]
    refused = api.post("/reservations", hold_body(company, "c"))
    error = assert_error(refused, 402, "budget_exceeded")
    assert error["reasons"] == ["balance"] and "estimate" in error["fields"]
    assert not Reservation.objects.filter(idempotency_key="c").exists()
    assert not LedgerEntry.objects.filter(kind="usage").exists()  # holds are never money


def test_the_same_idempotency_key_replays_and_another_body_conflicts(api, company):
    give_credit(company, "10")
    first = api.post("/reservations", hold_body(company))
    again = api.post("/reservations", hold_body(company))
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    other = api.post("/reservations", hold_body(company, estimate={"cost": "2"}))
    assert_error(other, 409, "idempotency_conflict")
    assert Reservation.objects.count() == 1


def test_an_estimate_of_tokens_is_priced_at_todays_price(api, company, price):
    give_credit(company, "10")
    estimate = {"model": "gpt-test", "prompt_tokens": 1000, "completion_tokens": 500}
    response = api.post("/reservations", hold_body(company, estimate=estimate))
    assert response.status_code == 201, response.content
    assert Decimal(response.json()["amount"]) == Decimal("0.0075")


@pytest.mark.parametrize(
    ("estimate", "extra", "field"),
    [
        ({"cost": "1", "model": "gpt-test"}, {}, "estimate"),
        ({"model": "gpt-test", "prompt_tokens": 1}, {}, "estimate.completion_tokens"),
        ({"cost": "-1"}, {}, "estimate.cost"),
        ({"cost": "1"}, {"ttl_seconds": 10**6}, "ttl_seconds"),
        ({"cost": "1"}, {"idempotency_key": "  "}, "idempotency_key"),
    ],
)
def test_a_bad_reservation_is_refused_naming_its_field(api, company, price, estimate, extra, field):
    response = api.post("/reservations", {**hold_body(company, estimate=estimate), **extra})
    error = assert_error(response, 422, "validation_error")
    assert field in error["fields"]
    assert not Reservation.objects.exists()


def test_an_estimate_of_a_model_without_a_price_is_a_404_naming_the_model(api, company, price):
    estimate = {"model": "no-price", "prompt_tokens": 1, "completion_tokens": 1}
    response = api.post("/reservations", hold_body(company, estimate=estimate))
    assert "estimate.model" in assert_error(response, 404, "price_not_found")["fields"]


def test_usage_that_names_its_hold_settles_it_at_the_actual_cost(api, company, price):
    give_credit(company, "10")
    hold = api.post("/reservations", hold_body(company, estimate={"cost": "0.005"})).json()
    usage = api.post("/usage", usage_payload(company, reservation_id=hold["id"]))
    assert usage.status_code == 201, usage.content
    assert usage.json()["balance"] == "9.9925"  # the actual 0.0075, not the estimate
    settled = Reservation.objects.get(pk=hold["id"])
    assert settled.status == "settled" and str(settled.settled_usage_id) == usage.json()["id"]
    assert settled.settled_cost == Decimal("0.0075")
    quota = api.get(f"/companies/{company.pk}/balance").json()
    assert quota["held"] == "0.00"
    replay = api.post("/usage", usage_payload(company, reservation_id=hold["id"]))
    assert replay.status_code == 200 and replay.json()["id"] == usage.json()["id"]
    again = api.post(
        "/usage", usage_payload(company, idempotency_key="k2", reservation_id=hold["id"])
    )
    error = assert_error(again, 409, "conflict")
    assert "reservation_id" in error["fields"]


def test_usage_naming_a_released_or_foreign_hold_is_refused_naming_reservation_id(api, company):
    give_credit(company, "10")
    hold = api.post("/reservations", hold_body(company)).json()
    assert api.delete(f"/reservations/{hold['id']}").json()["status"] == "released"
    refused = api.post("/usage", usage_payload(company, reservation_id=hold["id"]))
    assert "reservation_id" in assert_error(refused, 409, "conflict")["fields"]
    other = make_company()
    give_credit(other, "10")
    foreign = api.post("/reservations", hold_body(other)).json()
    refused = api.post("/usage", usage_payload(company, reservation_id=foreign["id"]))
    assert "reservation_id" in assert_error(refused, 404, "not_found")["fields"]
    bad = api.post("/usage", usage_payload(company, reservation_id="not-a-uuid"))
    assert "reservation_id" in assert_error(bad, 422, "validation_error")["fields"]
    assert not company.usage.exists()


def test_release_is_idempotent_and_scoped_to_the_keys_company(api, company, other_company):
    give_credit(other_company, "10")
    hold = api.post("/reservations", hold_body(other_company)).json()
    company_key = api_client_for(company, name="company key")
    assert_error(company_key.delete(f"/reservations/{hold['id']}"), 404, "not_found")
    assert_error(company_key.get(f"/reservations/{hold['id']}"), 404, "not_found")
    first = api.delete(f"/reservations/{hold['id']}")
    second = api.delete(f"/reservations/{hold['id']}")
    assert first.status_code == second.status_code == 200
    assert second.json()["status"] == "released" and not second.json()["holding"]
    assert api.get(f"/reservations/{hold['id']}").json()["status"] == "released"


def test_an_expired_hold_counts_as_released_before_the_cron_and_still_settles(api, company):
    give_credit(company, "1")
    hold = api.post("/reservations", hold_body(company, ttl_seconds=60)).json()
    assert not api.get(f"/companies/{company.pk}/balance").json()["allowed"]
    Reservation.objects.filter(pk=hold["id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    quota = api.get(f"/companies/{company.pk}/balance").json()
    assert quota["held"] == "0.00" and quota["allowed"]
    usage = api.post("/usage", usage_payload(company, cost="0.9", reservation_id=hold["id"]))
    assert usage.status_code == 201, usage.content
    assert Reservation.objects.get(pk=hold["id"]).status == "settled"


def test_expire_reservations_marks_due_holds_once_with_a_dry_run_first(api, company, capsys):
    give_credit(company, "10")
    for key in ("a", "b"):
        api.post("/reservations", hold_body(company, key))
    Reservation.objects.filter(idempotency_key="a").update(expires_at=timezone.now())
    call_command("expire_reservations", "--dry-run", "--json")
    assert '"holds": 1' in capsys.readouterr().out
    assert Reservation.objects.get(idempotency_key="a").status == "open"
    call_command("expire_reservations", "--json")
    assert '"holds": 1' in capsys.readouterr().out
    call_command("expire_reservations", "--json")
    assert '"holds": 0' in capsys.readouterr().out
    statuses = dict(Reservation.objects.values_list("idempotency_key", "status"))
    assert statuses == {"a": "expired", "b": "open"}


def test_a_batch_settles_each_hold_once(api, company, price):
    give_credit(company, "10")
    hold = api.post("/reservations", hold_body(company)).json()
    events = [
        usage_payload(company, idempotency_key=k, reservation_id=hold["id"]) for k in ("x", "y")
    ]
    results = api.post("/usage/batch", {"events": events}).json()["results"]
    assert [r["status"] for r in results] == [201, 409]
    assert "reservation_id" in results[1]["error"]["fields"]
    assert Reservation.objects.get(pk=hold["id"]).status == "settled"


def test_key_limits_refuse_holds_and_show_in_the_quota_check(company, price):
    give_credit(company, "100")
    key_api = api_client_for(company, name="integration", daily_limit="1", monthly_limit="5")
    assert (
        key_api.post("/reservations", hold_body(company, "a", estimate={"cost": "0.6"})).status_code
        == 201
    )
    refused = key_api.post("/reservations", hold_body(company, "b", estimate={"cost": "0.6"}))
    assert assert_error(refused, 402, "budget_exceeded")["reasons"] == ["key_daily_limit"]
    other_key = api_client_for(company, name="other")
    assert (
        other_key.post(
            "/reservations", hold_body(company, "c", estimate={"cost": "0.6"})
        ).status_code
        == 201
    )
    key_api.post("/usage", usage_payload(company, cost="1"))
    quota = key_api.get(f"/companies/{company.pk}/balance").json()
    assert not quota["allowed"]
    assert quota["reason_codes"] == ["key_daily_limit"]
    assert quota["key"] == {
        "name": "integration",
        "daily_limit": "1.00",
        "monthly_limit": "5.00",
        "day_spend": "1.00",
        "month_spend": "1.00",
        "held": "0.60",
    }
    assert "daily spend limit of this API key reached" in quota["reasons"]
    assert other_key.get(f"/companies/{company.pk}/balance").json()["allowed"]

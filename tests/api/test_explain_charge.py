"""GET /api/v1/usage/{id}: a recorded charge, line by line, and the entries that debited it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.models import ModelPrice
from billing.prices import LongContext, Tokens, charge_for, correct_model_price, set_model_price
from tests.api.conftest import api_client_for, assert_error, usage_payload
from tests.conftest import give_credit
from usage.pricing import reprice_usage

pytestmark = pytest.mark.django_db
START = timezone.now() - timedelta(days=30)


@pytest.fixture
def price(db) -> ModelPrice:
    return set_model_price(
        model="m", input_per_million="3", cached_input_per_million="0.3",
        cache_write_5m_per_million="3.75", cache_write_1h_per_million="6",
        output_per_million="15", effective_from=START,
        long_context=LongContext(threshold=200_000, input_per_million="6",
                                 output_per_million="22.5"),
    )  # fmt: skip


def anthropic_event(company, **usage) -> dict:
    body = usage_payload(company, model="m", prompt_tokens=None, completion_tokens=None)
    return body | {"provider": "anthropic", "usage": usage}


def test_a_charge_is_explained_line_by_line_and_adds_up_to_the_cost(api, company, price):
    give_credit(company, "10")
    event = anthropic_event(
        company, input_tokens=2_000, output_tokens=1_000, cache_read_input_tokens=10_000,
        cache_creation={"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 100},
    )  # fmt: skip
    recorded = api.post("/usage", event).json()
    body = api.get(f"/usage/{recorded['id']}").json()
    charge = body["charge"]
    assert [(line["dimension"], line["tokens"], line["rate_per_million"], line["amount"])
            for line in charge["lines"]] == [
        ("input", 2_000, "3.00", "0.006"),
        ("cache_read", 10_000, "0.30", "0.003"),
        ("cache_write_5m", 400, "3.75", "0.0015"),
        ("cache_write_1h", 100, "6.00", "0.0006"),
        ("output", 1_000, "15.00", "0.015"),
        ("reasoning", 0, "15.00", "0.00"),
    ]  # fmt: skip
    assert charge["total"] == body["usage"]["cost"] == recorded["cost"] == "0.0261"
    assert sum(Decimal(line["amount"]) for line in charge["lines"]) == Decimal(charge["total"])
    assert charge["price"]["id"] == price.pk and charge["price"]["effective_to"] is None
    assert (charge["service_tier"], charge["long_context"]) == ("standard", False)
    assert charge["price"]["long_context_threshold"] == 200_000
    assert body["debit"]["amount"] == "-0.0261" and body["debit"]["balance_after"] == "9.9739"
    assert body["provider_usage"] == event["usage"] and body["corrections"] == []


def test_a_long_context_request_names_the_tier_it_paid(api, company, price):
    event = anthropic_event(company, input_tokens=150_000, output_tokens=0,
                            cache_read_input_tokens=60_000)  # fmt: skip
    recorded = api.post("/usage", event).json()
    charge = api.get(f"/usage/{recorded['id']}").json()["charge"]
    assert charge["long_context"] is True
    # the whole request at the long rates: cache reads default to the long input rate
    assert [line["rate_per_million"] for line in charge["lines"][:2]] == ["6.00", "6.00"]
    assert charge["total"] == "1.26"


def test_reported_and_unpriced_rows_have_no_charge(api, company, price):
    reported = api.post("/usage", usage_payload(company, model="m", cost="0.5")).json()
    unpriced = api.post(
        "/usage", usage_payload(company, model="nobody", idempotency_key="u")
    ).json()
    for row in (reported, unpriced):
        body = api.get(f"/usage/{row['id']}").json()
        assert body["charge"] is None and body["usage"]["cost_source"] in ("reported", "unpriced")
    assert api.get(f"/usage/{unpriced['id']}").json()["debit"] is None


def test_a_company_key_sees_only_its_own_rows(api, company, other_company, price):
    mine = api.post("/usage", usage_payload(company, model="m")).json()
    own, other = api_client_for(company), api_client_for(other_company)
    assert own.get(f"/usage/{mine['id']}").status_code == 200
    error = assert_error(other.get(f"/usage/{mine['id']}"), 404, "not_found")
    assert error["fields"] == {"usage_id": "not found"}
    assert_error(own.get(f"/usage/{uuid.uuid4()}"), 404, "not_found")
    assert_error(own.get("/usage/not-a-uuid"), 404, "not_found")
    assert (
        api_client_for(company).get("/usage/x", HTTP_AUTHORIZATION="Bearer nope").status_code == 401
    )


def test_the_explanation_answers_in_two_queries(api, company, price, django_assert_max_num_queries):
    row = api.post("/usage", usage_payload(company, model="m")).json()
    from usage.charges import explain_usage

    with django_assert_max_num_queries(2):
        explained = explain_usage(usage_id=row["id"], company_id=company.pk)
    assert explained.charge.total == explained.usage.cost


def test_a_corrected_price_explains_the_new_cost_and_lists_the_correction(api, company, price):
    give_credit(company, "10")
    row = api.post("/usage", usage_payload(company, model="m", cached_prompt_tokens=0)).json()
    fixed = correct_model_price(price=price, input_per_million="3", output_per_million="10")
    reprice_usage(reprice_priced=True, apply=True)
    body = api.get(f"/usage/{row['id']}").json()
    # 1,000 x 3 + 500 x 10 instead of 500 x 15
    assert (body["usage"]["cost"], body["charge"]["total"]) == ("0.008", "0.008")
    assert body["charge"]["price"]["id"] == fixed.pk
    assert body["debit"]["amount"] == "-0.0105"
    assert [c["amount"] for c in body["corrections"]] == ["0.0025"]


def test_a_price_period_is_fixed_once_written(price):
    with pytest.raises(IntegrityError, match="fixed once written"), transaction.atomic():
        ModelPrice.objects.filter(pk=price.pk).update(output_per_million=Decimal("1"))
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelPrice.objects.filter(pk=price.pk).update(long_context_threshold=1)
    # Closing a period, as a new one does, is the one change allowed.
    set_model_price(model="m", input_per_million="1", output_per_million="1",
                    effective_from=START + timedelta(days=1))  # fmt: skip
    price.refresh_from_db()
    assert price.effective_to == START + timedelta(days=1)


def test_a_superseded_period_stays_out_of_lookups_and_of_the_overlap_rule(price):
    fixed = correct_model_price(price=price, input_per_million="4", output_per_million="16")
    price.refresh_from_db()
    assert price.superseded_at is not None and fixed.corrects_id == price.pk
    assert (fixed.effective_from, fixed.effective_to) == (price.effective_from, price.effective_to)
    from billing.prices import price_in_effect

    assert price_in_effect("m", START + timedelta(days=1)).pk == fixed.pk
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelPrice.objects.filter(pk=price.pk).update(superseded_at=None)  # no way back


def test_charge_for_is_exact_for_prices_finer_than_six_places(db):
    price = set_model_price(model="fine", input_per_million="0.141953125",
                            output_per_million="0.399625", effective_from=START)  # fmt: skip
    charge = charge_for(price, Tokens(prompt=1_234_567, completion=7))
    # 1,234,567 x 0.141953125 + 7 x 0.399625, per million
    assert charge.lines[0].amount == Decimal("0.175250643671875")  # 15 places, never rounded
    assert charge.lines[4].amount == Decimal("0.000002797375")
    assert charge.total == Decimal("0.175253441046875")


def test_a_fifteen_place_cost_is_stored_and_debited_exactly(api, company, db):
    set_model_price(model="fine", input_per_million="0.141953125", output_per_million="1",
                    effective_from=START)  # fmt: skip
    give_credit(company, "1")
    row = api.post("/usage", usage_payload(company, model="fine", prompt_tokens=1_234_567,
                                           completion_tokens=0)).json()  # fmt: skip
    assert row["cost"] == "0.175250643671875" and row["balance"] == "0.824749356328125"
    body = api.get(f"/usage/{row['id']}").json()
    assert body["debit"]["amount"] == "-0.175250643671875"
    from billing.invariants import check_ledger

    assert check_ledger() == []


def test_dropping_the_typmod_of_a_money_column_rewrites_nothing(db):
    """The claim the migration rests on, on this server: numeric(28,12) -> numeric keeps
    the table's and its covering index's files (no rewrite, no rebuild)."""
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE typmod_probe (id int, cost numeric(28, 12))")
        cursor.execute("CREATE INDEX typmod_probe_ix ON typmod_probe (id) INCLUDE (cost)")
        cursor.execute(
            "INSERT INTO typmod_probe SELECT g, g * 0.001 FROM generate_series(1, 1000) g"
        )
        files = "SELECT relfilenode FROM pg_class WHERE relname IN ('typmod_probe', 'typmod_probe_ix') ORDER BY relname"  # fmt: skip
        cursor.execute(files)
        before = cursor.fetchall()
        cursor.execute("ALTER TABLE typmod_probe ALTER COLUMN cost TYPE numeric")
        cursor.execute(files)
        assert cursor.fetchall() == before
        cursor.execute("ALTER TABLE typmod_probe ALTER COLUMN cost TYPE numeric(38, 18)")
        cursor.execute(files)
        assert cursor.fetchall() != before  # a scale change does rewrite

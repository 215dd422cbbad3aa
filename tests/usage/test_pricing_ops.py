"""Pricing operations: set_model_price, and reprice_usage's dry run and apply."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from billing.errors import PriceError, PriceOverlap
from billing.models import AuditEvent, CreditBalance, LedgerEntry, ModelPrice
from billing.prices import correct_model_price, set_model_price
from core.dates import parse_instant
from tests.conftest import give_credit, make_event, make_price, make_usage
from tests.usage.reconcile_helpers import usage_state
from tests.usage.rollup_check import assert_rollup_matches_raw
from usage.models import QuestionGenerationUsage
from usage.pricing import reprice_usage
from usage.recording import record_usage

pytestmark = pytest.mark.django_db
DAY = datetime(2026, 10, 1, tzinfo=UTC)


def command(name: str, *args: str) -> str:
    out = io.StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue()


def ledger_of(usage: QuestionGenerationUsage) -> Decimal:
    return LedgerEntry.objects.filter(usage_id=usage.pk).aggregate(s=Sum("amount"))["s"]


def assert_balance_equals_ledger(company) -> None:
    ledger = LedgerEntry.objects.filter(company=company).aggregate(s=Sum("amount"))["s"]
    assert CreditBalance.objects.get(company=company).balance == ledger


# --- set_model_price ---------------------------------------------------------------


def test_dates_are_utc_midnight_unless_an_offset_is_given():
    assert parse_instant("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_instant("2026-12-01T09:00+01:00") == datetime(2026, 12, 1, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="offset"):
        parse_instant("2026-12-01T09:00")
    with pytest.raises(ValueError):
        parse_instant("first of december")


def test_set_model_price_closes_the_open_period(db):
    first = set_model_price(
        model="m", input_per_million="2.50", output_per_million="10", effective_from=DAY
    )
    out = command(
        "set_model_price", "m", "--input", "2", "--output", "8", "--cached-input", "0.5",
        "--effective-from", "2026-11-01",
    )  # fmt: skip
    assert "m (standard): input 2.00, cached input 0.50, output 8.00" in out
    first.refresh_from_db()
    second = ModelPrice.objects.get(model="m", effective_to=None)
    assert first.effective_to == second.effective_from == datetime(2026, 11, 1, tzinfo=UTC)
    assert first.cached_input_per_million == Decimal("2.5")  # defaults to the input price
    assert second.cached_input_per_million == Decimal("0.5")
    audit = AuditEvent.objects.filter(action="model_price.set").order_by("id").last()
    assert audit.object_id == str(second.pk) and audit.before == {
        "closed_price_id": first.pk,
        "effective_to": None,
    }
    assert audit.actor_label == "manage.py set_model_price"


@pytest.mark.parametrize("start", ["2026-10-01", "2026-09-15", "2026-10-05", "2026-10-11"])
def test_set_model_price_refuses_overlaps_with_a_clear_message(db, start):
    make_price("m", effective_from=datetime(2026, 9, 1, tzinfo=UTC), effective_to=DAY)
    make_price("m", effective_from=DAY + timedelta(days=10))
    with pytest.raises(CommandError, match="already has a price from"):
        command("set_model_price", "m", "--input", "1", "--output", "1", "--effective-from", start)
    assert ModelPrice.objects.filter(model="m").count() == 2


def test_the_database_refuses_overlapping_periods_too(db):
    make_price("m", effective_from=DAY)
    with pytest.raises(IntegrityError), transaction.atomic():
        make_price("m", effective_from=DAY + timedelta(days=1))


def test_prices_are_never_rounded(db):
    with pytest.raises(PriceError, match="12 decimal places"):
        set_model_price(
            model="m",
            input_per_million="0.0000000000001",
            output_per_million="1",
            effective_from=DAY,
        )
    with pytest.raises(PriceError):
        set_model_price(
            model="m", input_per_million="-1", output_per_million="1", effective_from=DAY
        )
    with pytest.raises(CommandError, match="offset"):
        command("set_model_price", "m", "--input", "1", "--output", "1",
                "--effective-from", "2026-12-01T10:00")  # fmt: skip
    assert not ModelPrice.objects.exists()


def test_a_start_before_the_open_period_is_an_overlap(db):
    make_price("m", effective_from=DAY)
    with pytest.raises(PriceOverlap):
        set_model_price(
            model="m",
            input_per_million="1",
            output_per_million="1",
            effective_from=DAY - timedelta(seconds=1),
        )


# --- reprice_usage -------------------------------------------------------------------


def test_unpriced_usage_is_priced_at_the_boundary_and_debited(company):
    give_credit(company, "100")
    boundary = timezone.now() - timedelta(days=5)
    kwargs = dict(model="late-model", prompt_tokens=0, completion_tokens=1_000_000)
    before = make_usage(company, occurred_at=boundary - timedelta(microseconds=1), **kwargs).usage
    at = make_usage(company, occurred_at=boundary, **kwargs).usage
    assert (before.cost_source, at.cost_source) == ("unpriced", "unpriced")
    old = make_price("late-model", output="10", effective_from=boundary - timedelta(days=30))
    set_model_price(
        model="late-model", input_per_million="1", output_per_million="20", effective_from=boundary
    )
    new = ModelPrice.objects.get(model="late-model", effective_to=None)
    report = reprice_usage(apply=True)
    before.refresh_from_db()
    at.refresh_from_db()
    assert (before.cost, before.price_id) == (Decimal("10"), old.pk)
    assert (at.cost, at.price_id) == (Decimal("20"), new.pk)
    assert before.cost_source == at.cost_source == "priced"
    assert ledger_of(before) == -before.cost and ledger_of(at) == -at.cost
    assert report.as_json()["new_total"] == "30.00"
    assert CreditBalance.objects.get(company=company).balance == Decimal("70")
    assert_balance_equals_ledger(company)
    assert_rollup_matches_raw()


def test_reprice_dry_run_reports_and_changes_nothing(company, other_company):
    make_usage(company, model="x")
    make_usage(company, model="x")
    make_usage(other_company, model="x")
    make_usage(company, model="x", cost="0.5")  # reported: never re-priced
    make_price("x", input="1", output="1")
    before = usage_state()
    out = command("reprice_usage")
    assert "dry run, nothing changed" in out
    assert f"{company.name} ({company.pk}): 2 rows (2 newly priced" in out
    assert "old total 0.00, new total 0.003" in out
    assert usage_state() == before
    assert LedgerEntry.objects.filter(kind="usage").count() == 1  # the reported row's only
    data = json.loads(command("reprice_usage", "--json"))
    assert (data["applied"], data["rows"], data["new_total"]) == (False, 3, "0.0045")


def test_reprice_priced_usage_posts_exactly_the_difference(company):
    give_credit(company, "10")
    wrong = make_price("y", input="3", output="30", effective_from=DAY)
    rows = [
        make_usage(company, model="y", occurred_at=DAY + timedelta(days=n)).usage for n in range(3)
    ]
    # 1000 x 3 + 500 x 30 = 18000 per million
    assert {r.cost for r in rows} == {Decimal("0.018")}
    # A correction of the period's output price (a typo): a new row over the same dates.
    fixed = correct_model_price(price=wrong, input_per_million="3", output_per_million="3")
    assert reprice_usage(apply=True).as_json()["rows"] == 0  # priced rows need the flag
    out = command("reprice_usage", "--reprice-priced", "--apply", "--model", "y",
                  "--since", DAY.date().isoformat())  # fmt: skip
    assert "3 rows (0 newly priced, 3 re-priced), old total 0.054, new total 0.0135" in out
    for row in rows:
        row.refresh_from_db()
        assert row.cost == Decimal("0.0045") and row.price_id == fixed.pk
        assert ledger_of(row) == -row.cost
        correction = LedgerEntry.objects.get(usage_id=row.pk, kind="usage_correction")
        assert correction.amount == Decimal("0.0135")
        assert correction.idempotency_key == f"usage_correction:{row.pk}:1"
    assert_balance_equals_ledger(company)
    assert_rollup_matches_raw()
    # Idempotent: nothing left to change, nothing posted twice.
    again = json.loads(command("reprice_usage", "--reprice-priced", "--apply", "--json"))
    assert again["rows"] == 0
    assert LedgerEntry.objects.filter(kind="usage_correction").count() == 3
    assert AuditEvent.objects.filter(action="usage.reprice", company=company).count() == 1


def test_a_second_correction_gets_its_own_key(company):
    price = make_price("z", input="1", output="1", effective_from=DAY)
    usage = make_usage(company, model="z", occurred_at=DAY + timedelta(days=1)).usage
    for output in ("2", "1"):
        price = correct_model_price(price=price, input_per_million="1", output_per_million=output)
        reprice_usage(reprice_priced=True, apply=True)
    keys = set(
        LedgerEntry.objects.filter(usage_id=usage.pk, kind="usage_correction").values_list(
            "idempotency_key", flat=True
        )
    )
    assert keys == {f"usage_correction:{usage.pk}:1", f"usage_correction:{usage.pk}:2"}
    usage.refresh_from_db()
    assert ledger_of(usage) == -usage.cost == Decimal("-0.0015")
    assert_rollup_matches_raw()


def test_usage_still_without_a_price_is_reported_not_zeroed(company):
    make_usage(company, model="nobody-prices-me")
    data = json.loads(command("reprice_usage", "--apply", "--json"))
    assert data["rows"] == 0 and data["still_unpriced"] == 1
    assert QuestionGenerationUsage.objects.get().cost is None


def test_repricing_drafts_keeps_their_rollup_bucket(company):
    make_usage(company, model="d-model", draft_job_id="tmp")
    make_price("d-model")
    reprice_usage(apply=True)
    assert QuestionGenerationUsage.objects.get().status == "draft"
    assert_rollup_matches_raw()


def test_reprice_skips_while_another_run_holds_its_transaction_lock(company):
    import threading

    from django.db import connections

    from core.locks import advisory_xact_lock
    from usage.pricing import LOCK_NAME

    held, release = threading.Event(), threading.Event()

    def other() -> None:  # another host's run, inside its one transaction
        try:
            with transaction.atomic():
                assert advisory_xact_lock(LOCK_NAME)
                held.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=other)
    thread.start()
    held.wait(10)
    try:
        assert json.loads(command("reprice_usage", "--json"))["skipped"] is True
        assert "skipped, another run holds the lock" in command("reprice_usage")
    finally:
        release.set()
        thread.join()
    assert json.loads(command("reprice_usage", "--json"))["skipped"] is False  # released at commit


def test_the_transaction_lock_refuses_to_be_taken_outside_a_transaction(transactional_db):
    from core.locks import advisory_xact_lock

    with pytest.raises(RuntimeError, match="inside transaction.atomic"):
        advisory_xact_lock("anything")


def test_repricing_prepaid_history_moves_no_money(company):
    """Imported history paid for elsewhere (--no-debit) is priced for reports only."""
    give_credit(company, "100")
    event = make_event(company, model="late-model", prompt_tokens=0, completion_tokens=1_000_000)
    usage = record_usage(event, company=company, debit=False).usage
    assert usage.prepaid and usage.cost is None
    make_price("late-model", output="10")
    reprice_usage(apply=True)
    usage.refresh_from_db()
    assert (usage.cost, usage.cost_source) == (Decimal("10"), "priced")
    assert not LedgerEntry.objects.filter(usage_id=usage.pk).exists()
    assert CreditBalance.objects.get(company=company).balance == Decimal("100")
    assert_rollup_matches_raw()


def test_reprice_apply_is_one_transaction(company, other_company):
    """A failure after the first company leaves nothing applied, for either company."""
    for who in (company, other_company):
        give_credit(who, "100")
        make_usage(who, model="late-model", prompt_tokens=0, completion_tokens=1_000_000)
    make_price("late-model", output="10")
    before = usage_state()

    def fail_after_first(summary) -> None:
        raise RuntimeError("the database went away half-way")

    with pytest.raises(RuntimeError):
        reprice_usage(apply=True, on_company=fail_after_first)
    assert usage_state() == before
    assert not LedgerEntry.objects.filter(kind="usage").exists()

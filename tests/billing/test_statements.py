"""Closing a month: what an issued statement holds, once, sealed, and what comes late."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from billing.credits import adjust_credits, expire_lot, refund_credits
from billing.ledger import post_entry
from billing.models import LedgerEntry, Statement, StatementLine
from tests.billing.conftest import grant
from tests.billing.statement_world import close, stored_hash
from tests.conftest import make_job, make_price, make_usage

pytestmark = pytest.mark.django_db
Section = StatementLine.Section


@pytest.fixture
def priced(clock):
    make_price("model-a", effective_from=datetime(2025, 1, 1, tzinfo=UTC))
    make_price("model-b", input="1", output="2", effective_from=datetime(2025, 1, 1, tzinfo=UTC))


def _october(company, clock):
    """A month of every kind of movement, in Europe/Berlin."""
    clock.set(2026, 10, 1, 8)
    grant(company, "100", kind="purchase", reason="PO 17")
    grant(company, "5", kind="grant", expires_at=datetime(2026, 10, 20, tzinfo=UTC))
    job = make_job(company, title="Data Engineer")
    clock.set(2026, 10, 10, 9)
    make_usage(company, model="model-a", job_id=str(job.pk), question_count=3)
    make_usage(company, model="model-a", job_id=str(job.pk), question_count=4)
    make_usage(company, model="model-b", question_count=2)  # a draft job
    refund_credits(company=company, amount="10", reason="goodwill", idempotency_key="r1")
    adjust_credits(company=company, amount="-1.5", reason="typo in PO")
    clock.set(2026, 10, 21, 0)
    lot = grant(company, "1", kind="grant", expires_at=datetime(2026, 10, 21, 1, tzinfo=UTC)).lot
    clock.set(2026, 10, 22, 0)
    expire_lot(lot_id=lot.pk)
    return job


def test_a_closed_month_lists_every_movement_and_reconciles(company, clock, priced):
    company.timezone = "Europe/Berlin"
    company.save()
    job = _october(company, clock)
    clock.set(2026, 11, 1, 2)

    (statement,) = close(company, now=clock.now)

    entries = LedgerEntry.objects.filter(company=company)
    assert statement.month == date(2026, 10, 1)
    assert statement.period_start == datetime(2026, 9, 30, 22, tzinfo=UTC)
    assert statement.period_end == datetime(2026, 10, 31, 23, tzinfo=UTC)  # CET again
    assert statement.opening == 0
    assert statement.closing == sum(e.amount for e in entries)
    assert statement.entry_count == entries.count()
    assert statement.purchases == Decimal(100)
    assert statement.grants == Decimal(6)
    assert statement.refunds == Decimal(10)
    assert statement.adjustments == Decimal("-1.5")
    assert statement.expiries < 0
    usage = sum(e.amount for e in entries.filter(kind="usage"))
    assert statement.usage == usage and statement.late_usage == 0
    assert (statement.generations, statement.questions) == (3, 9)
    lines = list(statement.lines.all())
    credit = [line for line in lines if line.section == Section.CREDIT]
    assert [line.kind for line in credit] == [
        "purchase", "grant", "refund", "adjustment", "grant", "expiry"
    ]  # fmt: skip
    assert credit[0].label == "PO 17"
    by_model = {line.model: line for line in lines if line.section == Section.USAGE_MODEL}
    assert {m: (line.entries, line.questions) for m, line in by_model.items()} == {
        "model-a": (2, 7),
        "model-b": (1, 2),
    }
    by_job = {line.label: line for line in lines if line.section == Section.USAGE_JOB}
    assert by_job["Data Engineer"].job_id == job.pk
    assert by_job["Jobs not saved yet (drafts)"].entries == 1
    assert sum(line.amount for line in by_job.values()) == usage
    assert statement.content_hash == stored_hash(statement)
    assert len(statement.content_hash) == 64


def test_months_without_activity_are_issued_empty_and_chain(company, clock, priced):
    clock.set(2026, 8, 3, 12)
    grant(company, "10")
    clock.set(2026, 11, 2, 0)

    statements = close(company, now=clock.now)

    assert [s.month for s in statements] == [date(2026, m, 1) for m in (8, 9, 10)]
    assert [(s.opening, s.closing) for s in statements] == [(0, 10), (10, 10), (10, 10)]
    assert [s.entries_after for s in statements] == [0] + [s.entries_through for s in statements[:2]]  # fmt: skip


def test_closing_again_issues_nothing_new(company, clock, priced):
    clock.set(2026, 10, 3, 12)
    grant(company, "10")
    clock.set(2026, 11, 2, 0)
    (first,) = close(company, now=clock.now)

    assert close(company, now=clock.now) == []
    assert Statement.objects.get(company=company).content_hash == first.content_hash


def test_the_current_month_is_not_closed(company, clock, priced):
    clock.set(2026, 10, 3, 12)
    grant(company, "10")
    clock.set(2026, 10, 31, 22, 59)  # 23:59 in Berlin? No: UTC company, still October

    assert close(company, now=clock.now) == []


def test_a_month_ends_at_midnight_in_the_companys_zone(company, clock, priced):
    company.timezone = "America/New_York"
    company.save()
    clock.set(2026, 10, 20, 12)
    grant(company, "10")
    clock.set(2026, 11, 1, 3)  # 23:00 on October 31st in New York
    assert close(company, now=clock.now) == []
    clock.set(2026, 11, 1, 4)
    (statement,) = close(company, now=clock.now)
    assert statement.period_end == datetime(2026, 11, 1, 4, tzinfo=UTC)


def test_the_database_refuses_to_change_an_issued_statement(company, clock, priced):
    clock.set(2026, 10, 3, 12)
    grant(company, "10")
    clock.set(2026, 11, 2, 0)
    (statement,) = close(company, now=clock.now)
    line = statement.lines.get()

    refused = [
        ("UPDATE billing_statement SET closing = closing + 1 WHERE id = %s", statement.pk),
        ("UPDATE billing_statement SET content_hash = 'x' WHERE id = %s", statement.pk),
        ("UPDATE billing_statement SET content_hash = 'seal' WHERE id = %s", statement.pk),
        ("DELETE FROM billing_statement WHERE id = %s", statement.pk),
        ("UPDATE billing_statementline SET amount = 0 WHERE id = %s", line.pk),
        ("DELETE FROM billing_statementline WHERE id = %s", line.pk),
        (
            "INSERT INTO billing_statementline (statement_id, position, section, kind, "
            "usage_month, model, label, entries, questions, amount) "
            "VALUES (%s, 99, 'credit', 'grant', '', '', 'extra', 1, 0, 5)",
            statement.pk,
        ),
    ]
    for sql, param in refused:
        with pytest.raises(IntegrityError, match="issued"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, [param])
    assert stored_hash(statement) == statement.content_hash


def test_usage_booked_after_the_close_is_late_on_the_next_statement(company, clock, priced):
    clock.set(2026, 10, 3, 12)
    grant(company, "100")
    make_usage(company, model="model-a")
    clock.set(2026, 11, 1, 2)
    (october,) = close(company, now=clock.now)
    issued = Statement.objects.get(pk=october.pk)

    clock.set(2026, 11, 5, 9)  # an event of October 31st arrives in November
    late = make_usage(company, model="model-b", occurred_at=datetime(2026, 10, 31, 20, tzinfo=UTC))
    make_usage(company, model="model-a")
    clock.set(2026, 12, 1, 2)
    (november,) = close(company, now=clock.now)

    again = Statement.objects.get(pk=october.pk)
    assert (again.closing, again.content_hash) == (issued.closing, issued.content_hash)
    assert stored_hash(again) == issued.content_hash
    (late_line,) = november.lines.filter(section=Section.LATE_USAGE)
    assert (late_line.usage_month, late_line.model, late_line.label) == (
        "2026-10",
        "model-b",
        "Late usage for 2026-10",
    )
    assert late_line.amount == -late.usage.cost == november.late_usage
    assert november.opening == october.closing
    assert november.lines.filter(section=Section.USAGE_MODEL).get().model == "model-a"


def test_a_correction_of_a_closed_month_is_on_the_next_statement(company, clock, priced):
    clock.set(2026, 10, 3, 12)
    grant(company, "100")
    usage = make_usage(company, model="model-a").usage
    clock.set(2026, 11, 2, 0)
    close(company, now=clock.now)
    post_entry(
        company=company,
        kind="usage_correction",
        amount=Decimal("0.25"),
        idempotency_key="fix-1",
        usage_id=usage.pk,
    )
    clock.set(2026, 12, 2, 0)
    (november,) = close(company, now=clock.now)

    (line,) = november.lines.filter(section=Section.CORRECTION)
    assert (line.usage_month, line.model, line.amount) == ("2026-10", "model-a", Decimal("0.25"))
    assert november.corrections == Decimal("0.25")


def test_a_dry_run_writes_nothing(company, clock, priced):
    clock.set(2026, 10, 3, 12)
    grant(company, "10")
    clock.set(2026, 12, 2, 0)

    closed = close(company, now=clock.now, dry_run=True)

    assert [s.month.month for s in closed] == [10, 11]
    assert [s.closing for s in closed] == [10, 10]
    assert not Statement.objects.exists() and not StatementLine.objects.exists()


def test_through_month_stops_there(company, clock, priced):
    clock.set(2026, 9, 3, 12)
    grant(company, "10")
    clock.set(2026, 12, 2, 0)

    closed = close(company, now=clock.now, through_month=date(2026, 10, 1))

    assert [s.month.month for s in closed] == [9, 10]


def test_statements_chain_across_a_zone_change(company, clock, priced):
    from usage.timezones import change_company_timezone

    clock.set(2026, 9, 15, 12)
    grant(company, "10")
    clock.set(2026, 10, 1, 1)
    (september,) = close(company, now=clock.now)
    change_company_timezone(company=company, timezone_name="Asia/Tokyo")
    company.refresh_from_db()
    clock.set(2026, 10, 31, 16)  # 01:00 on November 1st in Tokyo
    grant(company, "2")
    clock.set(2026, 11, 2, 0)

    (october,) = close(company, now=clock.now)

    assert october.period_start == september.period_end == datetime(2026, 10, 1, tzinfo=UTC)
    assert october.period_end == datetime(2026, 10, 31, 15, tzinfo=UTC)
    assert october.timezone == "Asia/Tokyo"
    assert october.closing == 10  # the 2 was booked in Tokyo's November
    assert october.entries_after == september.entries_through


def test_a_statement_from_a_broken_ledger_is_not_issued(company, clock, priced):
    clock.set(2026, 10, 3, 12)
    grant(company, "10")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")  # ordinary triggers off
        cursor.execute(
            "UPDATE billing_ledgerentry SET balance_after = 11 WHERE company_id = %s", [company.pk]
        )
        cursor.execute("SET LOCAL session_replication_role = DEFAULT")
    from usage.statements import StatementError

    with pytest.raises(StatementError, match="verify_ledger"):
        close(company, now=clock.now + timedelta(days=40))
    assert not Statement.objects.exists()


def test_months_not_issued_yet_are_computed_live_the_latest_three(company, clock, priced):
    from usage.statements import unissued_statements

    for month in (6, 7, 8, 9, 10, 11):
        clock.set(2026, month, 10, 12)
        grant(company, "10")
    clock.set(2026, 11, 20, 0)

    live = unissued_statements(company, now=clock.now)

    assert [b.statement.month.month for b in live] == [11, 10, 9]
    assert [(b.statement.opening, b.statement.closing) for b in live] == [
        (50, 60),
        (40, 50),
        (30, 40),
    ]
    assert not any(b.issued for b in live)
    assert not Statement.objects.exists()


def test_the_open_month_follows_the_last_issued_statement(company, clock, priced):
    from usage.statements import unissued_statements

    clock.set(2026, 10, 10, 12)
    grant(company, "10")
    clock.set(2026, 11, 1, 2)
    (october,) = close(company, now=clock.now)
    clock.set(2026, 11, 3, 12)
    grant(company, "5")

    (open_month,) = unissued_statements(company, now=clock.now)

    assert open_month.statement.entries_after == october.entries_through
    assert (open_month.statement.opening, open_month.statement.closing) == (10, 15)


def test_only_the_database_writes_a_hash_and_only_on_the_unsealed_row(company, clock, priced):
    clock.set(2026, 10, 3, 12)
    grant(company, "10")
    statement = Statement.objects.create(
        company=company,
        month=date(2026, 10, 1),
        timezone="UTC",
        period_start=datetime(2026, 10, 1, tzinfo=UTC),
        period_end=datetime(2026, 11, 1, tzinfo=UTC),
        entries_after=0,
        entries_through=0,
        entry_count=0,
        opening=0,
        purchases=0,
        grants=0,
        refunds=0,
        adjustments=0,
        expiries=0,
        usage=0,
        late_usage=0,
        corrections=0,
        closing=0,
        generations=0,
        questions=0,
        closed_at=clock.now,
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        with connection.cursor() as cursor:  # a hash of one's own choosing
            cursor.execute(
                "UPDATE billing_statement SET content_hash = repeat('a', 64) WHERE id = %s",
                [statement.pk],
            )
    with pytest.raises(IntegrityError), transaction.atomic():
        with connection.cursor() as cursor:  # the seal that changes something else too
            cursor.execute(
                "UPDATE billing_statement SET content_hash = 'seal', timezone = 'Asia/Tokyo' WHERE id = %s",
                [statement.pk],
            )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE billing_statement SET content_hash = 'seal' WHERE id = %s RETURNING content_hash",
            [statement.pk],
        )
        assert cursor.fetchone()[0] == stored_hash(statement)

"""`manage.py close_statements`: its options, its JSON, and two closers at the same moment."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from io import StringIO

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from billing.invariants import check_ledger
from billing.models import Statement, StatementLine
from tests.billing.conftest import grant
from tests.conftest import make_company
from tests.pg import conninfo
from usage.statements import close_due_statements


def _run(*args: str) -> dict:
    out = StringIO()
    call_command("close_statements", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


@pytest.fixture
def two_companies(db, clock):
    clock.set(2026, 9, 10, 12)
    berlin = make_company(name="Berlin GmbH", external_id="org_berlin", timezone="Europe/Berlin")
    tokyo = make_company(name="Tokyo KK", timezone="Asia/Tokyo")
    grant(berlin, "10")
    grant(tokyo, "20")
    clock.set(2026, 11, 1, 2)
    return berlin, tokyo


def test_it_issues_every_ended_month_of_every_company(two_companies):
    summary = _run()

    assert summary["issued"] == 4 and summary["dry_run"] is False
    rows = {(r["company_name"], r["month"]): r for r in summary["statements"]}
    assert set(rows) == {(n, m) for n in ("Berlin GmbH", "Tokyo KK") for m in ("2026-09", "2026-10")}  # fmt: skip
    assert Decimal(rows["Tokyo KK", "2026-10"]["closing"]) == 20
    assert len(rows["Tokyo KK", "2026-10"]["content_hash"]) == 64
    assert _run()["issued"] == 0  # run twice: nothing more


def test_dry_run_reports_the_same_statements_and_writes_nothing(two_companies):
    summary = _run("--dry-run")

    assert summary["dry_run"] is True and summary["issued"] == 4
    assert not Statement.objects.exists() and not StatementLine.objects.exists()


def test_company_and_month_limit_the_run(two_companies):
    summary = _run("--company", "org_berlin", "--month", "2026-09")

    assert [(r["company_name"], r["month"]) for r in summary["statements"]] == [
        ("Berlin GmbH", "2026-09")
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--month", "2026-13"), "--month: '2026-13' is not a month"),
        (("--month", "Nov"), "is not a month"),
        (("--company", "nobody"), "nobody"),
    ],
)
def test_bad_options_are_refused_with_a_sentence(two_companies, args, message):
    with pytest.raises(CommandError, match=message):
        _run(*args)


def test_the_text_output_says_what_was_issued(two_companies):
    out = StringIO()
    call_command("close_statements", stdout=out)
    assert "Issued 4 statements." in out.getvalue()
    assert (
        "Berlin GmbH 2026-09: opening 0.00, movements 10.00, closing 10.00 (1 entries)"
        in out.getvalue()
    )


@pytest.mark.django_db(transaction=True)
def test_two_closers_at_the_same_moment_issue_each_month_once(clock):
    clock.set(2026, 10, 10, 12)
    company = make_company()
    grant(company, "10")
    clock.set(2026, 11, 1, 2)
    # Both closers wait for "postings in flight" (the balance row, held here), then
    # race to insert the same month.
    holder = psycopg.connect(**conninfo(connection.settings_dict, connection.settings_dict["NAME"]))
    holder.execute("SELECT 1 FROM billing_creditbalance FOR UPDATE")
    results, errors = [], []

    def closer() -> None:
        try:
            results.extend(close_due_statements(company=company, now=clock.now))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=closer) for _ in range(2)]
    for thread in threads:
        thread.start()
    _wait_for_waiters(2)
    holder.rollback()
    holder.close()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert sorted(r.statement is None for r in results) == [False, True]
    assert Statement.objects.filter(company=company).count() == 1
    assert Statement.objects.get(company=company).month == date(2026, 10, 1)
    assert check_ledger() == []


def _wait_for_waiters(n: int) -> None:
    import time

    deadline = time.monotonic() + 30
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] >= n:
                return
        assert time.monotonic() < deadline, "the closers never waited"
        time.sleep(0.02)


def test_a_company_with_no_ledger_gets_no_statement(db, clock):
    make_company()
    clock.set(datetime(2026, 12, 5, tzinfo=UTC))
    assert _run()["issued"] == 0

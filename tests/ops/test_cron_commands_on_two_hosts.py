"""The cron commands run on two hosts at once do their work exactly once.

Each "host" is its own `manage.py` process on the test database, through
whatever DATABASE_URL points at: in CI's PgBouncer pass, transaction pooling,
where a session-level advisory lock would not hold. Two ways to meet:

- held: the first run is made to wait inside its work (a row it needs is
  locked by the test), so the second certainly starts while the first holds
  the lease or lock: the second skips, exits 0, and the first does it all;
- racing: both start at once and finish on their own; between them the work
  is done once, whoever did it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from billing.invariants import check_ledger
from billing.ledger import post_entry
from billing.models import CreditLot, LedgerEntry
from ops.models import CommandLease
from tests.conftest import make_company, make_event, make_price, make_usage
from tests.pg import conninfo
from tests.usage.rollup_check import assert_rollup_matches_raw
from usage.models import CostSource, Job, QuestionGenerationUsage, UsageDailyRollup
from usage.recording import record_usage

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def start(*args: str) -> subprocess.Popen:
    url = f"{settings.DATABASE_URL.rsplit('/', 1)[0]}/{connection.settings_dict['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "manage.py", *args, "--json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"waited 60 s for {what}"
        time.sleep(0.02)


class RowLock:
    """A transaction of the test's own, holding row locks until `release()`."""

    def __init__(self, sql: str, params) -> None:
        self.conn = psycopg.connect(**conninfo(connection.settings_dict, connection.settings_dict["NAME"]))  # fmt: skip
        assert self.conn.execute(sql, params).fetchall()

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


def waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def run_held(args: tuple[str, ...], lock: tuple[str, list], holds) -> tuple[dict, dict]:
    """First run waits on `lock` while it `holds()` its lease or lock; second run meanwhile."""
    row_lock = RowLock(*lock)
    try:
        first = start(*args)
        wait_for(lambda: holds() and waiting_on_a_lock(), "the first run to hold and wait")
        second = finish(start(*args))
    finally:
        row_lock.release()
    return finish(first), second


def run_racing(args: tuple[str, ...]) -> tuple[dict, dict]:
    a, b = start(*args), start(*args)
    return finish(a), finish(b)


def lease_held(name: str):
    return lambda: CommandLease.objects.filter(name=name).exists()


def advisory_lock_held() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()"
        )
        return cursor.fetchone()[0] > 0


# --- reconcile_drafts -----------------------------------------------------------------


def pending_drafts(rows: int = 40):
    company = make_company()
    make_price()
    for i in range(rows):
        make_usage(company, draft_job_id=f"d{i % 8}")
    for d in range(8):
        Job.objects.create(company=company, title=f"Job {d}", draft_id=f"d{d}")
    return company


def assert_all_linked_once(company, rows: int) -> None:
    assert QuestionGenerationUsage.objects.filter(company=company, status="linked").count() == rows
    assert_rollup_matches_raw(company)


@pytest.mark.parametrize("meet", ["held", "racing"])
def test_reconcile_drafts_on_two_hosts_links_each_draft_once(meet):
    company = pending_drafts(40)
    args = ("reconcile_drafts", "--batch-size", "5")
    if meet == "held":
        # The first run's first batch moves rollup buckets: it waits on them.
        lock = (f"SELECT 1 FROM {UsageDailyRollup._meta.db_table} FOR UPDATE", [])
        first, second = run_held(args, lock, lease_held("usage.reconcile_drafts"))
        assert second["skipped"] is True and second["reconciled_rows"] == 0
        assert "pid " in second["held_by"]
        assert first["skipped"] is False and first["reconciled_rows"] == 40
    else:
        first, second = run_racing(args)
        assert first["reconciled_rows"] + second["reconciled_rows"] == 40
    assert_all_linked_once(company, 40)
    assert not CommandLease.objects.exists()


# --- expire_credits ------------------------------------------------------------------


def expired_lots(companies: int = 3, lots: int = 4) -> list:
    made = [make_company() for _ in range(companies)]
    for n, company in enumerate(made):
        for i in range(lots):
            post_entry(
                company=company,
                kind="grant",
                amount=f"{i + 1}.25",
                idempotency_key=f"g{n}-{i}",
                expires_at=timezone.now() - timedelta(seconds=1),
            )
    return made


@pytest.mark.parametrize("meet", ["held", "racing"])
def test_expire_credits_on_two_hosts_writes_each_lot_off_once(meet):
    expired_lots(3, 4)
    granted = LedgerEntry.objects.filter(kind="grant").aggregate(s=Sum("amount"))["s"]
    if meet == "held":
        lock = ("SELECT 1 FROM billing_creditbalance FOR UPDATE", [])
        first, second = run_held(("expire_credits",), lock, lease_held("billing.expire_credits"))
        assert "another expire_credits run holds the lease" in second["skipped"]
        assert first["lots"] == 12
    else:
        first, second = run_racing(("expire_credits",))
        assert first.get("lots", 0) + second.get("lots", 0) == 12
    assert LedgerEntry.objects.filter(kind="expiry").count() == 12
    expired = LedgerEntry.objects.filter(kind="expiry").aggregate(s=Sum("amount"))["s"]
    assert expired == -granted
    assert not CreditLot.objects.filter(remaining__gt=0).exists()
    assert check_ledger() == []


# --- reprice_usage --apply -----------------------------------------------------------


def unpriced_usage(rows: int = 12):
    company = make_company()
    post_entry(company=company, kind="grant", amount="100", idempotency_key="credit")
    for _ in range(rows):
        make_usage(company, model="late-priced")
    assert QuestionGenerationUsage.objects.filter(cost_source=CostSource.UNPRICED).count() == rows
    make_price("late-priced")
    return company


@pytest.mark.parametrize("meet", ["held", "racing"])
def test_reprice_usage_apply_on_two_hosts_prices_and_debits_each_row_once(meet):
    company = unpriced_usage(12)
    args = ("reprice_usage", "--apply")
    if meet == "held":
        usage = QuestionGenerationUsage._meta.db_table
        lock = (f"SELECT 1 FROM {usage} FOR UPDATE", [])
        first, second = run_held(args, lock, advisory_lock_held)
        assert second["skipped"] is True and second["rows"] == 0
        assert first["skipped"] is False and first["rows"] == 12
    else:
        first, second = run_racing(args)
        assert first["rows"] + second["rows"] == 12
    rows = QuestionGenerationUsage.objects.filter(company=company)
    assert not rows.filter(cost_source=CostSource.UNPRICED).exists()
    debits = LedgerEntry.objects.filter(company=company, kind="usage")
    assert debits.count() == 12
    assert debits.aggregate(s=Sum("amount"))["s"] == -rows.aggregate(s=Sum("cost"))["s"]
    assert rows.aggregate(s=Sum("cost"))["s"] > Decimal(0)
    assert_rollup_matches_raw(company)
    assert check_ledger(company_id=company.pk) == []


# --- close_statements ----------------------------------------------------------------


def usage_booked_months_ago(companies: int = 3) -> list:
    """Usage debited two and three months ago (debits carry the recording's `now`)."""
    made = [make_company() for _ in range(companies)]
    make_price(effective_from=timezone.now() - timedelta(days=400))
    for company in made:
        for days in (95, 60):
            when = timezone.now() - timedelta(days=days)
            record_usage(make_event(company, occurred_at=when), company=company, now=when)
    return made


@pytest.mark.parametrize("meet", ["held", "racing"])
def test_close_statements_on_two_hosts_issues_each_month_once(meet):
    from billing.models import Statement

    made = usage_booked_months_ago(3)
    if meet == "held":
        # The first run waits for the postings in flight: the balance rows, held here.
        lock = ("SELECT 1 FROM billing_creditbalance FOR UPDATE", [])
        first, second = run_held(("close_statements",), lock, lease_held("usage.close_statements"))
        assert "another close_statements run holds the lease" in second["skipped"]
        issued = first["issued"]
    else:
        first, second = run_racing(("close_statements",))
        issued = first.get("issued", 0) + second.get("issued", 0)
    assert issued == Statement.objects.count() >= 3 * 3
    for company in made:
        months = list(Statement.objects.filter(company=company).values_list("month", flat=True))
        assert len(months) == len(set(months))
    assert check_ledger() == []
    assert not CommandLease.objects.exists()

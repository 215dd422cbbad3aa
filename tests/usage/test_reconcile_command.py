"""`manage.py reconcile_drafts`: output, its lease, errors, and races with the save path."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.utils import timezone

from ops.leases import command_lease
from tests.conftest import make_company, make_price, make_usage
from tests.usage.reconcile_helpers import usage_state
from tests.usage.rollup_check import assert_rollup_matches_raw
from usage.jobs import save_job
from usage.models import Job, QuestionGenerationUsage
from usage.reconcile import LOCK_NAME

pytestmark = pytest.mark.django_db
JSON_KEYS = {
    "reconciled_rows",
    "reconciled_drafts",
    "reconciled_cost",
    "abandoned_rows",
    "abandoned_drafts",
    "abandoned_cost",
    "pending_rows",
    "pending_drafts",
    "pending_cost",
    "scanned_rows",
    "batches",
    "max_batch_seconds",
    "duration_seconds",
    "dry_run",
    "skipped",
}


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("reconcile_drafts", *args, stdout=out)
    return out.getvalue()


def test_json_summary_of_a_run(company, price):
    make_usage(company, draft_job_id="a")
    make_usage(company, draft_job_id="a")
    make_usage(company, draft_job_id="old", occurred_at=timezone.now() - timedelta(days=9))
    Job.objects.create(company=company, title="A", draft_id="a")
    data = json.loads(run("--json", "--abandon-after-days", "7", "--company", company.external_id))
    assert set(data) == JSON_KEYS
    assert (data["reconciled_rows"], data["reconciled_drafts"]) == (2, 1)
    assert data["reconciled_cost"] == "0.015"
    assert (data["abandoned_rows"], data["abandoned_drafts"], data["abandoned_cost"]) == (
        1,
        1,
        "0.0075",
    )
    assert (data["pending_rows"], data["pending_drafts"]) == (1, 1)
    assert data["dry_run"] is False and data["skipped"] is False
    assert_rollup_matches_raw()


def test_dry_run_prints_what_would_change_and_changes_nothing(company, price):
    make_usage(company, draft_job_id="a")
    Job.objects.create(company=company, title="A", draft_id="a")
    before = usage_state()
    out = run("--dry-run")
    assert "dry run, nothing changed" in out and "1 rows of 1 drafts reconciled" in out
    assert usage_state() == before


def test_unknown_company_is_a_clear_error(db):
    with pytest.raises(CommandError, match="no-such-org"):
        run("--company", "no-such-org")


def test_bad_batch_size_is_refused(db):
    with pytest.raises(CommandError, match="batch-size"):
        run("--batch-size", "0")


def test_unreachable_database_exits_1_with_a_clear_message():
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DATABASE_URL": "postgres://nobody@127.0.0.1:1/nothing"}
    result = subprocess.run(
        [sys.executable, "manage.py", "reconcile_drafts"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "database error" in result.stderr and "Traceback" not in result.stderr


def test_a_second_concurrent_run_skips_and_exits_0(company, price):
    make_usage(company, draft_job_id="a")
    Job.objects.create(company=company, title="A", draft_id="a")
    holding, release = threading.Event(), threading.Event()

    def other_host() -> None:  # its own thread, so its own database connection
        try:
            with command_lease(LOCK_NAME) as lease:
                assert lease.acquired
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_host)
    thread.start()
    assert holding.wait(10)
    try:
        skipped = json.loads(run("--json"))
        assert skipped["skipped"] is True and skipped["reconciled_rows"] == 0
        assert f"pid {os.getpid()}, until " in skipped["held_by"]
        assert "skipped, another run holds the lease" in run()
        assert QuestionGenerationUsage.objects.get().status == "draft"
    finally:
        release.set()
        thread.join()
    assert json.loads(run("--json"))["reconciled_rows"] == 1


@pytest.mark.django_db(transaction=True)
def test_usage_racing_the_save_ends_linked_exactly_once():
    company = make_company()
    make_price()
    start = threading.Barrier(5)
    errors: list[BaseException] = []

    def worker(fn) -> None:
        try:
            start.wait(10)
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    def record(n: int):
        return lambda: make_usage(company, draft_job_id="race", idempotency_key=f"race-{n}")

    def save():
        return save_job(company=company, title="Raced", draft_job_id="race")

    threads = [threading.Thread(target=worker, args=(record(n),)) for n in range(4)]
    threads.append(threading.Thread(target=worker, args=(save,)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    run()  # whatever the save missed, the cron links
    job = Job.objects.get(company=company, draft_id="race")
    rows = QuestionGenerationUsage.objects.filter(company=company)
    assert rows.count() == 4
    assert {(r.job_id, r.status) for r in rows} == {(job.pk, "linked")}
    assert_rollup_matches_raw()
    connection.close()


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_and_one_summary_line_otherwise(company, price):
    for n in range(3):
        make_usage(company, draft_job_id=f"t{n}")
        Job.objects.create(company=company, title="T", draft_id=f"t{n}")
    terminal = FakeTerminal()
    call_command("reconcile_drafts", "--batch-size", "1", stdout=terminal)
    assert "\rbatch 3: 3 scanned, 3 linked" in terminal.getvalue()
    plain_out = run()
    assert len(plain_out.strip().splitlines()) == 1 and "batch" not in plain_out

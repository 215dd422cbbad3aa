"""`import_usage` with several recording processes: the same outcome as one process.

Workers are forked, so these tests commit (a worker's connection cannot see
a test transaction) and need PostgreSQL (workers are used only there).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

import usage.importer
from billing.invariants import check_ledger
from billing.models import CreditBalance, LedgerEntry
from tests.conftest import give_credit, make_company, make_price
from tests.usage.test_import_usage import HEADER, stamp, write
from usage.importer import ImportFileError, ImportOptions, WorkerLost, import_usage
from usage.models import QuestionGenerationUsage

pytestmark = pytest.mark.django_db(transaction=True)


def messy_file(company) -> str:
    """Rows every path of the importer sees: priced, reported, replayed, conflicting,
    malformed and unknown-company rows, spread so that each worker gets some."""
    lines = [HEADER]
    for n in range(1, 61):
        cost = "0.125" if n % 4 == 0 else ""
        lines.append(f"{n},{company.pk},,tmp-{n % 7},{n * 100},{n * 10},,{n % 5},{cost},gpt-test,{stamp(n % 30 + 1)}")  # fmt: skip
    lines += [
        f"5,{company.pk},,tmp-5,500,50,,0,,gpt-test,{stamp(6)}",  # same as line 6: replayed
        f"7,{company.pk},,tmp-0,999,1,,2,,gpt-test,{stamp(8)}",  # id 7 again, other tokens
        f"61,{company.pk},,tmp-1,10,10,99,1,,gpt-test,{stamp()}",  # total_tokens mismatch
        "62,too,few,fields",
        f"63,no-such-company,,tmp-1,10,10,,1,,gpt-test,{stamp()}",
        f"64,{company.pk},,tmp-2,10,10,,1,,unknown-model,{stamp()}",  # unpriced
        f"65,{company.pk},,tmp-3,10,10,,1,,gpt-test,2026-01-01T00:00:00",  # naive time
    ]
    return "\n".join(lines) + "\n"


def outcome(company, summary) -> tuple:
    with open(summary.rejects_path, newline="", encoding="utf-8") as handle:
        rejected = [(row["_line"], row["_reason"]) for row in csv.DictReader(handle)]
    return (
        (summary.rows, summary.imported, summary.replayed, summary.rejected, summary.unpriced),
        summary.total_cost,
        rejected,
        CreditBalance.objects.get(company=company).balance,
        LedgerEntry.objects.filter(company=company, kind="usage").count(),
        sorted(
            QuestionGenerationUsage.objects.filter(company=company).values_list(
                "idempotency_key", "cost"
            )
        ),
    )


def test_workers_import_exactly_what_one_process_imports(tmp_path):
    make_price()
    alone, shared = make_company(), make_company()
    give_credit(alone, "10")
    give_credit(shared, "10")
    one = import_usage(write(tmp_path, messy_file(alone), "a.csv"), ImportOptions(workers=1))
    three = import_usage(write(tmp_path, messy_file(shared), "b.csv"), ImportOptions(workers=3))

    expected = outcome(alone, one)
    got = outcome(shared, three)
    assert got[0] == expected[0] == (67, 61, 1, 5, 1)
    assert got[1:] == expected[1:]
    lines = [int(line) for line, _ in got[2]]
    assert lines == sorted(lines)  # the workers' rejects merged back into line order
    assert any("idempotency" in reason.lower() for _, reason in got[2])
    assert not list(tmp_path.glob("*.part*"))
    assert check_ledger(company_id=shared.pk) == []


def test_jsonl_rejects_of_workers_come_back_in_line_order(tmp_path):
    make_price()
    company = make_company()
    lines = []
    for n in range(1, 41):
        tokens = n * 10 if n % 3 else -1  # every third row is rejected
        lines.append(json.dumps({"id": n, "company_id": str(company.pk), "prompt_tokens": tokens, "completion_tokens": 5, "draft_job_id": "d", "model": "gpt-test", "created_at": stamp()}))  # fmt: skip
    path = write(tmp_path, "\n".join(lines) + "\n", "usage.jsonl")
    summary = import_usage(path, ImportOptions(workers=2))
    assert (summary.imported, summary.rejected) == (27, 13)
    with open(summary.rejects_path, encoding="utf-8") as handle:
        rejected = [json.loads(line)["_line"] for line in handle]
    assert rejected == list(range(3, 41, 3))


def test_a_file_refused_by_the_workers_raises_and_writes_nothing(tmp_path):
    company = make_company()
    path = write(tmp_path, f"id,company_id,model_used\n1,{company.pk},gpt-test\n")
    with pytest.raises(ImportFileError, match="created_at"):
        import_usage(path, ImportOptions(workers=2))
    assert not QuestionGenerationUsage.objects.exists()
    assert not list(tmp_path.glob("*.rejects*"))


def test_a_worker_that_fails_fails_the_import(tmp_path, monkeypatch):
    make_price()
    company = make_company()

    def broken(batch, *, debit):
        raise ValueError("recording broke")

    monkeypatch.setattr(usage.importer, "record_batch", broken)  # inherited by the fork
    path = write(tmp_path, messy_file(company))
    with pytest.raises(RuntimeError, match="recording broke"):
        import_usage(path, ImportOptions(workers=2))
    assert not list(tmp_path.glob("*.part*"))


def test_inside_a_transaction_the_import_stays_in_this_process(tmp_path):
    from django.db import transaction

    make_price()
    with transaction.atomic():
        company = make_company()  # uncommitted: a worker's connection could not see it
        summary = import_usage(write(tmp_path, messy_file(company)), ImportOptions(workers=2))
        assert summary.imported == 61
    assert QuestionGenerationUsage.objects.filter(company=company).count() == 61
    assert Path(summary.rejects_path).exists()
    assert summary.total_cost > Decimal(0)


def test_a_worker_killed_without_a_report_fails_the_import_at_once(tmp_path, monkeypatch):
    make_price()
    company = make_company()
    monkeypatch.setattr(usage.importer, "record_batch", lambda batch, *, debit: os._exit(9))
    with pytest.raises(WorkerLost, match="without a report"):
        import_usage(write(tmp_path, messy_file(company)), ImportOptions(workers=2))
    assert not list(tmp_path.glob("*.part*"))


def test_part_files_of_an_interrupted_run_are_not_merged(tmp_path):
    make_price()
    company = make_company()
    path = write(tmp_path, f"{HEADER}\n1,{company.pk},,d,10,10,,1,,gpt-test,{stamp()}\n")
    stale = tmp_path / "usage.csv.rejects.csv.part1"
    stale.write_text("_line,_reason,id\n9,old reason,9\n")
    summary = import_usage(path, ImportOptions(workers=2))
    assert (summary.imported, summary.rejected, summary.rejects_path) == (1, 0, None)
    assert not stale.exists()


def _children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_workers_stop_when_the_import_process_is_killed(tmp_path):
    make_price()
    company = make_company()
    rows = [HEADER] + [
        f"{n},{company.pk},,d{n % 9},10,10,,1,,gpt-test,{stamp()}" for n in range(60_000)
    ]
    path = write(tmp_path, "\n".join(rows) + "\n")
    # The settings' URL with the test database's name: a host and port, or a socket folder.
    test_database_url = (
        f"{settings.DATABASE_URL.rsplit('/', 1)[0]}/{settings.DATABASES['default']['NAME']}"
    )
    env = {**os.environ, "DATABASE_URL": test_database_url}
    command = [sys.executable, "manage.py", "import_usage", str(path), "--workers", "2"]
    parent = subprocess.Popen(command, env=env, cwd=settings.BASE_DIR, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(workers := _children_of(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(workers) == 2, "the workers never started"
        parent.kill()  # SIGKILL: no cleanup of its own runs
        parent.wait()
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(Path(f"/proc/{w}").exists() for w in workers)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert QuestionGenerationUsage.objects.filter(company=company).count() < 60_000

"""`import_usage`: messy exported files in, exactly-once usage out, every bad row accounted for."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from billing.models import CreditBalance, LedgerEntry
from tests.conftest import give_credit, make_company, make_job
from usage.importer import ImportFileError, ImportOptions, import_usage, worker_of
from usage.models import QuestionGenerationUsage, UsageDailyRollup

pytestmark = pytest.mark.django_db

HEADER = (
    "id,company_id,job_id,draft_job_id,prompt_tokens,completion_tokens,total_tokens,"
    "question_count,cost,model_used,created_at"
)


def stamp(days_ago: int = 10, *, offset: str = "+00:00") -> str:
    moment = (timezone.now() - timedelta(days=days_ago)).replace(microsecond=0, tzinfo=None)
    return moment.isoformat() + offset


def write(tmp_path: Path, text: str, name: str = "usage.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def run(path: Path, **options):
    return import_usage(path, ImportOptions(**options))


def rejects(summary) -> list[dict]:
    with open(summary.rejects_path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_hand_made_export_is_imported_priced_and_debited(tmp_path, company, price):
    give_credit(company, "10")
    path = write(
        tmp_path,
        f"{HEADER}\n"
        f"1,{company.pk},,tmp-1,1000,500,1500,5,,gpt-test,{stamp()}\n"
        f"2,{company.external_id},,tmp-1,2000,0,2000,3,0.25,gpt-test,{stamp()}\n",
    )
    summary = run(path)
    assert (summary.rows, summary.imported, summary.replayed, summary.rejected) == (2, 2, 0, 0)
    # row 1 priced: 1000 x 2.50 + 500 x 10.00 per million = 0.0075; row 2 reported 0.25
    assert summary.total_cost == Decimal("0.2575")
    rows = QuestionGenerationUsage.objects.filter(company=company).order_by("idempotency_key")
    assert [r.idempotency_key for r in rows] == ["import:1", "import:2"]
    assert [r.cost_source for r in rows] == ["priced", "reported"]
    assert CreditBalance.objects.get(company=company).balance == Decimal("9.7425")
    assert UsageDailyRollup.objects.filter(company=company).count() >= 1


def test_rerunning_an_import_never_double_counts(tmp_path, company, price):
    path = write(tmp_path, f"{HEADER}\n7,{company.pk},,d,10,10,,1,,gpt-test,{stamp()}\n")
    run(path)
    balance = CreditBalance.objects.get(company=company).balance
    again = run(path)
    assert (again.imported, again.replayed, again.rejected) == (0, 1, 0)
    assert QuestionGenerationUsage.objects.filter(company=company).count() == 1
    assert CreditBalance.objects.get(company=company).balance == balance
    assert LedgerEntry.objects.filter(company=company, kind="usage").count() == 1


def test_no_debit_records_history_without_touching_credits(tmp_path, company, price):
    give_credit(company, "5")
    path = write(tmp_path, f"{HEADER}\n1,{company.pk},,d,1000,1000,,1,1.5,gpt-test,{stamp()}\n")
    summary = run(path, debit=False)
    assert summary.imported == 1 and summary.total_cost == Decimal("1.5")
    assert LedgerEntry.objects.filter(company=company, kind="usage").count() == 0
    assert CreditBalance.objects.get(company=company).balance == Decimal("5")
    assert QuestionGenerationUsage.objects.get(company=company).prepaid


def test_messy_csv_blank_lines_quoted_commas_and_null_strings(tmp_path, company, price):
    path = write(
        tmp_path,
        f"{HEADER},metadata\n"
        "\n"
        f'1,{company.pk},NULL,"draft,with,commas",100,50,150,2,null,gpt-test,{stamp()},'
        '"{""school"": ""Springfield, IL""}"\n'
        "   \n"
        f"2,{company.pk},,d2,100,50,150,None,NULL,gpt-test,{stamp()},\n",
    )
    summary = run(path)
    assert (summary.rows, summary.imported, summary.rejected) == (2, 2, 0)
    first = QuestionGenerationUsage.objects.get(idempotency_key="import:1")
    assert first.draft_job_id == "draft,with,commas"
    assert first.job_id is None and first.cost_source == "priced"
    assert first.metadata == {"school": "Springfield, IL"}
    assert QuestionGenerationUsage.objects.get(idempotency_key="import:2").question_count == 0


def test_every_bad_row_is_rejected_with_line_and_reason(tmp_path, company, price):
    job_of_other = make_job(make_company())
    path = write(
        tmp_path,
        f"{HEADER}\n"
        f"1,no-such-company,,d,10,10,20,1,,gpt-test,{stamp()}\n"  # line 2
        f"2,{company.pk},,d,-5,10,5,1,,gpt-test,{stamp()}\n"  # line 3
        f"3,{company.pk},,d,10,10,99,1,,gpt-test,{stamp()}\n"  # line 4
        f"4,{company.pk},,d,10,10,20,1,-0.5,gpt-test,{stamp()}\n"  # line 5
        f"5,{company.pk},,d,ten,10,,1,,gpt-test,{stamp()}\n"  # line 6
        f"6,{company.pk},{job_of_other.pk},,10,10,,1,,gpt-test,{stamp()}\n"  # line 7
        f"7,{company.pk},,d,10,10,,1,,gpt-test\n"  # line 8: a field short
        f",{company.pk},,d,10,10,,1,,gpt-test,{stamp()}\n"  # line 9: no id
        f"9,{company.pk},,,10,10,,1,,gpt-test,{stamp()}\n"  # line 10: neither job nor draft
        f"10,{company.pk},,d,10,10,,1,,gpt-test,{stamp(-30)}\n"  # line 11: in the future
        f"11,{company.pk},,d,10,10,,1,,gpt-test,{stamp()}\n",  # line 12: fine
    )
    summary = run(path)
    assert (summary.rows, summary.imported, summary.rejected) == (11, 1, 10)
    reasons = {int(r["_line"]): r["_reason"] for r in rejects(summary)}
    assert list(reasons) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert "unknown company 'no-such-company'" in reasons[2]
    assert "prompt_tokens must not be negative" in reasons[3]
    assert "total_tokens 99 is not prompt_tokens 10 + completion_tokens 10" in reasons[4]
    assert "cost must not be negative" in reasons[5]
    assert "prompt_tokens must be a whole number" in reasons[6]
    assert reasons[7].startswith("job_of_another_company")
    assert reasons[8] == "expected 11 fields, found 10"
    assert reasons[9].startswith("id is required")
    assert "job_id or draft_job_id is required" in reasons[10]
    assert "in the future" in reasons[11]
    # The reject file keeps the original values, so the fixed file can be imported again.
    first = rejects(summary)[0]
    assert first["company_id"] == "no-such-company" and first["created_at"]
    assert QuestionGenerationUsage.objects.count() == 1


def test_total_tokens_derives_a_missing_side(tmp_path, company, price):
    path = write(tmp_path, f"{HEADER}\n1,{company.pk},,d,1000,,1600,1,,gpt-test,{stamp()}\n")
    assert run(path).imported == 1
    assert QuestionGenerationUsage.objects.get().completion_tokens == 600


def test_duplicate_ids_in_one_file(tmp_path, company, price):
    line = f"{company.pk},,d,10,10,20,1,,gpt-test,{stamp()}"
    path = write(
        tmp_path,
        f"{HEADER}\n1,{line}\n1,{line}\n1,{company.pk},,d,99,10,,1,,gpt-test,{stamp()}\n",
    )
    summary = run(path, batch_size=2)
    assert (summary.imported, summary.replayed, summary.rejected) == (1, 1, 1)
    assert rejects(summary)[0]["_reason"].startswith("idempotency_conflict")


def test_costs_with_many_decimals_are_rounded_once_half_even(tmp_path, company):
    path = write(
        tmp_path,
        f"{HEADER}\n"
        f"1,{company.pk},,d,1,1,,1,0.0000000000015,m,{stamp()}\n"
        f"2,{company.pk},,d,1,1,,1,0.0000000000025,m,{stamp()}\n"
        f"3,{company.pk},,d,1,1,,1,1.23456789012345678,m,{stamp()}\n",
    )
    run(path)
    costs = dict(QuestionGenerationUsage.objects.values_list("idempotency_key", "cost"))
    assert costs["import:1"] == Decimal("0.000000000002")
    assert costs["import:2"] == Decimal("0.000000000002")
    assert costs["import:3"] == Decimal("1.234567890123")


def test_timestamps_with_offsets_naive_and_epoch(tmp_path, company, price):
    when = (timezone.now() - timedelta(days=3)).replace(microsecond=0, second=0)
    naive = when.replace(tzinfo=None).isoformat()
    path = write(
        tmp_path,
        f"{HEADER}\n"
        f"1,{company.pk},,d,1,1,,1,,gpt-test,{naive}+02:00\n"
        f"2,{company.pk},,d,1,1,,1,,gpt-test,{naive}Z\n"
        f"3,{company.pk},,d,1,1,,1,,gpt-test,{naive}\n"
        f"4,{company.pk},,d,1,1,,1,,gpt-test,{int(when.timestamp())}\n",
    )
    summary = run(path)
    assert summary.rejected == 1
    assert "has no UTC offset" in rejects(summary)[0]["_reason"]
    occurred = dict(QuestionGenerationUsage.objects.values_list("idempotency_key", "occurred_at"))
    assert occurred["import:1"] == when.replace(tzinfo=None).replace(tzinfo=UTC) - timedelta(
        hours=2
    )
    assert occurred["import:2"] == when
    assert occurred["import:4"] == when
    # The operator may name the zone of naive timestamps explicitly.
    again = run(path, assume_tz="Europe/Berlin")
    assert (again.imported, again.replayed, again.rejected) == (1, 3, 0)
    berlin = QuestionGenerationUsage.objects.get(idempotency_key="import:3").occurred_at
    assert berlin.utcoffset() == timedelta(0)
    assert berlin == datetime.fromisoformat(naive).replace(
        tzinfo=__import__("zoneinfo").ZoneInfo("Europe/Berlin")
    )


def test_windows_1252_file_is_read_with_a_warning(tmp_path, company, price):
    path = write(
        tmp_path,
        f"{HEADER},metadata\n1,{company.pk},,Entwurf Zürich – Café,1,1,,1,,gpt-test,{stamp()},\n",
        encoding="cp1252",
    )
    summary = run(path)
    assert summary.encoding == "cp1252" and summary.imported == 1
    assert "not UTF-8" in summary.warnings[0]
    assert QuestionGenerationUsage.objects.get().draft_job_id == "Entwurf Zürich – Café"


def test_latin1_fallback_when_not_cp1252(tmp_path, company, price):
    raw = f"{HEADER}\n1,{company.pk},,d\x81x,1,1,,1,,gpt-test,{stamp()}\n".encode("latin-1")
    path = tmp_path / "latin.csv"
    path.write_bytes(raw)
    summary = run(path)
    assert summary.encoding == "latin-1" and summary.imported == 1


def test_utf8_bom_header_is_recognised(tmp_path, company, price):
    path = write(
        tmp_path,
        f"{HEADER}\n1,{company.pk},,d,1,1,,1,,gpt-test,{stamp()}\n",
        encoding="utf-8-sig",
    )
    summary = run(path)
    assert summary.encoding == "utf-8-sig" and summary.imported == 1


def test_missing_required_column_refuses_the_file(tmp_path, company, price):
    path = write(tmp_path, f"id,company_id,prompt_tokens,completion_tokens\n1,{company.pk},1,1\n")
    with pytest.raises(ImportFileError, match="created_at, model_used"):
        run(path)
    assert not QuestionGenerationUsage.objects.exists()


def test_semicolon_csv_and_our_own_column_names(tmp_path, company, price):
    path = write(
        tmp_path,
        "idempotency_key;company;model;occurred_at;prompt_tokens;cached_prompt_tokens;"
        "completion_tokens;draft_job_id;processing_time_ms;legacy_flag\n"
        f"evt-1;{company.external_id};gpt-test;{stamp()};1000;400;10;d;1200;x\n",
    )
    summary = run(path)
    assert summary.imported == 1 and summary.ignored_columns == ["legacy_flag"]
    usage = QuestionGenerationUsage.objects.get(idempotency_key="evt-1")
    assert (usage.cached_prompt_tokens, usage.processing_time_ms) == (400, 1200)


def test_jsonl_detected_from_content_with_bad_lines(tmp_path, company, price):
    lines = [
        json.dumps(
            {
                "id": 1,
                "company_id": str(company.pk),
                "draft_job_id": "d",
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "cost": None,
                "model_used": "gpt-test",
                "created_at": stamp(),
                "metadata": {"a": 1},
            }
        ),
        "",
        "{not json",
        "[1, 2]",
        json.dumps(
            {
                "id": 2,
                "company_id": str(company.pk),
                "draft_job_id": "d",
                "prompt_tokens": 10.0,
                "completion_tokens": 5,
                "model_used": "gpt-test",
                "created_at": stamp(),
            }
        ),
    ]
    path = write(tmp_path, "\n".join(lines) + "\n", name="export.data")
    summary = run(path)
    assert summary.format == "jsonl"
    assert (summary.rows, summary.imported, summary.rejected) == (4, 2, 2)
    with open(summary.rejects_path, encoding="utf-8") as handle:
        bad = [json.loads(line) for line in handle]
    assert [(b["_line"], b["_raw"]) for b in bad] == [(3, "{not json"), (4, "[1, 2]")]
    assert QuestionGenerationUsage.objects.get(idempotency_key="import:1").metadata == {"a": 1}


def test_dry_run_validates_everything_and_writes_nothing(tmp_path, company, price):
    when = stamp()
    run(write(tmp_path, f"{HEADER}\n1,{company.pk},,d,1000,500,,1,,gpt-test,{when}\n", "a.csv"))
    path = write(
        tmp_path,
        f"{HEADER}\n"
        f"1,{company.pk},,d,1000,500,,1,,gpt-test,{when}\n"
        f"2,{company.pk},,d,1000,500,,1,,gpt-test,{when}\n"
        f"1,{company.pk},,d,999,500,,1,,gpt-test,{when}\n"
        f"3,nobody,,d,1,1,,1,,gpt-test,{stamp()}\n"
        f"4,{company.pk},{make_job(make_company()).pk},,1,1,,1,,gpt-test,{stamp()}\n",
        "b.csv",
    )
    before = (QuestionGenerationUsage.objects.count(), LedgerEntry.objects.count())
    summary = run(path, dry_run=True)
    assert (summary.imported, summary.replayed, summary.rejected) == (1, 1, 3)
    assert [r["_reason"].split(":")[0] for r in rejects(summary)] == [
        "idempotency_conflict",
        "unknown company 'nobody' (neither a company id nor an external id)",
        "job_of_another_company",
    ]
    assert summary.total_cost == Decimal("0.0075")
    assert (QuestionGenerationUsage.objects.count(), LedgerEntry.objects.count()) == before


def test_command_prints_json_and_exits_one_on_rejects(tmp_path, company, price):
    path = write(
        tmp_path,
        f"{HEADER}\n1,{company.pk},,d,1,1,,1,,gpt-test,{stamp()}\n2,nobody,,d,1,1,,1,,gpt-test,{stamp()}\n",
    )
    out = StringIO()
    reject_path = tmp_path / "bad.csv"
    with pytest.raises(CommandError) as raised:
        call_command("import_usage", str(path), "--json", "--rejects", str(reject_path), stdout=out)
    assert raised.value.returncode == 1
    payload = json.loads(out.getvalue())
    assert (payload["imported"], payload["rejected"]) == (1, 1)
    assert payload["rejects_path"] == str(reject_path) and reject_path.exists()


def test_command_clean_import_exits_zero_with_summary(tmp_path, company, price):
    path = write(tmp_path, f"{HEADER}\n1,{company.pk},,d,1,1,,1,0.5,gpt-test,{stamp()}\n")
    out = StringIO()
    call_command("import_usage", str(path), "--no-debit", stdout=out)
    text = out.getvalue()
    assert "imported 1, replayed 0, rejected 0" in text and "not debited" in text


def test_rows_with_the_same_key_go_to_the_same_worker():
    rows = [{"id": str(n)} for n in range(200)]
    owners = {worker_of(row, 3) for row in rows}
    assert owners == {0, 1, 2}
    assert worker_of({"id": "42"}, 3) == worker_of({"idempotency_key": None, "id": "42"}, 3)
    assert worker_of({"idempotency_key": "k", "id": "1"}, 4) == worker_of({"id": "x", "idempotency_key": "k"}, 4)  # fmt: skip
    assert worker_of({"id": "5"}, 2) == worker_of({"idempotency_key": "import:5"}, 2)
    assert {worker_of({"id": str(n)}, 2) == worker_of({"idempotency_key": f"import:{n}"}, 2) for n in range(100)} == {True}  # fmt: skip

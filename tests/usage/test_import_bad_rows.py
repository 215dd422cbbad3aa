"""import_usage: one bad row is a reject, never the end of the import."""

from __future__ import annotations

import json

import pytest

from tests.usage.test_import_usage import HEADER, rejects, run, stamp, write
from usage.models import QuestionGenerationUsage

pytestmark = pytest.mark.django_db


def jsonl(company, bad_fields: str) -> str:
    """Two JSON Lines rows: the first with `bad_fields` (raw JSON) spliced in, the second good."""
    base = {
        "id": "1",
        "company_id": str(company.pk),
        "draft_job_id": "d",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "model_used": "gpt-test",
        "created_at": stamp(),
    }
    first = json.dumps(base)[:-1] + ", " + bad_fields + "}"
    return first + "\n" + json.dumps({**base, "id": "2"}) + "\n"


@pytest.mark.parametrize("created_at", ["99999999999999", "²"])
def test_out_of_range_epoch_timestamp_is_a_reject_not_a_crash(tmp_path, company, price, created_at):
    # datetime.fromtimestamp raised ValueError/OverflowError out of the import.
    path = write(
        tmp_path,
        f"{HEADER}\n1,{company.pk},,d,1,1,2,1,,gpt-test,{created_at}\n"
        f"2,{company.pk},,d,1,1,2,1,,gpt-test,{stamp()}\n",
    )
    summary = run(path)
    assert (summary.imported, summary.rejected) == (1, 1)
    assert "created_at" in rejects(summary)[0]["_reason"]


@pytest.mark.parametrize("bad", ['"created_at": 1e300', '"created_at": true'])
def test_non_timestamp_json_values_are_rejects(tmp_path, company, price, bad):
    # 1e300 crashed the import; `true` was read as 1970-01-01T00:00:01Z.
    summary = run(write(tmp_path, jsonl(company, bad), name="usage.jsonl"))
    assert (summary.imported, summary.rejected) == (1, 1)
    assert QuestionGenerationUsage.objects.get().idempotency_key == "import:2"


def test_huge_exponent_token_count_is_a_reject_without_building_the_number(
    tmp_path, company, price
):
    # int(Decimal("1e999999999")) builds a billion-digit integer: the import hung.
    path = write(
        tmp_path,
        f"{HEADER}\n1,{company.pk},,d,1e999999999,1,,1,,gpt-test,{stamp()}\n"
        f"2,{company.pk},,d,1,1,2,1,,gpt-test,{stamp()}\n",
    )
    summary = run(path)
    assert (summary.imported, summary.rejected) == (1, 1)
    assert "prompt_tokens" in rejects(summary)[0]["_reason"]


@pytest.mark.parametrize(
    "bad", ['"company_id": "x\\u0000"', '"model_used": "m\\u0000"', '"metadata": {"a": "\\u0000"}']
)
def test_nul_character_is_a_reject_not_a_crash(tmp_path, company, price, bad):
    # PostgreSQL cannot store NUL: the query raised DataError out of the import.
    summary = run(write(tmp_path, jsonl(company, bad), name="usage.jsonl"))
    assert (summary.imported, summary.rejected) == (1, 1)


def test_nul_byte_in_a_csv_cell_is_a_reject(tmp_path, company, price):
    path = write(
        tmp_path,
        f"{HEADER}\n1,{company.pk},,d\x00,1,1,2,1,,gpt-test,{stamp()}\n"
        f"2,{company.pk},,d,1,1,2,1,,gpt-test,{stamp()}\n",
    )
    summary = run(path)
    assert (summary.imported, summary.rejected) == (1, 1)


@pytest.mark.parametrize(
    "bad",
    ['"metadata": {"a": NaN}', '"metadata": {"a": 1e400}', '"metadata": "{\\"a\\": Infinity}"'],
)
def test_non_finite_json_number_is_a_reject_not_a_crash(tmp_path, company, price, bad):
    # json.loads reads NaN/Infinity/1e400; PostgreSQL's jsonb refuses them: DataError ended the import.
    summary = run(write(tmp_path, jsonl(company, bad), name="usage.jsonl"))
    assert (summary.imported, summary.rejected) == (1, 1)

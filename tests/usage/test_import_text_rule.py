"""import_usage applies core.text's rule to every field: a lone surrogate or a NUL (also
inside a CSV cell's metadata JSON) and digits other than ASCII make that row a reject,
never a failed batch or a misread number."""

from __future__ import annotations

import json

import pytest

from tests.usage.test_import_bad_rows import jsonl
from tests.usage.test_import_usage import HEADER, rejects, run, stamp, write
from usage.models import QuestionGenerationUsage

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "bad",
    [
        '"model_used": "gpt-\\ud800"',
        '"draft_job_id": "\\udfff"',
        '"metadata": {"note": "a\\u0000b"}',
        '"metadata": {"\\ud800": 1}',
    ],
)
def test_unstorable_text_in_a_jsonl_row_is_a_reject(tmp_path, company, price, bad):
    summary = run(write(tmp_path, jsonl(company, bad), name="usage.jsonl"))
    assert (summary.imported, summary.rejected) == (1, 1)
    with open(summary.rejects_path, encoding="utf-8") as handle:
        reason = json.loads(handle.readline())["_reason"]
    assert "surrogate" in reason or "NUL" in reason
    assert QuestionGenerationUsage.objects.get().idempotency_key == "import:2"


def test_nul_inside_a_csv_cells_metadata_json_is_a_reject(tmp_path, company, price):
    header = HEADER + ",metadata"
    bad = f'1,{company.pk},,d,1,1,2,1,,gpt-test,{stamp()},"{{""a"": ""x\\u0000""}}"'
    good = f"2,{company.pk},,d,1,1,2,1,,gpt-test,{stamp()},"
    summary = run(write(tmp_path, f"{header}\n{bad}\n{good}\n"))
    assert (summary.imported, summary.rejected) == (1, 1)
    assert "metadata.a" in rejects(summary)[0]["_reason"]


@pytest.mark.parametrize("tokens", ["١٢", "１２", "1_0"])
def test_token_counts_in_other_than_ascii_digits_are_rejects(tmp_path, company, price, tokens):
    path = write(
        tmp_path,
        f"{HEADER}\n1,{company.pk},,d,{tokens},1,,1,,gpt-test,{stamp()}\n"
        f"2,{company.pk},,d,1,1,2,1,,gpt-test,{stamp()}\n",
    )
    summary = run(path)
    assert (summary.imported, summary.rejected) == (1, 1)
    assert "must be a whole number" in rejects(summary)[0]["_reason"]


def test_a_unix_time_in_other_than_ascii_digits_is_a_reject(tmp_path, company, price):
    path = write(
        tmp_path,
        f"{HEADER}\n1,{company.pk},,d,1,1,2,1,,gpt-test,١٧٠٠٠٠٠٠٠٠\n"
        f"2,{company.pk},,d,1,1,2,1,,gpt-test,{stamp()}\n",
    )
    summary = run(path)
    assert (summary.imported, summary.rejected) == (1, 1)

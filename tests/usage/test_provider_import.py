"""Importing the providers' saved admin-API pages: idempotent, corrections replace, all or nothing."""

from __future__ import annotations

import copy
import io
import json
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from billing.models import AuditEvent
from tests.usage.provider_world import (
    ANTHROPIC_COSTS,
    ANTHROPIC_USAGE,
    NOV3,
    NOV4,
    OPENAI_COSTS,
    OPENAI_MAP,
    OPENAI_USAGE,
    import_anthropic,
    import_openai,
)
from usage.models import ProviderBucket, ProviderCostLine, ProviderProjectMap, ProviderUsageLine
from usage.provider_usage import import_provider_usage

pytestmark = pytest.mark.django_db


def counts() -> tuple[int, int, int, int]:
    return (
        ProviderBucket.objects.filter(superseded_at__isnull=True).count(),
        ProviderBucket.objects.count(),
        ProviderUsageLine.objects.count(),
        ProviderCostLine.objects.count(),
    )


def run(*paths: Path | str, provider: str = "openai", **options) -> dict:
    out = io.StringIO()
    call_command(
        "import_provider_usage",
        *map(str, paths),
        provider=provider,
        json=True,
        stdout=out,
        **options,
    )
    return json.loads(out.getvalue())


def write(tmp_path: Path, name: str, page: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(page))
    return path


def page_of(path: Path) -> dict:
    return json.loads(path.read_text())


def test_the_same_pages_imported_twice_count_each_day_once():
    first = run(*OPENAI_USAGE, OPENAI_COSTS)
    assert (first["new"], first["unchanged"], first["replaced"]) == (6, 0, 0)
    assert (first["usage_buckets"], first["cost_buckets"], first["results"]) == (3, 3, 27)
    assert first["models"] == ["gpt-4o", "gpt-4o-mini"]
    assert counts() == (6, 6, 8, 27 - 8)
    again = run(*OPENAI_USAGE, OPENAI_COSTS)
    assert (again["new"], again["unchanged"], again["replaced"]) == (0, 6, 0)
    # A page given twice in one run (overlapping exports) is counted once too.
    overlap = run(OPENAI_USAGE[0], *OPENAI_USAGE)
    assert (overlap["new"], overlap["unchanged"]) == (0, 5)
    assert counts() == (6, 6, 8, 19)


def test_a_corrected_day_replaces_the_earlier_one_which_is_kept(tmp_path):
    run(*OPENAI_USAGE)
    corrected = page_of(OPENAI_USAGE[0])
    late = corrected["data"][1]["results"][0]  # 2026-11-04, gpt-4o of proj_qgen
    late["input_tokens"] += 12_000
    late["input_cached_tokens"] += 4_000
    late["output_tokens"] += 1_500
    late["num_model_requests"] += 1
    summary = run(write(tmp_path, "page1-again.json", corrected))
    assert (summary["new"], summary["unchanged"], summary["replaced"]) == (0, 1, 1)
    assert summary["replaced_days"] == [{"report": "usage", "day": "2026-11-04"}]
    old, new = ProviderBucket.objects.filter(day=NOV4).order_by("imported_at", "id")
    assert old.superseded_at is not None and new.superseded_at is None
    assert new.replaces == old and old.replaced_by == new
    assert old.usage_lines.get(project_id="proj_qgen", model="gpt-4o-2024-08-06").requests == 5
    assert new.usage_lines.get(project_id="proj_qgen", model="gpt-4o-2024-08-06").requests == 6
    # The original figures again are another correction, not a no-op.
    back = run(OPENAI_USAGE[0])
    assert (back["replaced"], back["unchanged"]) == (1, 1)
    assert ProviderBucket.objects.filter(day=NOV4).count() == 3


def test_a_dry_run_reads_everything_and_stores_nothing():
    summary = run(*OPENAI_USAGE, OPENAI_COSTS, dry_run=True, project_map=str(OPENAI_MAP))
    assert summary["dry_run"] and summary["new"] == 6 and summary["project_map_updated"]
    assert counts() == (0, 0, 0, 0)
    assert not ProviderProjectMap.objects.exists() and not AuditEvent.objects.exists()


def test_the_text_summary_lists_tokens_per_project():
    out = import_openai(project_map=str(OPENAI_MAP))
    assert "6 new, 0 unchanged, 0 replaced; models: gpt-4o, gpt-4o-mini" in out
    assert "proj_helpdesk: 0 tokens ours, 826,750 excluded" in out
    assert "proj_qgen: 166,000 tokens ours, 0 excluded" in out


def test_amounts_are_exact_decimals_from_the_json_text():
    import_openai()
    import_anthropic()
    amounts = ProviderCostLine.objects.filter(bucket__provider="openai", project_id="proj_qgen")
    assert sorted(set(amounts.values_list("amount", flat=True)))[:3] == [
        Decimal("0.00054"),
        Decimal("0.00108"),
        Decimal("0.0012"),
    ]
    anthropic = ProviderCostLine.objects.filter(bucket__provider="anthropic")
    # "3.75" cents is $0.0375; "0.16" cents is $0.0016.
    assert anthropic.get(token_type="cache_creation.ephemeral_5m_input_tokens").amount == Decimal(
        "0.0375"
    )
    assert anthropic.filter(model="claude-3-5-haiku-20241022").values_list("amount", flat=True)[
        0
    ] == Decimal("0.0016")
    web = anthropic.get(cost_type="web_search")
    assert (web.amount, web.model, web.line_item) == (Decimal("0.03"), "", "Web Search")
    # The raw copy keeps the result as exported, numbers as numbers.
    line = ProviderCostLine.objects.filter(bucket__provider="openai").first()
    assert line.raw["amount"] == {"value": 0.06, "currency": "usd"}


def test_anthropic_dimensions_are_stored_per_tier_and_context_window():
    import_anthropic()
    lines = ProviderUsageLine.objects.filter(bucket__day=NOV4).order_by("service_tier")
    assert [
        (ln.service_tier, ln.context_window, ln.input_tokens, ln.cached_input_tokens)
        + (ln.cache_write_5m_tokens, ln.cache_write_1h_tokens, ln.output_tokens, ln.requests)
        for ln in lines
    ] == [
        ("batch", "0-200k", 45_000, 25_000, 0, 5_000, 3_000, None),
        ("standard", "0-200k", 45_000, 25_000, 5_000, 0, 3_000, None),
    ]
    # The empty last day is a usage day with no usage (the file's other page says usage).
    empty = ProviderBucket.objects.get(provider="anthropic", day="2026-11-05")
    assert (empty.report, empty.result_count) == ("usage", 0)


def test_an_empty_page_needs_the_report_named_when_nothing_else_tells(tmp_path):
    page = page_of(OPENAI_USAGE[1])
    page["data"][0]["results"] = []
    path = write(tmp_path, "empty.json", page)
    with pytest.raises(CommandError, match="--report usage or --report cost"):
        run(path)
    assert run(path, report="cost")["cost_buckets"] == 1
    with pytest.raises(CommandError, match="not cost"):
        run(OPENAI_USAGE[0], report="cost")


def _broken(mutate) -> dict:
    page = copy.deepcopy(page_of(OPENAI_USAGE[0]))
    mutate(page)
    return page


BROKEN = {
    "an hourly bucket": (
        lambda p: p["data"][0].update(end_time=p["data"][0]["start_time"] + 3600),
        "data[0]: the bucket runs from 2026-11-03T00:00:00+00:00 to 2026-11-03T01:00:00+00:00",
    ),
    "usage not grouped by model": (
        lambda p: p["data"][1]["results"][2].update(model=None),
        "data[1].results[2]: `model` is missing; export the usage grouped by model",
    ),
    "negative tokens": (
        lambda p: p["data"][0]["results"][1].update(output_tokens=-5),
        "data[0].results[1]: `output_tokens` must be a whole number >= 0, not -5",
    ),
    "tokens as text": (
        lambda p: p["data"][0]["results"][0].update(input_tokens="36000"),
        "data[0].results[0]: `input_tokens` must be a whole number >= 0, not '36000'",
    ),
    "more cached than input": (
        lambda p: p["data"][0]["results"][0].update(input_cached_tokens=99_999),
        "data[0].results[0]: input_cached_tokens exceeds input_tokens",
    ),
    "embeddings usage": (
        lambda p: p["data"][0]["results"][0].update(object="organization.usage.embeddings.result"),
        "data[0].results[0]: object 'organization.usage.embeddings.result' is not",
    ),
    "not a page": (lambda p: p.pop("data"), "not a page of the openai admin API"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_page_not_in_the_documented_shape_is_refused_and_nothing_is_stored(tmp_path, case):
    mutate, message = BROKEN[case]
    path = write(tmp_path, "broken.json", _broken(mutate))
    with pytest.raises(CommandError) as failure:
        run(OPENAI_USAGE[1], path)  # a good file first: all or nothing
    assert str(path) in str(failure.value) and message in str(failure.value)
    assert counts() == (0, 0, 0, 0)


def test_anthropic_shapes_are_checked_too(tmp_path):
    cost = page_of(ANTHROPIC_COSTS)
    cost["data"][0]["results"][0]["amount"] = 9.0  # a number, not the documented string
    with pytest.raises(CommandError, match=r"results\[0\]: `amount` must be a decimal string"):
        run(write(tmp_path, "cost.json", cost), provider="anthropic")
    cost["data"][0]["results"][0].update(amount="9.0", currency="EUR")
    with pytest.raises(CommandError, match="currency 'EUR'; only USD is compared"):
        run(write(tmp_path, "cost.json", cost), provider="anthropic")
    with pytest.raises(CommandError, match="`starting_at` must be an RFC 3339 timestamp"):
        run(OPENAI_USAGE[0], provider="anthropic")
    with pytest.raises(CommandError, match="`start_time` must be Unix seconds"):
        run(ANTHROPIC_USAGE, provider="openai")
    assert counts() == (0, 0, 0, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1]", "must be an object with only ours, exclude and unlisted"),
        ('{"ours": ["a"], "projects": []}', "(unknown: projects)"),
        ('{"ours": "proj_a"}', "ours must be a list of ids"),
        ('{"ours": ["a"], "exclude": ["a"]}', "listed both as ours and excluded: a"),
        ('{"unlisted": "maybe"}', "unlisted must be 'ours' or 'exclude'"),
        ("{", "not JSON"),
    ],
)
def test_a_wrong_project_map_is_refused(tmp_path, text, message):
    path = tmp_path / "map.json"
    path.write_text(text)
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run(OPENAI_USAGE[1], project_map=str(path))
    assert counts() == (0, 0, 0, 0)


def test_the_project_map_is_stored_and_its_change_audited():
    import_openai(project_map=str(OPENAI_MAP))
    stored = ProviderProjectMap.objects.get(provider="openai")
    assert (stored.ours, stored.exclude, stored.unlisted) == (
        ["proj_qgen"],
        ["proj_helpdesk"],
        "exclude",
    )
    change = AuditEvent.objects.get(action="provider_project_map.set")
    assert change.after["exclude"] == ["proj_helpdesk"] and change.before["unlisted"] == "ours"
    import_openai(project_map=str(OPENAI_MAP))  # the same map: no new audit event
    assert AuditEvent.objects.filter(action="provider_project_map.set").count() == 1
    assert AuditEvent.objects.filter(action="provider_usage.import").count() == 2


def test_missing_files_and_empty_folders_are_named(tmp_path):
    with pytest.raises(CommandError, match="no such file or folder"):
        run(tmp_path / "nope.json")
    with pytest.raises(CommandError, match="no \\*.json or \\*.jsonl files"):
        run(tmp_path)


@pytest.mark.django_db(transaction=True)
def test_two_imports_at_once_store_each_day_once():
    barrier, errors, results = threading.Barrier(2), [], []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(import_provider_usage(paths=OPENAI_USAGE, provider="openai"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted((r.new, r.unchanged) for r in results) == [(0, 3), (3, 0)]
    assert counts()[:2] == (3, 3)


def test_an_openai_amount_given_as_a_decimal_string_is_taken_exactly(tmp_path):
    costs = page_of(OPENAI_COSTS)
    costs["data"][0]["results"][0]["amount"]["value"] = "0.060000000001"
    costs["data"][0]["results"][1]["amount"]["value"] = "lots"
    with pytest.raises(CommandError, match=r"results\[1\].amount: `value` must be a number"):
        run(write(tmp_path, "costs.json", costs))
    costs["data"][0]["results"][1]["amount"]["value"] = 0.015
    run(write(tmp_path, "costs.json", costs))
    first = ProviderCostLine.objects.get(
        line_item="gpt-4o-2024-08-06, input", project_id="proj_qgen", bucket__day=NOV3
    )
    assert first.amount == Decimal("0.060000000001")

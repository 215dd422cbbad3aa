"""Reading LiteLLM's price table, and `manage.py import_prices` loading it."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from billing.models import AuditEvent, ModelPrice
from billing.price_table import TableReading, load_table, per_million, read_table
from billing.prices import set_model_price

SUBSET = Path(__file__).parent / "data" / "litellm_model_prices_subset.json"
D = Decimal


def reading_of(entries: dict, **filters) -> TableReading:
    text = json.dumps(entries)
    return read_table(json.loads(text, parse_float=Decimal), **filters)


def only_spec(entry: dict, tier: str = "standard"):
    reading = reading_of({"m": {"mode": "chat", **entry}})
    assert reading.skipped == []
    (spec,) = [s for s in reading.specs if s.service_tier == tier]
    return spec


# --- Numbers as published ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("published", "per_mill"),
    [
        ("8.000000000000001e-07", "0.8"),  # float noise: 16 significant digits
        ("3.0000000000000004e-06", "3"),
        ("1.4999999999999999e-07", "0.15"),  # noise below the intended value too
        ("1.6000000000000001e-06", "1.6"),
        ("1.41953125e-07", "0.141953125"),  # genuinely finer: 9 places, exact
        ("3.59375e-08", "0.0359375"),
        ("2.5e-06", "2.5"),
        ("0", "0"),
        ("1e-18", "0.000000000001"),  # the finest a price holds: 12 places per million
        ("0.000001234567890123", "1.234567890123"),  # 13 significant digits: exact
    ],
)
def test_published_numbers_are_read_as_the_provider_means_them(published, per_mill):
    reading = TableReading()
    rate = per_million(json.loads(published, parse_float=Decimal), "m", "k", reading)
    assert rate == D(per_mill)
    assert (len(reading.leftovers) == 1) == (len(D(published).normalize().as_tuple().digits) > 15)


def test_a_price_finer_than_twelve_places_per_million_is_skipped_never_rounded():
    reading = reading_of(
        {
            "glm": {
                "mode": "chat",
                "input_cost_per_token": 1.1428571428571428e-06,
                "output_cost_per_token": 4e-06,
            }
        }  # fmt: skip
    )
    assert reading.specs == []
    ((model, reason),) = reading.skipped
    assert (
        model == "glm" and "finer than 12 decimal places" in reason and "1.14285714285714" in reason
    )


def test_the_file_is_read_as_its_decimal_text_never_through_a_float(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{"m": {"input_cost_per_token": 1.41953125e-07}}')
    assert load_table(path)["m"]["input_cost_per_token"] == D("1.41953125e-07")


# --- Dimensions, tiers, long context --------------------------------------------------------


def test_every_dimension_is_mapped_and_missing_ones_take_the_documented_defaults():
    spec = only_spec(
        {
            "input_cost_per_token": 3e-06,
            "output_cost_per_token": 1.5e-05,
            "cache_read_input_token_cost": 3e-07,
            "cache_creation_input_token_cost": 3.75e-06,
            "cache_creation_input_token_cost_above_1hr": 6e-06,
            "output_cost_per_reasoning_token": 2e-05,
        }  # fmt: skip
    )
    assert spec.rates == (D("3"), D("0.3"), D("3.75"), D("6"), D("15"), D("20"))
    bare = only_spec({"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06})
    # cache read and the 5-minute write at the input rate, 1-hour at the 5-minute, reasoning
    # at the output rate
    assert bare.rates == (D(1), D(1), D(1), D(1), D(2), D(2))
    zero_write = only_spec(
        {
            "input_cost_per_token": 1e-06,
            "output_cost_per_token": 2e-06,
            "cache_creation_input_token_cost": 0.0,
        }  # fmt: skip
    )
    assert zero_write.rates[2:4] == (D(0), D(0))  # an explicit zero is a price


def test_service_tiers_get_their_own_periods_and_fall_back_to_the_standard_key():
    entry = {
        "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-07,
        "input_cost_per_token_batches": 6.25e-07, "output_cost_per_token_batches": 5e-06,
        "input_cost_per_token_priority": 2.5e-06, "output_cost_per_token_priority": 2e-05,
        "cache_read_input_token_cost_priority": 2.5e-07,
        "input_cost_per_token_ultrafast": 6e-05,  # not a tier we price: reported, not mapped
    }  # fmt: skip
    reading = reading_of({"m": {"mode": "chat", **entry}})
    tiers = {s.service_tier: s for s in reading.specs}
    assert set(tiers) == {"standard", "batch", "priority"}
    assert tiers["priority"].rates[:2] == (D("2.5"), D("0.25"))
    assert tiers["batch"].rates[:2] == (D("0.625"), D("0.125"))  # no batch cache read: standard's
    assert reading.ignored_keys["input_cost_per_token_ultrafast"] == 1


def test_a_long_context_tier_from_the_above_keys_applies_its_own_rates():
    spec = only_spec(
        {
            "input_cost_per_token": 1.25e-06,
            "output_cost_per_token": 1e-05,
            "cache_read_input_token_cost": 1.25e-07,
            "input_cost_per_token_above_200k_tokens": 2.5e-06,
            "output_cost_per_token_above_200k_tokens": 1.5e-05,
            "cache_read_input_token_cost_above_200k_tokens": 2.5e-07,
        }  # fmt: skip
    )
    assert spec.long_context_threshold == 200_000
    assert spec.long_rates == (D("2.5"), D("0.25"), D("2.5"), D("2.5"), D("15"), D("15"))


def test_xai_thresholds_count_the_prompt_that_reaches_them():
    reading = reading_of(
        {"xai/g": {"mode": "chat", "litellm_provider": "xai", "input_cost_per_token": 1e-06,
                   "output_cost_per_token": 2e-06, "input_cost_per_token_above_200k_tokens": 2e-06}}
    )  # fmt: skip
    assert reading.specs[0].long_context_threshold == 199_999  # > 199,999 is >= 200,000


def test_tiered_pricing_with_two_ranges_is_a_long_context_tier():
    spec = only_spec(
        {"tiered_pricing": [
            {"input_cost_per_token": 4e-07, "output_cost_per_token": 1.2e-06,
             "output_cost_per_reasoning_token": 4e-06, "range": [0, 256000.0]},
            {"input_cost_per_token": 1.2e-06, "output_cost_per_token": 3.6e-06,
             "output_cost_per_reasoning_token": 1.2e-05, "range": [256000.0, 1000000.0]}]}
    )  # fmt: skip
    assert spec.long_context_threshold == 256_000
    assert spec.rates[4:] == (D("1.2"), D("4")) and spec.long_rates[4:] == (D("3.6"), D("12"))


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"mode": "image_generation", "input_cost_per_token": 1e-06}, "mode 'image_generation': only chat"),
        ({"mode": "chat", "input_cost_per_token": 1e-06}, "no per-token input and output price"),
        ({"mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06,
          "off_peak_pricing": {}}, "off-peak"),
        ({"mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06,
          "input_cost_per_token_above_32k_tokens": 2e-06,
          "input_cost_per_token_above_256k_tokens": 3e-06}, "more than one long-context threshold"),
        ({"mode": "chat", "tiered_pricing": [{"range": [0, 1]}, {"range": [1, 2]}, {"range": [2, 3]}]},
         "tiered_pricing has 3 ranges"),
        ({"mode": "chat", "input_cost_per_token": "cheap", "output_cost_per_token": 1e-06},
         "is not a number"),
    ],
)  # fmt: skip
def test_what_cannot_be_held_is_skipped_with_its_reason(entry, reason):
    reading = reading_of({"m": entry})
    assert reading.specs == [] and reason in reading.skipped[0][1]


def test_filters_by_glob_and_provider():
    data = load_table(SUBSET)
    assert {s.model for s in read_table(data, models=["gpt-*", "o4*"]).specs} == {
        "gpt-4o", "gpt-5", "gpt-6-astra", "o4-mini"}  # fmt: skip
    assert {s.model for s in read_table(data, provider="anthropic").specs} == {
        "claude-sonnet-4-5", "claude-haiku-4-5"}  # fmt: skip


# --- The command -------------------------------------------------------------------------------


def run(*args: str) -> dict:
    out = io.StringIO()
    call_command("import_prices", str(SUBSET), "--json", *args, stdout=out)
    return json.loads(out.getvalue())


def test_import_loads_the_subset_and_a_second_run_changes_nothing(db):
    first = run("--effective-from", "2026-01-01")
    assert len(first["new"]) == ModelPrice.objects.count() == 34
    assert first["changed"] == [] and first["unchanged"] == 0
    assert {s["model"] for s in first["skipped"]} == {
        "dashscope/qwen3-max", "bigmodel/glm-5.3", "deepseek-flash", "kyma/qwen3.7-flash",
        "1024-x-1024/50-steps/stability.stable-diffusion-xl-v1"}  # fmt: skip
    assert {f["model"] for f in first["float_leftovers"]} == {
        "novita/deepseek/deepseek-v4-pro", "bigmodel/glm-5.3"}  # fmt: skip
    morph = ModelPrice.objects.get(model="morph/morph-dsv4flash")
    assert (
        morph.input_per_million == D("0.141953125")
        and morph.source == "litellm:morph/morph-dsv4flash"
    )
    assert ModelPrice.objects.get(model="novita/deepseek/deepseek-v4-pro").input_per_million == D(
        "1.6"
    )
    gemini = ModelPrice.objects.get(model="gemini/gemini-2.5-pro", service_tier="priority")
    assert (gemini.long_context_threshold, gemini.long_input_per_million) == (200_000, D("4.5"))
    claude = ModelPrice.objects.get(model="claude-sonnet-4-5", service_tier="standard")
    assert (claude.cache_write_5m_per_million, claude.cache_write_1h_per_million) == (
        D("3.75"),
        D("6"),
    )

    second = run("--effective-from", "2026-02-01")
    assert (second["new"], second["changed"], second["unchanged"]) == ([], [], 34)
    assert ModelPrice.objects.count() == 34


def test_a_changed_price_closes_the_open_period_and_opens_one(db, tmp_path):
    run("--effective-from", "2026-01-01", "--models", "gpt-4o")
    data = json.loads(SUBSET.read_text())
    data["gpt-4o"]["output_cost_per_token"] = 1.2e-05
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps({"gpt-4o": data["gpt-4o"]}))
    out = io.StringIO()
    call_command(
        "import_prices", str(changed), "--effective-from", "2026-03-01", "--json", stdout=out
    )
    report = json.loads(out.getvalue())
    assert [(c["service_tier"], c["was"]["output"], c["rates"]["output"]) for c in report["changed"]] == [
        ("standard", "10.00", "12.00")]  # fmt: skip
    assert report["unchanged"] == 2  # batch and priority kept their rates
    old, new = ModelPrice.objects.filter(model="gpt-4o", service_tier="standard").order_by("id")
    assert old.effective_to == new.effective_from == datetime(2026, 3, 1, tzinfo=UTC)
    assert AuditEvent.objects.filter(action="model_price.set").count() == 4


def test_dry_run_reports_the_diff_and_changes_nothing(db):
    out = io.StringIO()
    call_command("import_prices", str(SUBSET), "--dry-run", stdout=out)
    text = out.getvalue()
    assert "new        gpt-4o (standard): input 2.50, cached_input 1.25" in text
    assert "skipped    deepseek-flash: off-peak (time-of-day) pricing is not supported" in text
    assert "float      novita/deepseek/deepseek-v4-pro input_cost_per_token" in text
    assert "would change (dry run, nothing changed): 34 new, 0 changed, 0 unchanged" in text
    assert not ModelPrice.objects.exists() and not AuditEvent.objects.exists()


def test_a_period_that_starts_after_the_import_is_not_overwritten(db):
    set_model_price(model="gpt-4o", input_per_million="9", output_per_million="9",
                    effective_from=datetime(2026, 6, 1, tzinfo=UTC))  # fmt: skip
    report = run("--effective-from", "2026-01-01", "--models", "gpt-4o")
    (skipped,) = [s for s in report["skipped"] if s.get("service_tier") == "standard"]
    assert "not before --effective-from" in skipped["reason"]


def test_an_unreadable_file_is_a_command_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CommandError, match="bad.json"):
        call_command("import_prices", str(bad))
    with pytest.raises(CommandError, match="nowhere.json"):
        call_command("import_prices", str(tmp_path / "nowhere.json"))

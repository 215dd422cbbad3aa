"""Reconciliation against the provider: the sample exports give exactly the expected report."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from tests.conftest import make_company, make_usage
from tests.usage.provider_world import (
    ANTHROPIC_USAGE,
    GPT4O,
    NOV3,
    NOV4,
    NOV5,
    OPENAI_MAP,
    OPENAI_USAGE,
    at,
    import_anthropic,
    import_openai,
    record_anthropic_usage,
    record_openai_usage,
)
from usage.models import ProviderBucket
from usage.provider_reconciliation import Tolerance, reconcile_provider
from usage.provider_usage import canonical_model

pytestmark = pytest.mark.django_db


def summary(report) -> list[tuple]:
    """Each line as (day, model, status, input, cached, output differences, lost)."""
    rows = []
    for line in report.lines:
        diff = line.difference
        lost = line.lost and (
            line.lost.tokens,
            line.lost.cost_at_our_prices,
            line.lost.estimated_generations,
        )
        rows.append(
            (line.day, line.model, line.status, diff["input_tokens"], diff["cached_input_tokens"])
            + (diff["output_tokens"], lost)
        )
    return rows


def run_cron(*args: str) -> tuple[dict, bool]:
    """`reconcile_provider --json`: its JSON and whether it exited 0."""
    out = io.StringIO()
    try:
        call_command("reconcile_provider", *args, "--json", stdout=out)
        ok = True
    except CommandError:
        ok = False
    return json.loads(out.getvalue()), ok


def test_openai_sample_gives_exactly_the_expected_report():
    record_openai_usage()
    import_openai(project_map=str(OPENAI_MAP))
    report = reconcile_provider(provider="openai", since=NOV3, until=NOV5)
    assert summary(report) == [
        (NOV3, "gpt-4o", "matches", 0, 0, 0, None),
        (NOV3, "gpt-4o-mini", "matches", 0, 0, 0, None),
        # Two generations of 12,000 + 1,500 tokens lost: 16,000 uncached input at
        # $2.50/M, 8,000 cached at $1.25/M and 3,000 output at $10/M = $0.08.
        (NOV4, "gpt-4o", "we_recorded_less", 24_000, 8_000, 3_000, (27_000, Decimal("0.08"), 2)),
        (NOV4, "gpt-4o-mini", "matches", 0, 0, 0, None),
        (NOV5, "gpt-4o", "matches", 0, 0, 0, None),
        (NOV5, "gpt-4o-mini", "we_recorded_more", -8_000, 0, -900, None),
    ]
    nov4 = report.lines[2]
    assert nov4.provider.requests == 5 and nov4.ours.generations == 3
    assert nov4.difference["requests"] == 2
    assert nov4.provider.cost == Decimal("0.2") and nov4.ours.cost == Decimal("0.12")
    assert nov4.provider.models == {"gpt-4o-2024-08-06"} and nov4.our_models == ["gpt-4o"]
    # Both names we recorded on the 3rd meet the provider's snapshot.
    assert report.lines[0].our_models == ["gpt-4o", "gpt-4o-2024-08-06"]
    totals = report.totals()
    assert totals["matches"] == 4 and totals["we_recorded_less"] == 1
    assert totals["we_recorded_more"] == 1
    assert totals["lost_tokens"] == 27_000 and totals["lost_cost_at_our_prices"] == Decimal("0.08")
    assert totals["estimated_lost_generations"] == 2
    # The helpdesk project's tokens are the organisation's, not this product's.
    assert report.excluded_tokens == 412_000 + 18_000 + 380_500 + 16_250
    assert totals["unattributed_provider_cost"] == Decimal("0.01")  # "web search tool calls"
    assert totals["provider_cost"] == Decimal("0.3787")  # 0.36 gpt-4o, 0.0087 mini, 0.01 other
    assert report.days_without_provider_data == [] and not report.ok
    call_command(
        "import_provider_usage", str(ANTHROPIC_USAGE), provider="anthropic", stdout=io.StringIO()
    )
    usage_only = reconcile_provider(provider="anthropic", since=NOV3, until=NOV5)
    assert usage_only.days_compared and usage_only.totals()["provider_cost"] is None


def test_anthropic_sample_with_cache_reads_and_writes_gives_exactly_the_expected_report():
    record_anthropic_usage()
    import_anthropic()
    report = reconcile_provider(provider="anthropic", since=NOV3, until=NOV5)
    assert summary(report) == [
        (NOV3, "claude-3-5-haiku", "matches", 0, 0, 0, None),
        # Input is uncached + cache reads + cache writes (5m and 1h), as our prompt_tokens.
        (NOV3, "claude-sonnet-4", "matches", 0, 0, 0, None),
        # One lost generation: 20,000 uncached at $3/M, 25,000 cache reads at
        # $0.30/M, 3,000 output at $15/M = $0.1125 (at our price of the name we record).
        (NOV4, "claude-sonnet-4", "we_recorded_less", 45_000, 25_000, 3_000, (48_000, Decimal("0.1125"), 1)),
        # The provider's bucket for the 5th is empty: we recorded more.
        (NOV5, "claude-3-5-haiku", "we_recorded_more", -4_000, 0, -800, None),
    ]  # fmt: skip
    sonnet3, sonnet4 = report.lines[1], report.lines[2]
    assert sonnet3.provider.cache_write_tokens == 10_000
    assert sonnet4.provider.service_tiers == {"standard", "batch"}
    assert sonnet4.provider.requests is None and sonnet4.difference["requests"] is None
    # Cents as documented: "9.0" + "1.5" + "3.75" + "9.0" cents.
    assert sonnet3.provider.cost == Decimal("0.2325")
    assert sonnet3.ours.cost == Decimal("0.225")  # our table prices cache writes as input
    assert sonnet4.lost.price_model == "claude-sonnet-4-20250514"
    assert report.totals()["unattributed_provider_cost"] == Decimal("0.03")  # web search


def test_snapshot_names_and_aliases_meet_under_one_model(settings):
    assert canonical_model("gpt-4o-2024-08-06") == canonical_model("gpt-4o") == "gpt-4o"
    assert canonical_model("claude-sonnet-4-20250514") == "claude-sonnet-4"
    assert canonical_model(" GPT-4o-mini-2024-07-18 ") == "gpt-4o-mini"
    assert (
        canonical_model("ft:gpt-4o-mini-2024-07-18:acme::a1")
        == "ft:gpt-4o-mini-2024-07-18:acme::a1"
    )
    settings.PROVIDER_MODEL_ALIASES = {"claude-3-5-sonnet-latest": "claude-3-5-sonnet"}
    assert canonical_model("claude-3-5-sonnet-latest") == "claude-3-5-sonnet"
    assert canonical_model("claude-3-5-sonnet-20241022") == "claude-3-5-sonnet"


def test_a_token_tolerance_turns_a_small_gap_into_a_match(settings):
    record_openai_usage()
    import_openai(project_map=str(OPENAI_MAP))
    strict = reconcile_provider(provider="openai", since=NOV5, until=NOV5)
    assert [line.status for line in strict.lines] == ["matches", "we_recorded_more"]
    # 8,000 of 8,000 input tokens is 100 %; 900 output tokens.
    loose = reconcile_provider(
        provider="openai", since=NOV5, until=NOV5, tolerance=Tolerance(tokens=8_000)
    )
    assert [line.status for line in loose.lines] == ["matches", "matches"]
    settings.PROVIDER_RECONCILE_TOKEN_TOLERANCE_PERCENT = Decimal("100")
    assert Tolerance.from_settings().tokens_within(8_000, 8_000)
    result, ok = run_cron("--provider", "openai", "--since", "2026-11-05", "--until", "2026-11-05")
    assert ok and result["status"] == "ok"
    result, ok = run_cron(
        "--provider", "openai", "--since", "2026-11-05", "--until", "2026-11-05",
        "--token-tolerance-percent", "5",
    )  # fmt: skip
    assert not ok and result["reports"][0]["totals"]["we_recorded_more"] == 1


def test_the_cost_is_judged_only_with_a_cost_tolerance():
    record_anthropic_usage()
    import_anthropic()
    # On the 3rd the tokens match, the costs do not: our table prices cache
    # writes at the input price, Anthropic at 1.25x.
    assert reconcile_provider(provider="anthropic", since=NOV3, until=NOV3).ok
    report = reconcile_provider(
        provider="anthropic", since=NOV3, until=NOV3, tolerance=Tolerance(cost=Decimal("0.001"))
    )
    sonnet = [line for line in report.lines if line.model == "claude-sonnet-4"][0]
    assert sonnet.status == "we_recorded_less" and sonnet.difference["cost"] == Decimal("0.0075")
    assert sonnet.lost.tokens == 0
    ok_at_a_cent = Tolerance(cost=Decimal("0.01"))
    assert reconcile_provider(
        provider="anthropic", since=NOV3, until=NOV3, tolerance=ok_at_a_cent
    ).ok


def test_the_cron_fails_on_a_gap_and_on_a_day_without_provider_data():
    record_openai_usage()
    import_openai(project_map=str(OPENAI_MAP))
    result, ok = run_cron("--provider", "openai", "--since", "2026-11-03", "--until", "2026-11-03")
    assert ok and result["status"] == "ok"
    result, ok = run_cron("--provider", "openai", "--since", "2026-11-02", "--until", "2026-11-03")
    assert not ok and result["reports"][0]["days_without_provider_data"] == ["2026-11-02"]
    result, ok = run_cron("--since", "2026-11-03", "--until", "2026-11-05")
    assert not ok and result["status"] == "gap"
    assert [r["provider"] for r in result["reports"]] == ["openai"]  # the one with data
    line = result["reports"][0]["lines"][2]
    assert line["lost"] == {
        "tokens": 27_000,
        "cost_at_our_prices": "0.08",
        "priced_as": "gpt-4o",
        "estimated_generations": 2,
    }
    assert line["provider"]["cost"] == "0.20" and line["ours"]["cost"] == "0.12"


def test_usage_outside_the_compared_days_and_other_providers_models_stay_out():
    record_openai_usage()
    import_openai(project_map=str(OPENAI_MAP))
    company = make_company()
    make_usage(company, model="gpt-4o", occurred_at=at(NOV5, 23, 59), **GPT4O)
    make_usage(company, model="claude-sonnet-4", occurred_at=at(NOV4, 12), **GPT4O)
    make_usage(company, model="experimental-x", occurred_at=at(NOV4, 12), **GPT4O)
    make_usage(
        company, model="gpt-4o", occurred_at=at(NOV4, 0) - timedelta(microseconds=1), **GPT4O
    )
    report = reconcile_provider(provider="openai", since=NOV4, until=NOV4)
    assert [(line.model, line.status) for line in report.lines] == [
        ("gpt-4o", "we_recorded_less"),
        ("gpt-4o-mini", "matches"),
    ]


def test_a_new_project_map_applies_without_a_re_import(tmp_path):
    record_openai_usage()
    import_openai()
    everything = reconcile_provider(provider="openai", since=NOV3, until=NOV3)
    assert everything.excluded_tokens == 0
    assert [line.status for line in everything.lines] == ["we_recorded_less", "matches"]
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"exclude": ["key_helpdesk"]}))
    call_command(
        "import_provider_usage", str(OPENAI_USAGE[1]),
        provider="openai", project_map=str(mapping), stdout=io.StringIO(),
    )  # fmt: skip
    mapped = reconcile_provider(provider="openai", since=NOV3, until=NOV3)
    assert [line.status for line in mapped.lines] == ["matches", "matches"]
    assert mapped.excluded_tokens == 412_000 + 18_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "2026-11-31"], "--since '2026-11-31' is not a date"),
        (["--since", "2026-11-05", "--until", "2026-11-03"], "is before since"),
        (["--token-tolerance", "-1"], "--token-tolerance must not be negative"),
        (["--token-tolerance-percent", "lots"], "is not a number"),
        (["--cost-tolerance", "-0.01"], "--cost-tolerance must be a number >= 0"),
    ],
)
def test_wrong_options_are_refused_with_the_reason(args, message):
    import_anthropic()
    with pytest.raises(CommandError, match=message):
        call_command("reconcile_provider", "--provider", "anthropic", *args, stdout=io.StringIO())


def test_the_cron_fails_when_nothing_was_ever_imported():
    with pytest.raises(CommandError, match="No provider usage imported yet"):
        call_command("reconcile_provider", stdout=io.StringIO())
    with pytest.raises(CommandError, match="openai: no day in .* has provider data"):
        call_command("reconcile_provider", "--provider", "openai", stdout=io.StringIO())


def test_the_text_output_names_each_gap():
    record_openai_usage()
    import_openai(project_map=str(OPENAI_MAP))
    out = io.StringIO()
    with pytest.raises(CommandError, match="openai: 2 day/model lines beyond the tolerance"):
        call_command(
            "reconcile_provider", "--since", "2026-11-03", "--until", "2026-11-05", stdout=out
        )
    text = out.getvalue()
    assert "6 day/model lines: 4 match, 1 we recorded less, 1 we recorded more" in text
    assert (
        "2026-11-04 gpt-4o: we recorded less (input +24,000, cached +8,000, output +3,000); "
        "lost ~27,000 tokens, $0.08 at our prices, ~2 generations"
    ) in text
    assert "2026-11-05 gpt-4o-mini: we recorded more (input -8,000, cached +0, output -900)" in text


def test_costs_of_a_day_without_its_usage_report_are_left_out():
    import_openai(project_map=str(OPENAI_MAP))
    only_costs = reconcile_provider(provider="openai", since=NOV3, until=NOV5)
    assert only_costs.unattributed_provider_cost == Decimal("0.01")
    ProviderBucket.objects.filter(report="usage", day=NOV3).delete()
    later = reconcile_provider(provider="openai", since=NOV3, until=NOV5)
    assert later.days_without_provider_data == [NOV3]
    assert later.unattributed_provider_cost == 0
    assert {line.day for line in later.lines} == {NOV4, NOV5}

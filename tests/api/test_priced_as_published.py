"""The oracle: generated events, in every usage shape, cost exactly what LiteLLM's table says.

The vendored subset of LiteLLM's table (tests/billing/data) is loaded with
`import_prices`; thousands of generated events (the flat fields, OpenAI Chat
Completions and Responses, Anthropic and Gemini usage objects; every service
tier a model has; prompts on both sides of each long-context threshold;
cache reads, 5-minute and 1-hour writes, reasoning) are posted through the
batch endpoint, and every stored cost must equal, to the last decimal, the
exact Decimal arithmetic on the table's *per-token* numbers with the
documented inclusion rules. Nothing here calls the code under test to
compute an expectation: the rates are read from the JSON text by this file.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from pathlib import Path

import pytest
from django.core.management import call_command
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from tests.conftest import give_credit
from usage.models import QuestionGenerationUsage

TABLE_PATH = Path(__file__).parent.parent / "billing" / "data" / "litellm_model_prices_subset.json"
TABLE = json.loads(TABLE_PATH.read_text(), parse_float=Decimal)
# Entries import_prices skips (each for a reason tests/billing/test_price_table.py checks):
# their events must be recorded unpriced, never at a guessed price.
SKIPPED = {
    "dashscope/qwen3-max",
    "bigmodel/glm-5.3",
    "deepseek-flash",
    "kyma/qwen3.7-flash",
    "1024-x-1024/50-steps/stability.stable-diffusion-xl-v1",
}
MODELS = sorted(k for k in TABLE if k != "sample_spec" and k not in SKIPPED)
SUFFIX = {"standard": "", "batch": "_batches", "flex": "_flex", "priority": "_priority"}
PREFIX = {
    "input": "input_cost_per_token",
    "cache_read": "cache_read_input_token_cost",
    "write_5m": "cache_creation_input_token_cost",
    "write_1h": "cache_creation_input_token_cost_above_1hr",
    "output": "output_cost_per_token",
    "reasoning": "output_cost_per_reasoning_token",
}
SHAPES = {
    "openai": ["flat", "openai_chat", "openai_responses"],
    "anthropic": ["flat", "anthropic"],
    "bedrock_converse": ["flat", "anthropic"],
    "gemini": ["flat", "gemini"],
}


# --- The oracle: the table's numbers, read here -------------------------------------------


def published(value) -> Decimal:
    """A per-token number as the provider means it: more than 15 significant digits is
    float noise, rounded away to 15 (docs/operations.md, import_prices)."""
    value = Decimal(value)
    if len(value.normalize().as_tuple().digits) > 15:
        value = Context(prec=15, rounding=ROUND_HALF_EVEN).plus(value)
    return value


def tiers_of(entry: dict) -> list[str]:
    return ["standard"] + [
        t
        for t, s in SUFFIX.items()
        if s and (f"input_cost_per_token{s}" in entry or f"output_cost_per_token{s}" in entry)
    ]


def threshold_of(entry: dict) -> tuple[int | None, str | None, bool]:
    """(threshold, its spelling in keys, inclusive) of the entry's long-context tier."""
    if "tiered_pricing" in entry:
        ranges = sorted(entry["tiered_pricing"], key=lambda t: t["range"][0])
        return (
            (int(ranges[0]["range"][1]), None, False) if len(ranges) == 2 else (None, None, False)
        )
    for key in entry:
        m = re.search(r"_above_(\d+)(k?)_tokens", key)
        if m and not key.startswith("cache_creation_input_token_cost_above_12hr"):
            n = int(m.group(1)) * (1000 if m.group(2) else 1)
            return n, m.group(1) + m.group(2), entry.get("litellm_provider") == "xai"
    return None, None, False


def per_token_rates(entry: dict, tier: str, prompt: int) -> dict[str, Decimal]:
    threshold, spelled, inclusive = threshold_of(entry)
    long = threshold is not None and (prompt >= threshold if inclusive else prompt > threshold)
    if "tiered_pricing" in entry:
        ranges = sorted(entry["tiered_pricing"], key=lambda t: t["range"][0])
        chosen = ranges[1] if long else ranges[0]
        found = {d: chosen.get(p) for d, p in PREFIX.items() if d != "write_1h"}
        found["write_1h"] = None
    else:
        s = SUFFIX[tier]
        found = {}
        for d, p in PREFIX.items():
            keys = [f"{p}{s}", p]
            if long:
                keys = [f"{p}_above_{spelled}_tokens{s}", f"{p}_above_{spelled}_tokens", *keys]
            found[d] = next((entry[k] for k in keys if entry.get(k) is not None), None)
    rates = {d: None if v is None else published(v) for d, v in found.items()}
    rates["cache_read"] = rates["cache_read"] if rates["cache_read"] is not None else rates["input"]
    rates["write_5m"] = rates["write_5m"] if rates["write_5m"] is not None else rates["input"]
    rates["write_1h"] = rates["write_1h"] if rates["write_1h"] is not None else rates["write_5m"]
    rates["reasoning"] = rates["reasoning"] if rates["reasoning"] is not None else rates["output"]
    return rates


def expected_cost(model: str, tier: str, t: dict[str, int]) -> Decimal:
    rates = per_token_rates(TABLE[model], tier, t["prompt"])
    uncached = t["prompt"] - t["cached"] - t["write_5m"] - t["write_1h"]
    with localcontext(Context(prec=100)):
        return (
            uncached * rates["input"]
            + t["cached"] * rates["cache_read"]
            + t["write_5m"] * rates["write_5m"]
            + t["write_1h"] * rates["write_1h"]
            + (t["completion"] - t["reasoning"]) * rates["output"]
            + t["reasoning"] * rates["reasoning"]
        )


# --- Generated events, in every shape --------------------------------------------------------

counts = st.integers(min_value=0, max_value=60_000)


@st.composite
def generation(draw) -> tuple[dict, str, str, dict]:
    """(payload, model, tier, canonical tokens) of one generation."""
    model = draw(st.sampled_from(MODELS + sorted(SKIPPED)[:2]))
    entry = TABLE[model]
    tier = draw(st.sampled_from(tiers_of(entry)))
    shape = draw(
        st.sampled_from(SHAPES.get(entry.get("litellm_provider"), ["flat", "openai_chat"]))
    )
    threshold = threshold_of(entry)[0] or 200_000
    near = st.integers(min_value=threshold - 3, max_value=threshold + 3)
    prompt = draw(st.one_of(counts, near, st.integers(0, 400_000)))
    cached = draw(st.one_of(st.just(0), st.integers(0, prompt)))
    write_5m = (
        0 if shape == "gemini" else draw(st.one_of(st.just(0), st.integers(0, prompt - cached)))
    )
    write_1h = 0
    if shape in ("anthropic", "flat"):
        write_1h = draw(st.one_of(st.just(0), st.integers(0, prompt - cached - write_5m)))
    completion = draw(counts)
    reasoning = 0 if shape == "anthropic" else draw(st.integers(0, completion))
    t = {
        "prompt": prompt,
        "cached": cached,
        "write_5m": write_5m,
        "write_1h": write_1h,
        "completion": completion,
        "reasoning": reasoning,
    }
    payload = {"model": model, "idempotency_key": str(uuid.uuid4()), "draft_job_id": "d"}
    payload |= _shape(draw, shape, t, tier)
    return payload, model, tier, t


def _shape(draw, shape: str, t: dict, tier: str) -> dict:
    top_tier = {} if tier == "standard" and draw(st.booleans()) else {"service_tier": tier}
    if shape == "flat":
        body = {
            "prompt_tokens": t["prompt"],
            "cached_prompt_tokens": t["cached"],
            "completion_tokens": t["completion"],
        }
        for name, key in (("cache_write_5m_tokens", "write_5m"), ("cache_write_1h_tokens", "write_1h"),
                          ("reasoning_tokens", "reasoning")):  # fmt: skip
            if t[key] or draw(st.booleans()):
                body[name] = t[key]
        return body | top_tier
    if shape == "openai_chat":
        usage = {
            "prompt_tokens": t["prompt"],
            "completion_tokens": t["completion"],
            "total_tokens": t["prompt"] + t["completion"],
            "prompt_tokens_details": {
                "cached_tokens": t["cached"],
                "cache_write_tokens": t["write_5m"],
                "audio_tokens": 0,
            },
            "completion_tokens_details": {
                "reasoning_tokens": t["reasoning"],
                "audio_tokens": None,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if tier == "standard" and draw(st.booleans()):
            top_tier = {"service_tier": "default"}  # as the OpenAI response says it
        return {"provider": "openai", "usage": usage} | top_tier
    if shape == "openai_responses":
        usage = {
            "input_tokens": t["prompt"],
            "input_tokens_details": {
                "cached_tokens": t["cached"],
                "cache_write_tokens": t["write_5m"],
            },
            "output_tokens": t["completion"],
            "output_tokens_details": {"reasoning_tokens": t["reasoning"]},
            "total_tokens": t["prompt"] + t["completion"],
        }
        return {"provider": "openai", "usage": usage} | top_tier
    if shape == "anthropic":
        writes = t["write_5m"] + t["write_1h"]
        usage = {
            "input_tokens": t["prompt"] - t["cached"] - writes,
            "output_tokens": t["completion"],
            "cache_read_input_tokens": t["cached"],
            "cache_creation_input_tokens": writes,
            "cache_creation": {
                "ephemeral_5m_input_tokens": t["write_5m"],
                "ephemeral_1h_input_tokens": t["write_1h"],
            },
            "server_tool_use": None,
            "inference_geo": None,
            "output_tokens_details": {"thinking_tokens": t["completion"] // 3},
        }
        if t["write_1h"] == 0 and draw(st.booleans()):
            usage["cache_creation"] = None  # older SDKs: every write is a 5-minute one
        if tier in ("standard", "priority", "batch") and draw(st.booleans()):
            usage["service_tier"] = tier
            top_tier = {}
        return {"provider": "anthropic", "usage": usage} | top_tier
    tool = draw(st.integers(0, min(50, t["prompt"] - t["cached"])))
    usage = {
        "promptTokenCount": t["prompt"] - tool,
        "cachedContentTokenCount": t["cached"],
        "toolUsePromptTokenCount": tool,
        "candidatesTokenCount": t["completion"] - t["reasoning"],
        "thoughtsTokenCount": t["reasoning"],
        "totalTokenCount": t["prompt"] + t["completion"],
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": t["prompt"] - tool}],
    }
    if draw(st.booleans()):  # google-genai's model_dump(): snake_case
        usage = {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): v for k, v in usage.items()}
        usage["prompt_tokens_details"] = [{"modality": "TEXT", "token_count": t["prompt"] - tool}]
    return {"provider": "gemini", "usage": usage} | top_tier


# --- The test ---------------------------------------------------------------------------------


@pytest.fixture
def loaded_prices(db):
    call_command(
        "import_prices", str(TABLE_PATH), "--effective-from", "2020-01-01", stdout=io.StringIO()
    )


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@given(batch=st.lists(generation(), min_size=40, max_size=40))
def test_every_generated_event_costs_exactly_what_the_table_says(
    api, company, loaded_prices, batch
):
    give_credit(company, "1000")
    check_costs(api, company, batch)


def test_every_shape_and_tier_on_both_sides_of_every_threshold(api, company, loaded_prices):
    """The boundaries, deterministically: each priced model, each of its tiers, each shape
    its provider sends, one token below, at and above its threshold (xAI's threshold
    counts the prompt that reaches it, the others only one that exceeds it)."""
    give_credit(company, "100000")
    batch = []
    for model in MODELS:
        entry = TABLE[model]
        threshold = threshold_of(entry)[0] or 200_000
        for tier in tiers_of(entry):
            for shape in SHAPES.get(entry.get("litellm_provider"), ["flat", "openai_chat"]):
                for prompt in (threshold - 1, threshold, threshold + 1):
                    batch.append(_boundary_case(model, tier, shape, prompt))
    assert len(batch) > 150
    check_costs(api, company, batch)


def _boundary_case(model: str, tier: str, shape: str, prompt: int) -> tuple:
    t = {
        "prompt": prompt,
        "cached": 1000,
        "write_5m": 0 if shape == "gemini" else 300,
        "write_1h": 200 if shape in ("anthropic", "flat") else 0,
        "completion": 5000,
        "reasoning": 0 if shape == "anthropic" else 1200,
    }
    payload = {"model": model, "idempotency_key": str(uuid.uuid4()), "draft_job_id": "d"}
    return payload | _shape(_simplest, shape, t, tier), model, tier, t


def _simplest(strategy):
    """A `draw` that takes each strategy's simplest value (for the deterministic cases)."""
    return find(strategy, lambda _: True)


def check_costs(api, company, batch) -> None:
    events = [payload | {"company": str(company.pk)} for payload, *_ in batch]
    results = api.post("/usage/batch", {"events": events}).json()["results"]
    assert all(r["outcome"] == "created" for r in results), [r for r in results if "error" in r][:3]
    rows = QuestionGenerationUsage.objects.in_bulk([r["usage"]["id"] for r in results])
    for result, (payload, model, tier, tokens) in zip(results, batch, strict=True):
        row = rows[uuid.UUID(result["usage"]["id"])]
        if model in SKIPPED:
            assert (row.cost, row.cost_source) == (None, "unpriced"), payload
            continue
        assert row.cost == expected_cost(model, tier, tokens), (payload, row.cost)
        assert row.cost_source == "priced" and row.service_tier == tier
        assert Decimal(result["usage"]["cost"]) == row.cost  # the API answers it exactly
        if payload.get("usage") is not None:
            assert row.provider_usage == payload["usage"]  # kept verbatim

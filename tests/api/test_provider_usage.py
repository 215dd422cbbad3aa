"""The providers' own usage objects, posted as their SDKs serialise them."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.prices import LongContext, set_model_price
from tests.api.conftest import assert_error, usage_payload
from usage.models import QuestionGenerationUsage

pytestmark = pytest.mark.django_db
START = timezone.now() - timedelta(days=30)


@pytest.fixture
def prices(db):
    """Round rates so each expected cost reads at a glance (USD per million)."""
    set_model_price(
        model="m", input_per_million="1", cached_input_per_million="0.1",
        cache_write_5m_per_million="1.25", cache_write_1h_per_million="2",
        output_per_million="10", reasoning_per_million="20", effective_from=START,
        long_context=LongContext(threshold=200_000, input_per_million="2",
                                 output_per_million="15"),
    )  # fmt: skip
    set_model_price(model="m", service_tier="batch", input_per_million="0.5",
                    output_per_million="5", effective_from=START)  # fmt: skip


def native(company, provider: str, usage: dict, **extra) -> dict:
    body = usage_payload(company, model="m", prompt_tokens=None, completion_tokens=None, **extra)
    return body | {"provider": provider, "usage": usage}


def recorded(api, body) -> QuestionGenerationUsage:
    response = api.post("/usage", body)
    assert response.status_code == 201, response.content
    return QuestionGenerationUsage.objects.get(pk=response.json()["id"])


def test_an_openai_chat_completions_usage_object_bills_cache_reads_and_reasoning(
    api, company, prices
):
    usage = {
        "prompt_tokens": 10_000, "completion_tokens": 2_000, "total_tokens": 12_000,
        "prompt_tokens_details": {"cached_tokens": 4_000, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 500, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }  # fmt: skip
    row = recorded(api, native(company, "openai", usage, service_tier="default"))
    # 6,000 x 1 + 4,000 x 0.1 + 1,500 x 10 + 500 x 20, per million
    assert row.cost == Decimal("0.0314")
    assert (row.prompt_tokens, row.cached_prompt_tokens, row.reasoning_tokens) == (
        10_000,
        4_000,
        500,
    )
    assert row.service_tier == "standard" and row.provider == "openai"
    assert row.provider_usage == usage


def test_an_openai_responses_usage_object(api, company, prices):
    usage = {
        "input_tokens": 10_000, "input_tokens_details": {"cached_tokens": 4_000, "cache_write_tokens": 0},
        "output_tokens": 2_000, "output_tokens_details": {"reasoning_tokens": 500},
        "total_tokens": 12_000,
    }  # fmt: skip
    assert recorded(api, native(company, "openai", usage)).cost == Decimal("0.0314")


def test_anthropic_cache_reads_and_writes_are_beside_input_tokens(api, company, prices):
    usage = {
        "input_tokens": 1_000, "output_tokens": 2_000,
        "cache_read_input_tokens": 50_000, "cache_creation_input_tokens": 3_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1_000, "ephemeral_1h_input_tokens": 2_000},
        "service_tier": "standard", "server_tool_use": None, "inference_geo": None,
        "output_tokens_details": {"thinking_tokens": 300},
    }  # fmt: skip
    row = recorded(api, native(company, "anthropic", usage))
    assert row.prompt_tokens == 54_000  # never refused although cache reads exceed input_tokens
    assert (row.cache_write_5m_tokens, row.cache_write_1h_tokens) == (1_000, 2_000)
    # 1,000 x 1 + 50,000 x 0.1 + 1,000 x 1.25 + 2,000 x 2 + 2,000 x 10 (thinking is output)
    assert row.cost == Decimal("0.03125")


def test_anthropic_writes_without_a_breakdown_are_five_minute_writes(api, company, prices):
    usage = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 100_000,
             "cache_read_input_tokens": None, "cache_creation": None}  # fmt: skip
    row = recorded(api, native(company, "anthropic", usage))
    assert row.cache_write_5m_tokens == 100_000 and row.cost == Decimal("0.125")


def test_anthropic_service_tier_is_read_from_its_object(api, company, prices):
    usage = {"input_tokens": 1_000_000, "output_tokens": 0, "service_tier": "batch"}
    row = recorded(api, native(company, "anthropic", usage))
    assert (row.service_tier, row.cost) == ("batch", Decimal("0.5"))
    error = assert_error(
        api.post("/usage", native(company, "anthropic", usage, idempotency_key="x", service_tier="priority")),
        422, "validation_error",
    )  # fmt: skip
    assert error["fields"] == {"service_tier": "contradicts the usage object's batch"}


@pytest.mark.parametrize("snake", [False, True])
def test_gemini_thoughts_are_beside_candidates_and_cached_inside_the_prompt(
    api, company, prices, snake
):
    usage = {"promptTokenCount": 10_000, "cachedContentTokenCount": 4_000,
             "candidatesTokenCount": 1_500, "thoughtsTokenCount": 500, "totalTokenCount": 12_000,
             "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10_000}],
             "trafficType": "ON_DEMAND"}  # fmt: skip
    if snake:  # google-genai's model_dump()
        usage = {"prompt_token_count": 10_000, "cached_content_token_count": 4_000,
                 "candidates_token_count": 1_500, "thoughts_token_count": 500,
                 "total_token_count": 12_000}  # fmt: skip
    row = recorded(api, native(company, "gemini", usage))
    assert (row.prompt_tokens, row.completion_tokens, row.reasoning_tokens) == (10_000, 2_000, 500)
    assert row.cost == Decimal("0.0314")


def test_a_long_prompt_pays_the_long_context_rates_for_the_whole_request(api, company, prices):
    def cost(prompt: int, key: str) -> Decimal:
        usage = {"input_tokens": prompt, "output_tokens": 1_000_000}
        body = native(company, "anthropic", usage, idempotency_key=key)
        return recorded(api, body).cost

    assert cost(200_000, "at") == Decimal("10.2")  # 200,000 x 1 + 1M x 10: not above
    assert cost(200_001, "above") == Decimal("15.400002")  # 200,001 x 2 + 1M x 15


@pytest.mark.parametrize(
    ("provider", "usage", "field", "reason"),
    [
        ("openai", {"prompt_tokens": 10, "completion_tokens": 1, "surprise": 1},
         "usage.surprise", "is not a field of an OpenAI Chat Completions usage object"),
        ("openai", {"prompt_tokens": 10, "completion_tokens": 1,
                    "prompt_tokens_details": {"cached_tokens": 11}},
         "usage.prompt_tokens_details.cached_tokens", "must not exceed usage.prompt_tokens"),
        ("openai", {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 12},
         "usage.total_tokens", "must equal prompt_tokens + completion_tokens (11)"),
        ("openai", {"prompt_tokens": 10, "input_tokens": 10, "completion_tokens": 1}, "usage",
         "mixes the Chat Completions fields (prompt_tokens, ...) with the Responses fields (input_tokens, ...)"),
        ("openai", {"prompt_tokens": 1.5, "completion_tokens": 1}, "usage.prompt_tokens",
         "must be a whole number"),
        ("openai", {"completion_tokens": 1}, "usage.prompt_tokens", "is required"),
        ("anthropic", {"input_tokens": 1, "output_tokens": -1}, "usage.output_tokens",
         "must not be negative"),
        ("anthropic", {"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 5,
                       "cache_creation": {"ephemeral_5m_input_tokens": 1, "ephemeral_1h_input_tokens": 1}},
         "usage.cache_creation_input_tokens",
         "must equal cache_creation.ephemeral_5m_input_tokens + ephemeral_1h_input_tokens (2)"),
        ("anthropic", {"input_tokens": 1, "output_tokens": 1, "service_tier": "cheap"},
         "usage.service_tier", "must be one of batch, priority, standard"),
        ("gemini", {"promptTokenCount": 5, "cachedContentTokenCount": 6}, "usage.cachedContentTokenCount",
         "must not exceed usage.promptTokenCount"),
        ("gemini", {"promptTokenCount": 5, "prompt_token_count": 5}, "usage.prompt_token_count",
         "must not be given beside usage.promptTokenCount"),
        ("mistral", {"prompt_tokens": 1}, "provider", "must be one of openai, anthropic, gemini"),
    ],
)  # fmt: skip
def test_a_usage_object_that_is_wrong_is_a_422_naming_the_field(
    api, company, prices, provider, usage, field, reason
):
    error = assert_error(
        api.post("/usage", native(company, provider, usage)), 422, "validation_error"
    )
    assert error["fields"][field] == reason
    assert not QuestionGenerationUsage.objects.exists()


def test_dimensions_nobody_prices_are_refused_unless_the_cost_is_reported(api, company, prices):
    usage = {"prompt_tokens": 10, "completion_tokens": 1,
             "prompt_tokens_details": {"audio_tokens": 5}}  # fmt: skip
    error = assert_error(
        api.post("/usage", native(company, "openai", usage)), 422, "validation_error"
    )
    assert "usage.prompt_tokens_details.audio_tokens" in error["fields"]
    row = recorded(api, native(company, "openai", usage, cost="0.5"))
    assert (row.cost, row.cost_source) == (Decimal("0.5"), "reported")


def test_flat_fields_and_a_usage_object_together_are_refused(api, company, prices):
    body = native(company, "openai", {"prompt_tokens": 1, "completion_tokens": 1}) | {
        "prompt_tokens": 1
    }
    error = assert_error(api.post("/usage", body), 422, "validation_error")
    assert error["fields"] == {"prompt_tokens": "must not be given with usage"}
    body = usage_payload(company, model="m") | {"usage": {"prompt_tokens": 1}}
    error = assert_error(api.post("/usage", body), 422, "validation_error")
    assert "provider" in error["fields"]


def test_an_unknown_top_level_field_is_a_422_naming_it(api, company, prices):
    body = usage_payload(company, model="m") | {"cached_tokens": 5}
    error = assert_error(api.post("/usage", body), 422, "validation_error")
    assert error["fields"] == {"cached_tokens": "is not a field of a usage event"}
    batch = api.post("/usage/batch", {"events": [body]}).json()["results"][0]
    assert batch["error"]["fields"] == {"cached_tokens": "is not a field of a usage event"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cached_prompt_tokens": 1001}, "cached_prompt_tokens"),
        ({"cached_prompt_tokens": 600, "cache_write_5m_tokens": 401}, "cache_write_5m_tokens"),
        ({"cache_write_1h_tokens": 1001}, "cache_write_1h_tokens"),
        ({"reasoning_tokens": 501}, "reasoning_tokens"),
        ({"service_tier": "turbo"}, "service_tier"),
    ],
)
def test_a_flat_event_whose_numbers_contradict_themselves_is_still_a_422(
    api, company, prices, fields, field
):
    body = usage_payload(company, model="m", prompt_tokens=1000, completion_tokens=500, **fields)
    error = assert_error(api.post("/usage", body), 422, "validation_error")
    assert field in error["fields"]


def test_the_flat_fields_keep_working_exactly_as_before(api, company, prices):
    body = usage_payload(company, model="m", prompt_tokens=1000, cached_prompt_tokens=400,
                         completion_tokens=500)  # fmt: skip
    first = api.post("/usage", body)
    assert first.status_code == 201
    assert first.json()["cost"] == "0.00564"  # 600 x 1 + 400 x 0.1 + 500 x 10
    assert api.post("/usage", body).json() == first.json()  # a replay answers the same


def test_a_different_usage_object_under_the_same_key_is_a_conflict(api, company, prices):
    usage = {"input_tokens": 10, "output_tokens": 1}
    assert api.post("/usage", native(company, "anthropic", usage)).status_code == 201
    assert api.post("/usage", native(company, "anthropic", usage)).status_code == 200
    other = native(company, "anthropic", {"input_tokens": 10, "output_tokens": 2})
    assert_error(api.post("/usage", other), 409, "idempotency_conflict")


def test_the_importer_takes_the_same_shapes(company, prices, tmp_path):
    import json as _json

    from usage.importer import ImportOptions, import_usage

    path = tmp_path / "usage.jsonl"
    rows = [
        {"id": 1, "company_id": str(company.pk), "model": "m", "draft_job_id": "d",
         "created_at": "2026-11-20T10:00:00Z", "provider": "anthropic",
         "usage": {"input_tokens": 1_000, "output_tokens": 0, "cache_read_input_tokens": 10_000}},
        {"id": 2, "company_id": str(company.pk), "model": "m", "draft_job_id": "d",
         "created_at": "2026-11-20T10:00:00Z", "provider": "gemini",
         "usage": _json.dumps({"promptTokenCount": 5, "cachedContentTokenCount": 6})},
        {"id": 3, "company_id": str(company.pk), "model": "m", "draft_job_id": "d",
         "created_at": "2026-11-20T10:00:00Z", "prompt_tokens": 5, "provider": "openai",
         "usage": {"prompt_tokens": 5, "completion_tokens": 0}},
    ]  # fmt: skip
    path.write_text("".join(_json.dumps(r) + "\n" for r in rows))
    summary = import_usage(path, ImportOptions())
    assert (summary.imported, summary.rejected) == (1, 2)
    assert QuestionGenerationUsage.objects.get().cost == Decimal(
        "0.002"
    )  # 1,000 x 1 + 10,000 x 0.1
    rejects = (tmp_path / "usage.jsonl.rejects.jsonl").read_text()
    assert "usage.cachedContentTokenCount must not exceed usage.promptTokenCount" in rejects
    assert "prompt_tokens must not be given with usage" in rejects

"""Jobs and the question generations recorded against them.

A generation may happen while its job is still a draft in the main product
(only a temporary id exists). Such usage is stored with `job = NULL` and the
draft id in `draft_job_id`; when the job is saved it is linked (`job` set,
`reconciled_at` set, `draft_job_id` kept as the audit trail).
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import F, Q

from billing.models import AmountField, APIKey, Company, ExactAmountField, ModelPrice, ServiceTier
from core.ids import uuid7
from usage.provider_pages import RawJSONEncoder

INT32_MAX = 2_147_483_647

# What the billing page's raw-table reports read, carried in the covering index.
REPORT_COLUMNS = [
    "job_id",
    "draft_job_id",
    "model",
    "status",
    "question_count",
    "prompt_tokens",
    "cached_prompt_tokens",
    "completion_tokens",
    "cost",
]


class Job(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="jobs")
    title = models.CharField(max_length=300)
    draft_id = models.CharField(
        max_length=255,
        null=True,
        blank=True,
        help_text="The temporary id the job had in the main product before it was saved.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["company", "draft_id"],
                condition=Q(draft_id__isnull=False),
                name="job_unique_draft_id_per_company",
            ),
        ]

    def __str__(self) -> str:
        return self.title


class UsageStatus(models.TextChoices):
    LINKED = "linked", "Linked to a saved job"
    DRAFT = "draft", "Pending draft"
    ABANDONED = "abandoned", "Abandoned draft"


class CostSource(models.TextChoices):
    REPORTED = "reported", "Reported by the caller"
    PRICED = "priced", "Priced from the model price table"
    UNPRICED = "unpriced", "Unpriced (no price covers it yet)"


class QuestionGenerationUsage(models.Model):
    """One LLM generation of interview or exam questions. Recorded exactly once."""

    # Time-ordered (billing.ids): inserts append to the key's index instead of
    # landing on a random page of it.
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # No index of its own: usage_company_occurred and usage_unique_idempotency_key
    # both lead with company_id (every index is written by each non-HOT update).
    company = models.ForeignKey(
        Company, on_delete=models.PROTECT, related_name="usage", db_index=False
    )
    job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.PROTECT, related_name="usage"
    )
    draft_job_id = models.CharField(max_length=255, null=True, blank=True)
    status = models.CharField(max_length=16, choices=UsageStatus.choices, default=UsageStatus.DRAFT)
    model = models.CharField(max_length=100)
    prompt_tokens = models.IntegerField()
    cached_prompt_tokens = models.IntegerField(default=0)
    completion_tokens = models.IntegerField()
    # The rest of the token breakdown (docs/api.md): cache writes are part of
    # prompt_tokens (as cache reads are), reasoning is part of completion_tokens.
    cache_write_5m_tokens = models.IntegerField(default=0, db_default=0)
    cache_write_1h_tokens = models.IntegerField(default=0, db_default=0)
    reasoning_tokens = models.IntegerField(default=0, db_default=0)
    service_tier = models.CharField(
        max_length=16,
        choices=ServiceTier.choices,
        default=ServiceTier.STANDARD,
        db_default=ServiceTier.STANDARD,
    )
    provider = models.CharField(
        max_length=16,
        blank=True,
        default="",
        db_default="",
        help_text="openai, anthropic or gemini when the provider's own usage object was sent.",
    )
    provider_usage = models.JSONField(
        null=True, blank=True, help_text="The provider's usage object exactly as it was sent."
    )
    question_count = models.IntegerField(default=0)
    cost = ExactAmountField(null=True, blank=True, help_text="NULL while unpriced.")
    cost_source = models.CharField(max_length=16, choices=CostSource.choices)
    price = models.ForeignKey(
        ModelPrice,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="usage",
        help_text="The price period that priced this row.",
        # No index: nothing reads usage by price; only deleting a price
        # (PROTECT) looks it up, a rare staff action that may scan the table.
        db_index=False,
    )
    idempotency_key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(
        max_length=64, blank=True, help_text="Hash of the recorded payload, to detect conflicts."
    )
    occurred_at = models.DateTimeField()
    occurred_on = models.DateField(
        help_text="occurred_at's date in the company's time zone (for daily reports)."
    )
    recorded_at = models.DateTimeField(auto_now_add=True)
    reconciled_at = models.DateTimeField(null=True, blank=True)
    abandoned_at = models.DateTimeField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    processing_time_ms = models.IntegerField(null=True, blank=True)
    api_key = models.ForeignKey(
        APIKey,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The key that sent it (empty for imported rows).",
        # No index: a key's spend is read from KeyDailySpend, and the usage tab's
        # key filter within a company's days. Only deleting a key (PROTECT; keys
        # are revoked, not deleted) looks usage up by key, and may scan the table.
        db_index=False,
    )
    prepaid = models.BooleanField(
        default=False,
        db_default=False,  # rows written by raw SQL or older code stay valid
        help_text=(
            "Imported history already paid for outside this system (import_usage "
            "--no-debit): recorded and reported, never debited from credits."
        ),
    )

    class Meta:
        db_table = "question_generation_usage"
        verbose_name = "question generation usage"
        verbose_name_plural = "question generation usage"
        ordering = ["-occurred_at"]
        indexes = [
            # Covering: the billing page's job and generation reports over a
            # company's local day range read only this index (no heap visits
            # once the visibility map is set).
            models.Index(
                fields=["company", "occurred_at"],
                name="usage_company_occurred",
                include=REPORT_COLUMNS,
            ),
            # A job's generations (the drill-down), in time order.
            models.Index(
                fields=["company", "job", "occurred_at"],
                name="usage_company_job_occurred",
                condition=Q(job__isnull=False),
            ),
            models.Index(fields=["-occurred_at"], name="usage_occurred_desc"),
            models.Index(
                fields=["company", "draft_job_id"],
                condition=Q(job__isnull=True),
                name="usage_pending_drafts",
            ),
            models.Index(
                fields=["model", "occurred_at"],
                condition=Q(cost_source="unpriced"),
                name="usage_unpriced",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["company", "idempotency_key"], name="usage_unique_idempotency_key"
            ),
            models.CheckConstraint(
                condition=Q(prompt_tokens__gte=0)
                & Q(cached_prompt_tokens__gte=0)
                & Q(completion_tokens__gte=0)
                & Q(question_count__gte=0),
                name="usage_counts_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(cached_prompt_tokens__lte=F("prompt_tokens")),
                name="usage_cached_within_prompt",
            ),
            models.CheckConstraint(
                condition=Q(job__isnull=False) | Q(draft_job_id__isnull=False),
                name="usage_job_or_draft",
            ),
            models.CheckConstraint(
                condition=Q(status="linked", job__isnull=False)
                | Q(status__in=["draft", "abandoned"], job__isnull=True),
                name="usage_status_matches_job",
            ),
            models.CheckConstraint(
                condition=Q(cost_source="unpriced", cost__isnull=True)
                | Q(cost_source__in=["reported", "priced"], cost__isnull=False, cost__gte=0),
                name="usage_cost_matches_source",
            ),
            models.CheckConstraint(
                condition=Q(cost_source="priced", price__isnull=False) | ~Q(cost_source="priced"),
                name="usage_priced_has_price",
            ),
            models.CheckConstraint(
                condition=Q(processing_time_ms__isnull=True) | Q(processing_time_ms__gte=0),
                name="usage_processing_time_non_negative",
            ),
            # Added NOT VALID and then validated (usage migration
            # token_breakdown), so adding them never locks the table for a scan.
            models.CheckConstraint(
                condition=Q(cache_write_5m_tokens__gte=0)
                & Q(cache_write_1h_tokens__gte=0)
                & Q(reasoning_tokens__gte=0)
                & Q(
                    prompt_tokens__gte=F("cached_prompt_tokens")
                    + F("cache_write_5m_tokens")
                    + F("cache_write_1h_tokens")
                )
                & Q(completion_tokens__gte=F("reasoning_tokens")),
                name="usage_breakdown_within_totals",
            ),
            models.CheckConstraint(
                condition=Q(service_tier__in=ServiceTier.values),
                name="usage_known_service_tier",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} x{self.question_count} ({self.company_id})"


class KeyDailySpend(models.Model):
    """Exact spend per API key, company and local day: what the key limits read.

    Maintained by usage.rollup (`KEY_FROM_INSERTED`, `apply_key_deltas`) in the
    same transaction as every insert of usage sent with a key and every change
    of such a row's cost or day, so it always equals the raw rows (verify_ledger
    checks it). An admission reads a month of it, under the company's balance
    row lock, in a few rows whatever the key's volume: summing the raw rows of
    a key that sent 500,000 generations took 82 ms there (docs/performance.md).
    """

    api_key = models.ForeignKey(APIKey, on_delete=models.CASCADE, related_name="+", db_index=False)
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+", db_index=False)
    day = models.DateField()
    generations = models.BigIntegerField(default=0)
    cost = ExactAmountField(default=0)
    unpriced = models.BigIntegerField(default=0, help_text="Generations without a cost yet.")

    class Meta:
        db_table = "usage_key_daily_spend"
        constraints = [
            # A platform key's usage splits by company (each its own days).
            models.UniqueConstraint(
                fields=["api_key", "company", "day"], name="key_spend_unique_bucket"
            ),
        ]
        indexes = [models.Index(fields=["company", "day"], name="key_spend_company_day")]

    def __str__(self) -> str:
        return f"key {self.api_key_id} on {self.day}: {self.cost}"


class UsageDailyRollup(models.Model):
    """Exact daily totals per company, local day, model and status.

    Maintained by usage.rollup in the same transaction as every change to the
    raw rows, so it always equals them (`manage.py verify_ledger` and the tests
    check it). The billing page reads it instead of scanning millions of rows.
    """

    # No index of its own: rollup_unique_bucket leads with company_id.
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="+", db_index=False)
    day = models.DateField()
    model = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=UsageStatus.choices)
    generations = models.BigIntegerField(default=0)
    questions = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    cached_prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost = ExactAmountField(default=0)
    unpriced = models.BigIntegerField(default=0, help_text="Generations without a cost yet.")

    class Meta:
        db_table = "usage_daily_rollup"
        constraints = [
            models.UniqueConstraint(
                fields=["company", "day", "model", "status"], name="rollup_unique_bucket"
            ),
        ]
        indexes = [
            # Pending-draft cost per company on the staff overview, without
            # walking every bucket of the company's history. Deliberately not
            # covering: an index that holds a summed column makes every bucket
            # update a non-HOT one (a new entry in every index of the table).
            # With only company_id and status, which never change, and free
            # room on each page (fillfactor 80, migration 0006), every usage
            # insert and every reconcile move updates its bucket in place.
            models.Index(
                fields=["company"],
                name="rollup_pending_drafts",
                condition=Q(status="draft"),
            ),
            # The staff overview's platform totals: every company's last two
            # months of buckets (its spend this month and last, the 30-day
            # trend). `day` never changes, so bucket updates stay HOT; only a
            # new bucket writes an entry.
            models.Index(fields=["day"], name="rollup_day"),
        ]

    def __str__(self) -> str:
        return f"{self.company_id} {self.day} {self.model} {self.status}"


class RejectedEvent(models.Model):
    """An event that could not be recorded (e.g. unknown company), kept for replay."""

    class State(models.TextChoices):
        OPEN = "open", "Open"
        REPLAYED = "replayed", "Replayed"
        DISCARDED = "discarded", "Discarded"

    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    source = models.CharField(max_length=32, default="api", help_text="api, batch, import")
    company_ref = models.CharField(max_length=255, blank=True, db_index=True)
    idempotency_key = models.CharField(max_length=255, blank=True)
    error_code = models.CharField(max_length=64)
    reason = models.TextField()
    payload = models.JSONField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    resolved_at = models.DateTimeField(null=True, blank=True)
    usage = models.ForeignKey(
        QuestionGenerationUsage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.error_code}: {self.company_ref or '?'} at {self.received_at:%Y-%m-%d %H:%M}"


class Provider(models.TextChoices):
    OPENAI = "openai", "OpenAI"
    ANTHROPIC = "anthropic", "Anthropic"


class ProviderBucket(models.Model):
    """One UTC day of one provider report (usage or cost), as the provider sent it.

    The unit of idempotency (usage.provider_usage): importing the same day
    again with the same figures changes nothing; with other figures (the
    provider corrected or completed the day) the new bucket becomes current,
    `replaces` the old one, and the old one is kept, marked superseded.
    """

    class Report(models.TextChoices):
        USAGE = "usage", "Usage (tokens)"
        COST = "cost", "Cost"

    provider = models.CharField(max_length=16, choices=Provider.choices)
    report = models.CharField(max_length=8, choices=Report.choices)
    day = models.DateField(help_text="The UTC day the bucket covers.")
    content_hash = models.CharField(
        max_length=64, help_text="SHA-256 of the bucket's figures, to tell a correction."
    )
    result_count = models.IntegerField(default=0)
    source = models.CharField(
        max_length=500, blank=True, help_text="File and page it was read from."
    )
    imported_at = models.DateTimeField(auto_now_add=True)
    superseded_at = models.DateTimeField(null=True, blank=True)
    replaces = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="replaced_by",
        help_text="The earlier bucket of this day that this one corrected.",
    )

    class Meta:
        ordering = ["-day", "provider", "report"]
        constraints = [
            # At most one current bucket per provider, report and day (the
            # import's advisory lock serialises writers; this makes it a fact).
            models.UniqueConstraint(
                fields=["provider", "report", "day"],
                condition=Q(superseded_at__isnull=True),
                name="provider_bucket_one_current_per_day",
            ),
        ]

    def __str__(self) -> str:
        state = "superseded" if self.superseded_at else "current"
        return f"{self.get_provider_display()} {self.report} {self.day} ({state})"


class ProviderUsageLine(models.Model):
    """One result of a usage bucket: tokens of one model (and tier, project, key) that day.

    Token dimensions are the provider's, brought to one meaning:
    `input_tokens` counts every input token (cache reads and cache writes
    included, as our `prompt_tokens` does); `cached_input_tokens` the cache reads.
    """

    bucket = models.ForeignKey(ProviderBucket, on_delete=models.CASCADE, related_name="usage_lines")
    model = models.CharField(max_length=200, help_text="As the provider reports it.")
    canonical_model = models.CharField(
        max_length=200, help_text="The name compared with ours (usage.provider_usage)."
    )
    service_tier = models.CharField(max_length=32, blank=True)
    context_window = models.CharField(max_length=32, blank=True)
    project_id = models.CharField(
        max_length=200, blank=True, help_text="OpenAI project or Anthropic workspace; empty: none."
    )
    api_key_id = models.CharField(max_length=200, blank=True)
    batch = models.BooleanField(null=True, blank=True)
    input_tokens = models.BigIntegerField(default=0)
    cached_input_tokens = models.BigIntegerField(default=0)
    cache_write_5m_tokens = models.BigIntegerField(default=0)
    cache_write_1h_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    input_audio_tokens = models.BigIntegerField(default=0)
    output_audio_tokens = models.BigIntegerField(default=0)
    requests = models.BigIntegerField(null=True, blank=True, help_text="OpenAI only.")
    web_search_requests = models.BigIntegerField(default=0)
    raw = models.JSONField(encoder=RawJSONEncoder, help_text="The result as exported.")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(input_tokens__gte=0)
                & Q(cached_input_tokens__gte=0)
                & Q(cache_write_5m_tokens__gte=0)
                & Q(cache_write_1h_tokens__gte=0)
                & Q(output_tokens__gte=0),
                name="provider_usage_tokens_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.input_tokens}+{self.output_tokens}"


class ProviderCostLine(models.Model):
    """One result of a cost bucket: an amount in USD, exact, for one line item that day."""

    bucket = models.ForeignKey(ProviderBucket, on_delete=models.CASCADE, related_name="cost_lines")
    model = models.CharField(
        max_length=200,
        blank=True,
        help_text="The model the line names, if it is one: a name the day's usage report "
        "also names (OpenAI line items read '<model>, <what>').",
    )
    canonical_model = models.CharField(max_length=200, blank=True)
    line_item = models.CharField(
        max_length=300, blank=True, help_text="OpenAI line_item or Anthropic description."
    )
    cost_type = models.CharField(max_length=32, blank=True)
    token_type = models.CharField(max_length=64, blank=True)
    service_tier = models.CharField(max_length=32, blank=True)
    context_window = models.CharField(max_length=32, blank=True)
    project_id = models.CharField(max_length=200, blank=True)
    amount = AmountField(help_text="USD (Anthropic's cents converted exactly).")
    currency = models.CharField(max_length=8, default="USD")
    raw = models.JSONField(encoder=RawJSONEncoder, help_text="The result as exported.")

    def __str__(self) -> str:
        return f"{self.line_item or self.model} {self.amount}"


class ProviderProjectMap(models.Model):
    """Which of a provider organisation's projects, workspaces and API keys are this product's.

    Set by `import_provider_usage --project-map FILE`; applied when comparing
    (usage.provider_reconciliation), so changing it needs no re-import.
    """

    class Unlisted(models.TextChoices):
        OURS = "ours", "Ours"
        EXCLUDE = "exclude", "Excluded"

    provider = models.CharField(max_length=16, choices=Provider.choices, unique=True)
    ours = models.JSONField(default=list, help_text="Ids whose usage is this product's.")
    exclude = models.JSONField(default=list, help_text="Ids of other products: never compared.")
    unlisted = models.CharField(max_length=8, choices=Unlisted.choices, default=Unlisted.OURS)
    source = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.get_provider_display()} project map"

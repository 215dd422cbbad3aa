"""Tenants, who may see them, what models cost, and the money they hold.

`billing` never imports from `usage`: usage depends on billing, not the other
way round. Ledger entries refer to a usage row by its UUID (`usage_id`) only.
"""

from __future__ import annotations

import uuid
import zoneinfo
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q

from billing.money import (
    AMOUNT_DECIMAL_PLACES,
    AMOUNT_MAX_DIGITS,
    PRICE_DECIMAL_PLACES,
    PRICE_MAX_DIGITS,
)


def AmountField(**kwargs):  # noqa: N802 - reads like a field class
    """NUMERIC(28, 12): see billing.money for why twelve places."""
    return models.DecimalField(
        max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES, **kwargs
    )


class ExactAmountField(models.DecimalField):
    """An unconstrained NUMERIC: exact at whatever scale the value has.

    For every column that holds a priced cost or sums costs. A priced cost has
    up to 18 places (billing.money); NUMERIC(28, 12) would round it on insert.
    Dropping the typmod is a catalogue change only (no table rewrite, no index
    rebuild): docs/ledger.md has the measurement.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.pop("max_digits", None)
        kwargs.pop("decimal_places", None)
        super().__init__(*args, **kwargs)

    def check(self, **kwargs):
        return models.Field.check(self, **kwargs)

    def db_type(self, connection) -> str:
        return "numeric"


def PriceField(**kwargs):  # noqa: N802
    """NUMERIC(24, 12) per million tokens."""
    return models.DecimalField(
        max_digits=PRICE_MAX_DIGITS, decimal_places=PRICE_DECIMAL_PLACES, **kwargs
    )


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"{value!r} is not a known IANA time zone") from exc


class Company(models.Model):
    """The tenant: a customer company that pays for its generations."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=200)
    external_id = models.CharField(
        max_length=200,
        unique=True,
        null=True,
        blank=True,
        help_text="The id the main product or its auth provider uses (e.g. an organization id).",
    )
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    currency = models.CharField(max_length=3, default="USD")
    is_active = models.BooleanField(default=True)
    low_balance_threshold = AmountField(
        default=Decimal("10"), help_text="Alert and flag when the balance falls below this."
    )
    overdraft_allowance = AmountField(
        default=Decimal("0"),
        help_text="How far below zero the balance may go before new generations are refused.",
    )
    monthly_spend_limit = AmountField(
        null=True, blank=True, help_text="Optional cap on month-to-date spend."
    )
    billing_emails = models.TextField(
        blank=True, help_text="Billing contacts for alerts, one address per line or comma."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "companies"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(overdraft_allowance__gte=0), name="company_overdraft_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(monthly_spend_limit__isnull=True) | Q(monthly_spend_limit__gte=0),
                name="company_spend_limit_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def billing_email_list(self) -> list[str]:
        raw = self.billing_emails.replace(",", "\n").splitlines()
        return [address.strip() for address in raw if address.strip()]


class Membership(models.Model):
    """A Django user who belongs to one company (sees that company's billing only)."""

    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        VIEWER = "viewer", "Viewer"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ADMIN)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "company"], name="membership_unique_user_company"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.company} ({self.role})"


class ServiceTier(models.TextChoices):
    """The provider's service tier a generation ran on; each has its own prices."""

    STANDARD = "standard", "Standard"
    BATCH = "batch", "Batch"
    FLEX = "flex", "Flex"
    PRIORITY = "priority", "Priority"


# The rates of a price period, by dimension, in the order a charge lists them.
RATE_FIELDS = (
    "input_per_million",
    "cached_input_per_million",
    "cache_write_5m_per_million",
    "cache_write_1h_per_million",
    "output_per_million",
    "reasoning_per_million",
)
LONG_RATE_FIELDS = tuple(f"long_{name}" for name in RATE_FIELDS)


class ModelPrice(models.Model):
    """What one model costs on one service tier per million tokens during
    [effective_from, effective_to).

    Dimensions: uncached input, cache read (`cached_input`), cache writes of 5
    minutes and of 1 hour, output, and reasoning. A missing 5-minute write rate
    is the input rate, a missing 1-hour one the 5-minute one, a missing
    reasoning rate the output rate (`set_model_price` stores them resolved;
    NULL only appears in rows written by code that does not know the column).
    With `long_context_threshold`, a request whose prompt has more tokens than
    that is charged the `long_*` rates for the whole request.

    Periods of one (model, service tier) never overlap (an exclusion
    constraint), and a period's rates never change once written (a trigger):
    the usage it priced is explained by these numbers for ever. Both live in
    billing migration price_dimensions_and_tiers. A wrong period is corrected
    by a new row over the same dates (`corrects` it); the old one is then
    `superseded_at`, out of the constraint and of every look-up, and
    `reprice_usage --reprice-priced` moves its usage to the correction.
    """

    model = models.CharField(max_length=100, db_index=True)
    service_tier = models.CharField(
        max_length=16,
        choices=ServiceTier.choices,
        default=ServiceTier.STANDARD,
        db_default=ServiceTier.STANDARD,
    )
    input_per_million = PriceField(help_text="Uncached input tokens.")
    cached_input_per_million = PriceField(help_text="Cache reads.")
    cache_write_5m_per_million = PriceField(
        null=True, blank=True, help_text="5-minute cache writes; empty: the input rate."
    )
    cache_write_1h_per_million = PriceField(
        null=True, blank=True, help_text="1-hour cache writes; empty: the 5-minute rate."
    )
    output_per_million = PriceField(help_text="Output tokens other than reasoning.")
    reasoning_per_million = PriceField(
        null=True, blank=True, help_text="Reasoning (thinking) tokens; empty: the output rate."
    )
    long_context_threshold = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests whose prompt has more tokens than this pay the long-context "
        "rates for the whole request; empty: no long-context tier.",
    )
    long_input_per_million = PriceField(null=True, blank=True)
    long_cached_input_per_million = PriceField(null=True, blank=True)
    long_cache_write_5m_per_million = PriceField(null=True, blank=True)
    long_cache_write_1h_per_million = PriceField(null=True, blank=True)
    long_output_per_million = PriceField(null=True, blank=True)
    long_reasoning_per_million = PriceField(null=True, blank=True)
    currency = models.CharField(max_length=3, default="USD")
    effective_from = models.DateTimeField()
    effective_to = models.DateTimeField(null=True, blank=True)
    source = models.CharField(
        max_length=200,
        blank=True,
        default="",
        db_default="",
        help_text="Where the rates came from (e.g. the LiteLLM table's key).",
    )
    corrects = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The period whose rates this one corrects (same model, tier and dates).",
    )
    superseded_at = models.DateTimeField(
        null=True, blank=True, help_text="When a correction replaced this period."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["model", "service_tier", "-effective_from"]
        constraints = [
            models.CheckConstraint(
                condition=Q(input_per_million__gte=0)
                & Q(cached_input_per_million__gte=0)
                & Q(output_per_million__gte=0)
                & (
                    Q(cache_write_5m_per_million__isnull=True)
                    | Q(cache_write_5m_per_million__gte=0)
                )
                & (
                    Q(cache_write_1h_per_million__isnull=True)
                    | Q(cache_write_1h_per_million__gte=0)
                )
                & (Q(reasoning_per_million__isnull=True) | Q(reasoning_per_million__gte=0)),
                name="model_price_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(effective_to__isnull=True) | Q(effective_to__gt=F("effective_from")),
                name="model_price_period_ordered",
            ),
            models.CheckConstraint(
                condition=Q(service_tier__in=ServiceTier.values),
                name="model_price_known_service_tier",
            ),
            # A long-context tier has its threshold and every one of its rates, or
            # there is none of them.
            models.CheckConstraint(
                condition=Q(
                    long_context_threshold__isnull=True,
                    **{f"{name}__isnull": True for name in LONG_RATE_FIELDS},
                )
                | Q(
                    long_context_threshold__gt=0,
                    **{f"{name}__gte": 0 for name in LONG_RATE_FIELDS},
                ),
                name="model_price_long_context_complete",
            ),
        ]

    def __str__(self) -> str:
        end = self.effective_to.date() if self.effective_to else "open"
        tier = "" if self.service_tier == ServiceTier.STANDARD else f" ({self.service_tier})"
        return f"{self.model}{tier} from {self.effective_from.date()} to {end}"

    def rates(self, *, long_context: bool) -> tuple[Decimal, ...]:
        """The six rates per million (RATE_FIELDS' order), defaults resolved."""
        if long_context:
            inp, cached = self.long_input_per_million, self.long_cached_input_per_million
            write_5m, write_1h = self.long_cache_write_5m_per_million, self.long_cache_write_1h_per_million  # fmt: skip
            out, reasoning = self.long_output_per_million, self.long_reasoning_per_million
        else:
            inp, cached = self.input_per_million, self.cached_input_per_million
            write_5m, write_1h = self.cache_write_5m_per_million, self.cache_write_1h_per_million
            out, reasoning = self.output_per_million, self.reasoning_per_million
        write_5m = inp if write_5m is None else write_5m
        write_1h = write_5m if write_1h is None else write_1h
        reasoning = out if reasoning is None else reasoning
        return inp, cached, write_5m, write_1h, out, reasoning


class CreditBalance(models.Model):
    """A company's current balance: always the exact sum of its ledger.

    Kept in its own row (not on Company) so that editing a company in the
    admin can never write back a stale balance. Only billing.ledger writes it,
    with `balance = balance + delta` in the transaction that inserts the entry.
    """

    company = models.OneToOneField(
        Company, primary_key=True, on_delete=models.PROTECT, related_name="credit_balance"
    )
    balance = ExactAmountField(default=Decimal("0"))
    debt = ExactAmountField(
        default=Decimal("0"),
        db_default=Decimal("0"),  # balance rows written by raw SQL or older code stay valid
        help_text="Consumption no unexpired credit covered yet; new credit pays it off first.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(debt__gte=0), name="balance_debt_non_negative")
        ]

    def __str__(self) -> str:
        return f"{self.company}: {self.balance}"


class LedgerEntry(models.Model):
    """One append-only movement of credit. Never updated, never deleted.

    A database trigger (migration 0002) refuses UPDATE and DELETE; `save()`
    and `delete()` refuse too, so the mistake is caught before the database.
    """

    class Kind(models.TextChoices):
        PURCHASE = "purchase", "Purchase (paid)"
        GRANT = "grant", "Grant (promotional)"
        REFUND = "refund", "Refund"
        ADJUSTMENT = "adjustment", "Manual adjustment"
        EXPIRY = "expiry", "Expiry"
        USAGE = "usage", "Usage debit"
        USAGE_CORRECTION = "usage_correction", "Usage re-pricing correction"

    id = models.BigAutoField(primary_key=True)
    # No index of its own: ledger_company_id_desc, ledger_company_kind_id and the
    # idempotency key all lead with company_id, and every usage debit writes each index.
    company = models.ForeignKey(
        Company, on_delete=models.PROTECT, related_name="ledger_entries", db_index=False
    )
    kind = models.CharField(max_length=24, choices=Kind.choices)
    amount = ExactAmountField(help_text="Signed: positive adds credit, negative consumes it.")
    balance_after = ExactAmountField()
    reason = models.TextField(blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    idempotency_key = models.CharField(max_length=255)
    usage_id = models.UUIDField(null=True, blank=True, help_text="The usage row a debit is for.")
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="For purchases and grants: when the credit expires."
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name_plural = "ledger entries"
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["company", "-id"], name="ledger_company_id_desc"),
            # The credits tab filtered by kind: without it, a company with millions
            # of usage debits is scanned to find its few purchases.
            models.Index(fields=["company", "kind", "-id"], name="ledger_company_kind_id"),
            models.Index(fields=["usage_id"], name="ledger_usage_id"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["company", "idempotency_key"], name="ledger_unique_idempotency_key"
            ),
            models.UniqueConstraint(
                fields=["usage_id"],
                condition=Q(kind="usage"),
                name="ledger_one_debit_per_usage",
            ),
            models.CheckConstraint(
                condition=~Q(amount=0) | Q(kind__in=["usage", "usage_correction", "adjustment"]),
                name="ledger_amount_not_zero",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["purchase", "grant", "refund"], amount__gt=0)
                | Q(kind__in=["expiry", "usage"], amount__lte=0)
                | Q(kind__in=["adjustment", "usage_correction"]),
                name="ledger_amount_sign_matches_kind",
            ),
            models.CheckConstraint(
                condition=Q(usage_id__isnull=True) | Q(kind__in=["usage", "usage_correction"]),
                name="ledger_usage_id_only_on_usage",
            ),
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True) | Q(kind__in=["purchase", "grant"]),
                name="ledger_expiry_only_on_credit",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount} ({self.company_id})"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise PermissionError("Ledger entries are append-only; post a correction instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Ledger entries are append-only; post a correction instead.")


class APIKey(models.Model):
    """A bearer key for the API, stored only as a SHA-256 hash.

    The secret is `qg_<prefix>_<random>`, shown once at creation. The prefix
    finds the row; the hash is compared in constant time. Keys are 256-bit
    random, so a fast hash is enough (no password-style stretching needed).
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    company = models.ForeignKey(
        Company,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_keys",
        help_text="Empty for a platform-wide key.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    daily_limit = AmountField(
        null=True,
        blank=True,
        help_text="Optional cap on this key's spend per day (the company's time zone); "
        "company keys only.",
    )
    monthly_limit = AmountField(
        null=True,
        blank=True,
        help_text="Optional cap on this key's spend per month (the company's time zone); "
        "company keys only.",
    )

    class Meta:
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=(Q(daily_limit__isnull=True) | Q(daily_limit__gte=0))
                & (Q(monthly_limit__isnull=True) | Q(monthly_limit__gte=0)),
                name="api_key_limits_non_negative",
            ),
            # A platform key acts for every company: its spend has no one time zone.
            models.CheckConstraint(
                condition=Q(company__isnull=False)
                | Q(daily_limit__isnull=True, monthly_limit__isnull=True),
                name="api_key_limits_on_company_keys",
            ),
        ]

    def __str__(self) -> str:
        scope = self.company.name if self.company_id else "platform"
        return f"{self.name} ({self.prefix}, {scope})"

    @property
    def is_platform(self) -> bool:
        return self.company_id is None

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def has_limits(self) -> bool:
        return self.daily_limit is not None or self.monthly_limit is not None


class AuditEvent(models.Model):
    """Who did what to money or prices, with the before and after. Append-only."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(
        max_length=200, blank=True, help_text="Who acted when no user did (a command, an API key)."
    )
    action = models.CharField(max_length=64)
    company = models.ForeignKey(
        Company, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return (
            f"{self.action} by {self.actor or self.actor_label} at {self.created_at:%Y-%m-%d %H:%M}"
        )


class CreditLot(models.Model):
    """One parcel of credit (a purchase, grant, refund or other positive posting).

    Consumption draws from lots soonest-expiring first, then never-expiring,
    oldest first among equals (billing.ledger). Consumption that finds
    no unexpired credit becomes `CreditBalance.debt`; the next lot opened pays the
    debt off first. So at every commit: balance == sum(remaining) - debt, and
    `remaining == amount - consumed - expired` with each part non-negative.
    Rows are updated (consumed/expired/remaining) only under the company's
    CreditBalance row lock.
    """

    class Funding(models.TextChoices):
        PAID = "paid", "Paid"
        PROMOTIONAL = "promotional", "Promotional"

    id = models.BigAutoField(primary_key=True)
    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="credit_lots")
    entry = models.OneToOneField(
        LedgerEntry, on_delete=models.PROTECT, related_name="lot", help_text="The posting."
    )
    funding = models.CharField(max_length=16, choices=Funding.choices)
    amount = ExactAmountField()
    consumed = ExactAmountField(default=Decimal("0"))
    expired = ExactAmountField(default=Decimal("0"))
    remaining = ExactAmountField()
    expires_at = models.DateTimeField(null=True, blank=True)
    last_consumed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["company", "id"]
        indexes = [
            # The allocation order over open lots only (a btree sorts NULLs last
            # ascending on PostgreSQL), so it stays tiny whatever the history.
            models.Index(
                fields=["company", "expires_at", "id"],
                condition=Q(remaining__gt=0),
                name="lot_open_allocation_order",
            ),
            models.Index(
                fields=["expires_at"],
                condition=Q(remaining__gt=0, expires_at__isnull=False),
                name="lot_open_expiring",
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="lot_amount_positive"),
            models.CheckConstraint(
                condition=Q(consumed__gte=0) & Q(expired__gte=0) & Q(remaining__gte=0),
                name="lot_parts_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(remaining=F("amount") - F("consumed") - F("expired")),
                name="lot_parts_add_up",
            ),
        ]

    def __str__(self) -> str:
        return f"Lot {self.pk}: {self.remaining} of {self.amount} {self.funding}"


class BillingAlert(models.Model):
    """An alert email sent to a company's billing contacts, once per crossing.

    Spend alerts are unique per company, key, kind and period: the company's
    monthly limit and a key's monthly limit use the month ("YYYY-MM"), a key's
    daily limit the day ("YYYY-MM-DD"); `api_key` is empty for the company's.
    The low-balance alert has an empty period and is re-armed (`rearmed_at`
    set) when the balance climbs back to the threshold, so the next fall alerts
    again. The partial unique constraint makes "once" hold under concurrency.
    """

    class Kind(models.TextChoices):
        LOW_BALANCE = "low_balance", "Balance below threshold"
        SPEND_80 = "spend_80", "80% of monthly spend limit"
        SPEND_100 = "spend_100", "100% of monthly spend limit"

    company = models.ForeignKey(Company, on_delete=models.CASCADE, related_name="billing_alerts")
    api_key = models.ForeignKey(
        APIKey,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="billing_alerts",
        help_text="The key whose limit was crossed; empty for the company's own limit.",
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    period = models.CharField(max_length=16, blank=True)
    balance = ExactAmountField(help_text="Balance when the alert fired.")
    threshold = ExactAmountField(help_text="The threshold or limit share that was crossed.")
    month_to_date_spend = ExactAmountField(null=True, blank=True)
    recipients = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    rearmed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["company", "api_key", "kind", "period"],
                condition=Q(rearmed_at__isnull=True),
                nulls_distinct=False,
                name="alert_once_per_crossing",
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.company} at {self.created_at:%Y-%m-%d %H:%M}"


class Statement(models.Model):
    """A company's issued statement for one calendar month: sealed, never changed.

    It covers the company's ledger entries with `entries_after < id <=
    entries_through`: each statement starts where the previous one stopped, so
    every entry is on exactly one statement and the statements add up to the
    ledger (docs/ledger.md, "Statements"). `period_start`/`period_end` are the
    instants the month ran between in the company's zone when it was closed;
    the boundary is the last entry booked before `period_end`. The content
    hash is the database's own sha256 over the stored row and its lines
    (billing_statement_hash, billing migration statements), set once by the
    seal in the transaction that wrote them; triggers refuse any change after.
    Written by usage.statements only.
    """

    id = models.BigAutoField(primary_key=True)
    # No index of its own: statement_one_per_month leads with company_id.
    company = models.ForeignKey(
        Company, on_delete=models.PROTECT, related_name="statements", db_index=False
    )
    month = models.DateField(help_text="The first day of the calendar month covered.")
    timezone = models.CharField(max_length=64, help_text="The company's zone at the close.")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    entries_after = models.BigIntegerField(help_text="The previous statement's last entry id.")
    entries_through = models.BigIntegerField(help_text="The last ledger entry id it covers.")
    entry_count = models.BigIntegerField()
    opening = ExactAmountField()
    purchases = ExactAmountField()
    grants = ExactAmountField()
    refunds = ExactAmountField()
    adjustments = ExactAmountField()
    expiries = ExactAmountField()
    usage = ExactAmountField(help_text="Usage debits of generations that ran in this period.")
    late_usage = ExactAmountField(help_text="Usage debits of generations of closed periods.")
    corrections = ExactAmountField(help_text="Re-pricing corrections.")
    closing = ExactAmountField()
    generations = models.BigIntegerField(help_text="Generations debited, late ones included.")
    questions = models.BigIntegerField(help_text="Their questions.")
    content_hash = models.CharField(max_length=64, blank=True)
    closed_at = models.DateTimeField()

    class Meta:
        ordering = ["company", "-month"]
        constraints = [
            models.UniqueConstraint(fields=["company", "month"], name="statement_one_per_month"),
            models.CheckConstraint(condition=Q(month__day=1), name="statement_month_first_day"),
            models.CheckConstraint(
                condition=Q(period_end__gt=F("period_start")), name="statement_period_ordered"
            ),
            models.CheckConstraint(
                condition=Q(entries_through__gte=F("entries_after")),
                name="statement_entries_ordered",
            ),
            models.CheckConstraint(
                condition=Q(
                    closing=F("opening")
                    + F("purchases")
                    + F("grants")
                    + F("refunds")
                    + F("adjustments")
                    + F("expiries")
                    + F("usage")
                    + F("late_usage")
                    + F("corrections")
                ),
                name="statement_closing_reconciles",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.company} statement {self.month:%Y-%m}"

    @property
    def movements(self) -> Decimal:
        return self.closing - self.opening


class StatementLine(models.Model):
    """One line of a statement: a credit movement, or usage grouped by model, job or month."""

    class Section(models.TextChoices):
        CREDIT = "credit", "Credit movement"
        USAGE_MODEL = "usage_model", "Usage by model"
        USAGE_JOB = "usage_job", "Usage by job"
        LATE_USAGE = "late_usage", "Late usage"
        CORRECTION = "correction", "Correction"

    id = models.BigAutoField(primary_key=True)
    # No index of its own: statement_line_unique_position leads with statement_id.
    statement = models.ForeignKey(
        Statement, on_delete=models.CASCADE, related_name="lines", db_index=False
    )
    position = models.PositiveIntegerField()
    section = models.CharField(max_length=16, choices=Section.choices)
    kind = models.CharField(max_length=24, choices=LedgerEntry.Kind.choices)
    entry_id = models.BigIntegerField(null=True, blank=True, help_text="A credit line's entry.")
    booked_at = models.DateTimeField(null=True, blank=True)
    usage_month = models.CharField(
        max_length=7, blank=True, help_text="YYYY-MM of the usage, for late usage and corrections."
    )
    model = models.CharField(max_length=100, blank=True)
    job_id = models.UUIDField(null=True, blank=True)
    label = models.TextField(blank=True)
    entries = models.BigIntegerField(help_text="Ledger entries (generations, for usage).")
    questions = models.BigIntegerField(default=0)
    amount = ExactAmountField()

    class Meta:
        ordering = ["statement", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["statement", "position"], name="statement_line_unique_position"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_section_display()}: {self.label or self.model} {self.amount}"


class ReservationQuerySet(models.QuerySet):
    """The one reading of "holding" for ORM callers (usage.budgets' SQL says the same)."""

    def holding(self, now: datetime) -> ReservationQuerySet:
        return self.filter(status=Reservation.Status.OPEN, expires_at__gt=now)

    def past_expiry(self, now: datetime) -> ReservationQuerySet:
        return self.filter(status=Reservation.Status.OPEN, expires_at__lte=now)


class Reservation(models.Model):
    """A hold on budget before a generation starts: never money.

    A hold counts against the company's balance and limits, and the key's
    limits, from its admission until it is settled by the usage that names it,
    released, or expires (`expires_at <= now` counts as released everywhere,
    before `expire_reservations` marks it). It never writes a ledger row: the
    ledger records what was spent; billing.reservations is its only writer.
    """

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        SETTLED = "settled", "Settled"
        RELEASED = "released", "Released"
        EXPIRED = "expired", "Expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    company = models.ForeignKey(Company, on_delete=models.PROTECT, related_name="reservations")
    api_key = models.ForeignKey(
        APIKey,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="reservations",
        help_text="The key that asked for it; its limits count the hold.",
    )
    amount = ExactAmountField(help_text="The estimate held, exact.")
    job_id = models.CharField(max_length=255, null=True, blank=True)
    draft_job_id = models.CharField(max_length=255, null=True, blank=True)
    idempotency_key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64)
    estimate = models.JSONField(default=dict, help_text="The estimate as it was asked.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    expires_at = models.DateTimeField()
    settled_usage_id = models.UUIDField(
        null=True, blank=True, help_text="The usage row that settled it."
    )
    settled_cost = ExactAmountField(
        null=True, blank=True, help_text="The settling usage's cost (null while unpriced)."
    )
    closed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ReservationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # Every admission and quota check sums a company's open holds.
            models.Index(
                fields=["company", "expires_at"],
                condition=Q(status="open"),
                name="reservation_open_by_company",
            ),
            models.Index(
                fields=["api_key", "expires_at"],
                condition=Q(status="open"),
                name="reservation_open_by_key",
            ),
            models.Index(
                fields=["expires_at"], condition=Q(status="open"), name="reservation_open_expiry"
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["company", "idempotency_key"], name="reservation_unique_idempotency_key"
            ),
            # No usage row settles two holds.
            models.UniqueConstraint(fields=["settled_usage_id"], name="reservation_one_per_usage"),
            models.CheckConstraint(
                condition=Q(amount__gte=0), name="reservation_amount_non_negative"
            ),
            models.CheckConstraint(
                condition=Q(status="settled", settled_usage_id__isnull=False)
                | (~Q(status="settled") & Q(settled_usage_id__isnull=True)),
                name="reservation_settled_has_usage",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["open", "settled", "released", "expired"]),
                name="reservation_known_status",
            ),
            models.CheckConstraint(
                condition=Q(status="open", closed_at__isnull=True)
                | (~Q(status="open") & Q(closed_at__isnull=False)),
                name="reservation_closed_when_not_open",
            ),
        ]

    def __str__(self) -> str:
        return f"Hold {self.amount} ({self.status}) for {self.company_id}"

    def is_holding(self, now) -> bool:
        return self.status == self.Status.OPEN and self.expires_at > now

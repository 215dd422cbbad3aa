"""API keys: created with a secret shown once, stored as a hash, checked on every request."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from billing.audit import record_audit
from billing.models import APIKey, Company
from billing.money import AmountError, plain, quantize_amount
from core.errors import AuthenticationFailed, InvalidInput
from core.sql import from_row, select_list

API_KEY_PREFIX = "qg"


def hash_api_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_limit(value: Decimal | str | None, field: str) -> Decimal | None:
    """A key's spend limit: a non-negative amount, or None (no limit)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        limit = quantize_amount(value)
    except AmountError as exc:
        raise InvalidInput(f"{field}: {exc}", fields={field: str(exc)})
    if limit < 0:
        raise InvalidInput(f"{field} must not be negative.", fields={field: "must not be negative"})
    return limit


def check_limits_scope(company: Company | None, daily, monthly) -> None:
    """Limits only on company keys (InvalidInput naming the limit otherwise)."""
    if company is None and (daily is not None or monthly is not None):
        raise InvalidInput(
            "Spend limits are for company keys only (a platform key's spend has no one time zone).",
            fields={"daily_limit" if daily is not None else "monthly_limit": "company keys only"},
        )


@transaction.atomic
def create_api_key(
    *,
    name: str,
    company: Company | None = None,
    created_by=None,
    daily_limit: Decimal | str | None = None,
    monthly_limit: Decimal | str | None = None,
) -> tuple[APIKey, str]:
    """Create a key; returns it and the secret, which is never stored or shown again."""
    daily = parse_limit(daily_limit, "daily_limit")
    monthly = parse_limit(monthly_limit, "monthly_limit")
    check_limits_scope(company, daily, monthly)
    prefix = secrets.token_hex(4)
    secret = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    key = APIKey.objects.create(
        name=name,
        prefix=prefix,
        key_hash=hash_api_key(secret),
        company=company,
        created_by=created_by,
        daily_limit=daily,
        monthly_limit=monthly,
    )
    record_audit(
        action="api_key.create",
        actor=created_by,
        company=company,
        obj=key,
        after={"name": name, "prefix": prefix, "platform": company is None, **_limits(key)},
    )
    return key, secret


def _limits(key: APIKey) -> dict[str, str | None]:
    return {"daily_limit": plain(key.daily_limit), "monthly_limit": plain(key.monthly_limit)}


_UNCHANGED: object = object()


@transaction.atomic
def set_api_key_limits(
    *,
    prefix: str,
    daily_limit: Decimal | str | None | object = _UNCHANGED,
    monthly_limit: Decimal | str | None | object = _UNCHANGED,
    actor=None,
    actor_label: str = "",
) -> APIKey:
    """Change a key's daily and/or monthly spend limit (None removes it; omitted keeps it)."""
    key = (
        APIKey.objects.select_for_update(of=("self",))
        .select_related("company")
        .filter(prefix=prefix)
        .first()
    )
    if key is None:
        raise InvalidInput(f"No API key has the prefix {prefix!r}.", fields={"prefix": "unknown"})
    before = _limits(key)
    if daily_limit is not _UNCHANGED:
        key.daily_limit = parse_limit(daily_limit, "daily_limit")  # type: ignore[arg-type]
    if monthly_limit is not _UNCHANGED:
        key.monthly_limit = parse_limit(monthly_limit, "monthly_limit")  # type: ignore[arg-type]
    check_limits_scope(key.company, key.daily_limit, key.monthly_limit)
    key.save(update_fields=["daily_limit", "monthly_limit"])
    record_audit(
        action="api_key.limits",
        actor=actor,
        actor_label=actor_label,
        company=key.company,
        obj=key,
        before=before,
        after=_limits(key),
    )
    return key


def authenticate_api_key(secret: str, *, now: datetime | None = None) -> APIKey:
    """The active key whose secret this is, or AuthenticationFailed.

    The prefix finds the row; the hash is compared in constant time. The same
    error for every failure, so a caller learns nothing about which part was wrong.
    `last_used_at` is written at most once a minute per key, not on every request.
    """
    failure = AuthenticationFailed("Invalid or revoked API key.")
    parts = (secret or "").strip().split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1]:
        raise failure
    key = _key_with_company(parts[1])
    if key is None or not hmac.compare_digest(key.key_hash, hash_api_key(secret.strip())):
        raise failure
    if key.revoked_at is not None:
        raise failure
    now = now or timezone.now()
    stale = now - timedelta(minutes=1)
    if key.last_used_at is None or key.last_used_at < stale:
        APIKey.objects.filter(pk=key.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale)
        ).update(last_used_at=now)
        key.last_used_at = now
    return key


@functools.cache
def _key_sql() -> str:
    key_table, company_table = APIKey._meta.db_table, Company._meta.db_table
    return (
        f"SELECT {select_list(APIKey, 'k')}, {select_list(Company, 'c')} FROM {key_table} k"
        f" LEFT JOIN {company_table} c ON c.id = k.company_id WHERE k.prefix = %s"
    )


def _key_with_company(prefix: str) -> APIKey | None:
    """The key with this prefix and its company (None for a platform key), in one
    hand-written query: it runs on every API request."""
    with connection.cursor() as cursor:
        cursor.execute(_key_sql(), [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    key = from_row(APIKey, row)
    company = from_row(Company, row, len(APIKey._meta.concrete_fields)) if key.company_id else None
    APIKey._meta.get_field("company").set_cached_value(key, company)
    return key


@transaction.atomic
def revoke_api_key(*, prefix: str, actor=None, actor_label: str = "") -> tuple[APIKey, bool]:
    """Revoke the key with this prefix; returns it and whether it was active until now."""
    key = APIKey.objects.select_for_update().filter(prefix=prefix).first()
    if key is None:
        raise InvalidInput(f"No API key has the prefix {prefix!r}.", fields={"prefix": "unknown"})
    if key.revoked_at is not None:
        return key, False
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    record_audit(
        action="api_key.revoke",
        actor=actor,
        actor_label=actor_label,
        company=key.company,
        obj=key,
        before={"revoked_at": None},
        after={"revoked_at": key.revoked_at.isoformat()},
    )
    return key, True

"""API keys: created with a secret shown once, stored as a hash, checked on every request."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from billing.audit import record_audit
from billing.models import APIKey, Company
from core.errors import AuthenticationFailed, InvalidInput
from core.sql import from_row, select_list

API_KEY_PREFIX = "qg"


def hash_api_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def create_api_key(
    *, name: str, company: Company | None = None, created_by=None
) -> tuple[APIKey, str]:
    """Create a key; returns it and the secret, which is never stored or shown again."""
    prefix = secrets.token_hex(4)
    secret = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    key = APIKey.objects.create(
        name=name,
        prefix=prefix,
        key_hash=hash_api_key(secret),
        company=company,
        created_by=created_by,
    )
    record_audit(
        action="api_key.create",
        actor=created_by,
        company=company,
        obj=key,
        after={"name": name, "prefix": prefix, "platform": company is None},
    )
    return key, secret


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

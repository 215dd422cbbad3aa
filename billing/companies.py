"""Tenants: finding a company by any reference, and creating or updating one."""

from __future__ import annotations

import json
import re
import uuid

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from psycopg import errors as pg_errors

from billing.audit import record_audit
from billing.errors import CompanyNotFound, TimezoneLocked
from billing.models import Company, validate_timezone
from core.errors import InvalidInput
from core.sql import from_row, select_list


def resolve_company(ref: str | uuid.UUID | Company) -> Company:
    """A company by its UUID or its external id (UUID first, then external id)."""
    if isinstance(ref, Company):
        return ref
    text = str(ref).strip()
    company = resolve_companies([text]).get(text)
    if company is None:
        raise company_not_found(text)
    return company


def resolve_companies(refs: list[str]) -> dict[str, Company]:
    """Companies by UUID or external id, in one hand-written query (it runs on API
    requests); a UUID match wins over an external id that looks like one."""
    texts = {str(r).strip() for r in refs if r is not None and str(r).strip()}
    uuids = {u for u in (reference_uuid(t) for t in texts) if u is not None}
    if not texts:
        return {}
    # Two JSON texts (encoded in C) instead of one parameter per reference.
    params = [json.dumps([str(u) for u in uuids]), json.dumps(list(texts))]
    with connection.cursor() as cursor:
        cursor.execute(_COMPANIES_SQL, params)
        found = [from_row(Company, row) for row in cursor.fetchall()]
    by_pk = {c.pk: c for c in found}
    by_external = {c.external_id: c for c in found if c.external_id}
    result = {}
    for text in texts:
        company = by_pk.get(reference_uuid(text)) or by_external.get(text)
        if company is not None:
            result[text] = company
    return result


_SELECT = f"SELECT {select_list(Company, 'c')} FROM {Company._meta.db_table} c WHERE "
# Each half on its unique index.
_COMPANIES_SQL = (
    f"{_SELECT}c.id IN (SELECT jsonb_array_elements_text(%s::jsonb)::uuid)"
    f" UNION ALL {_SELECT}c.external_id IN (SELECT jsonb_array_elements_text(%s::jsonb))"
)


_UUID_HEX = re.compile(r"[0-9a-fA-F]{32}")
_UUID_PUNCTUATION = str.maketrans("", "", "{}-")


def reference_uuid(text: str) -> uuid.UUID | None:
    """The UUID a reference reads as, or None: braces and hyphens removed, 32 hex digits.

    The SQL function billing_ref_uuid (billing migration 0008) reads references
    the same way; its trigger keeps an external id from reading as another
    company's UUID, so a reference never names two companies.
    """
    digits = text.translate(_UUID_PUNCTUATION)
    return uuid.UUID(digits) if _UUID_HEX.fullmatch(digits) else None


REFERENCE_GUARD = "company_reference_unambiguous"  # billing migration 0008


def refuse_ambiguous_external_id(external_id: str, *, company: Company | None = None) -> None:
    """An external id may not read as another company's UUID (it would name two companies)."""
    as_uuid = reference_uuid(external_id)
    if as_uuid is None or (company is not None and as_uuid == company.pk):
        return
    if Company.objects.filter(pk=as_uuid).exists():
        raise ambiguous_external_id(external_id)


def ambiguous_external_id(external_id: str) -> InvalidInput:
    return InvalidInput(
        f"The external id {external_id!r} is the id of another company: a reference to it "
        "would name two companies. Use the tenant's own id in the main product.",
        fields={"external_id": "is the id of another company"},
    )


def is_ambiguous_reference(exc: IntegrityError) -> bool:
    """Whether the database's reference guard (not a unique index) refused the write."""
    cause = exc.__cause__
    diag = getattr(cause, "diag", None)
    return isinstance(cause, pg_errors.UniqueViolation) and (
        getattr(diag, "constraint_name", None) == REFERENCE_GUARD
    )


def company_not_found(ref: str) -> CompanyNotFound:
    return CompanyNotFound(
        f"No company has the id or external id {ref!r}.", fields={"company": "unknown company"}
    )


def _company_fields(company: Company) -> dict:
    return {"name": company.name, "external_id": company.external_id, "timezone": company.timezone}


def upsert_company(
    *, external_id: str, name: str, timezone_name: str = "UTC", actor_label: str = ""
) -> tuple[Company, bool]:
    """Create or update the company of a tenant of the main product, by external id.

    Idempotent: the same call twice changes nothing the second time (and audits
    nothing). Returns the company and whether it was created.
    """
    errors = _company_input_errors(external_id, name, timezone_name)
    if errors:
        raise InvalidInput(
            "Invalid company: " + "; ".join(f"{k} {v}" for k, v in errors.items()), fields=errors
        )
    wanted = {"name": name.strip(), "external_id": external_id.strip(), "timezone": timezone_name}
    with transaction.atomic():
        company = (
            Company.objects.select_for_update().filter(external_id=wanted["external_id"]).first()
        )
        created = company is None
        if created:
            refuse_ambiguous_external_id(wanted["external_id"])
            try:
                with transaction.atomic():
                    company = Company.objects.create(**wanted)
            except IntegrityError as exc:  # created by a concurrent call: update that one
                if is_ambiguous_reference(exc):
                    raise ambiguous_external_id(wanted["external_id"]) from exc
                company = Company.objects.select_for_update().get(external_id=wanted["external_id"])
                created = False
        before = _company_fields(company)
        if not created and before == wanted:
            return company, False
        if not created and company.timezone != timezone_name:
            refuse_timezone_change_with_usage(company)
        if not created:
            for name_, value in wanted.items():
                setattr(company, name_, value)
            company.save(update_fields=[*wanted, "updated_at"])
        record_audit(
            action="company.create" if created else "company.update",
            actor_label=actor_label,
            company=company,
            obj=company,
            before=None if created else before,
            after=wanted,
        )
    return company, created


TIMEZONE_CHANGE_HINT = (
    "its usage is already bucketed into days and months of its current time zone; "
    "change it with `manage.py change_company_timezone`, which re-buckets that usage"
)


def refuse_timezone_change_with_usage(company: Company) -> None:
    """A time zone change would silently move report days, monthly spend and limits."""
    if company.usage.exists():  # reverse relation: billing imports nothing of usage
        raise TimezoneLocked(
            f"The time zone of {company.name} cannot change here: {TIMEZONE_CHANGE_HINT}.",
            fields={"timezone": "cannot change once usage is recorded"},
        )


def _company_input_errors(external_id: str, name: str, timezone_name: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not (external_id or "").strip():
        errors["external_id"] = "is required"
    elif len(external_id.strip()) > 200:
        errors["external_id"] = "must be at most 200 characters"
    if not (name or "").strip():
        errors["name"] = "is required"
    elif len(name.strip()) > 200:
        errors["name"] = "must be at most 200 characters"
    try:
        validate_timezone(timezone_name)
    except ValidationError:
        errors["timezone"] = "must be an IANA time zone such as Europe/Berlin"
    return errors

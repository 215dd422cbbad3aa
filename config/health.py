"""`GET /healthz`: does the database answer, is every migration applied, does the schema match?

An answer also names the database: vendor, server version, and whether it is the
embedded server of ops/embedded_pg.py.

A load balancer or uptime check calls it, often every few seconds on every
host, so it stays cheap: one connection check and the migration plan on each
call (an unapplied migration answers 503, naming it), and the schema doctor's
full catalog comparison at most once per SCHEMA_DOCTOR_CACHE_SECONDS per cache
(shared through Redis in production). Schema drift is reported ("status":
"degraded", HTTP 200) rather than failed: every host shares the one database,
so a 503 for a missing index would take the whole site out of the balancer.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connections
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from ops import embedded_pg
from ops.doctor import diagnose, unapplied_migrations

SCHEMA_CACHE_KEY = "ops:healthz:schema:{alias}"


def database_problems(alias: str = "default") -> list[str]:
    """What is wrong with the database, in words; empty when all is well."""
    connection = connections[alias]
    try:
        connection.ensure_connection()
        pending = unapplied_migrations(connection)
    except DatabaseError as exc:
        return [f"database unreachable: {exc.__class__.__name__}: {str(exc).strip()[:200]}"]
    return [f"migration not applied: {app}.{name}" for app, name in pending]


def database_info(alias: str = "default") -> dict:
    """Which database answers: {"vendor", "version" ("18.6"), "embedded"}; needs a connection."""
    database = connections[alias]
    version = database.pg_version  # e.g. 180006 (major * 10000 + minor since PostgreSQL 10)
    return {
        "vendor": database.vendor,
        "version": f"{version // 10000}.{version % 10000}",
        "embedded": embedded_pg.is_embedded(database.settings_dict["HOST"]),
    }


def schema_summary(alias: str = "default") -> dict:
    """The schema doctor's verdict, cached: {"status", "findings", "codes", "checked_at"}."""
    key = SCHEMA_CACHE_KEY.format(alias=alias)
    summary = cache.get(key)
    if summary is None:
        findings = diagnose(alias)
        summary = {
            "status": "drift" if findings else "ok",
            "findings": len(findings),
            "codes": sorted({f.code for f in findings}),
            "checked_at": timezone.now().isoformat(),
        }
        cache.set(key, summary, settings.SCHEMA_DOCTOR_CACHE_SECONDS)
    return summary


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    problems = database_problems()
    if problems:
        return JsonResponse({"status": "error", "problems": problems}, status=503)
    try:
        schema = schema_summary()
    except DatabaseError as exc:
        return JsonResponse(
            {"status": "error", "problems": [f"schema check failed: {exc}"]}, status=503
        )
    status = "ok" if schema["status"] == "ok" else "degraded"
    return JsonResponse({"status": status, "database": database_info(), "schema": schema})

"""`GET /healthz`: does the database answer, and is every migration applied?

A load balancer or uptime check calls it. An unapplied migration is reported
here (503, naming the migrations) instead of surfacing as a crash on the
first insert that needs the missing column.
"""

from __future__ import annotations

from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def database_problems(alias: str = "default") -> list[str]:
    """What is wrong with the database, in words; empty when all is well."""
    connection = connections[alias]
    try:
        connection.ensure_connection()
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        return [f"database unreachable: {exc.__class__.__name__}: {str(exc).strip()[:200]}"]
    return [
        f"migration not applied: {migration.app_label}.{migration.name}" for migration, _ in plan
    ]


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    problems = database_problems()
    if problems:
        return JsonResponse({"status": "error", "problems": problems}, status=503)
    return JsonResponse({"status": "ok", "database": connections["default"].vendor})

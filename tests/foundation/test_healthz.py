from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def test_healthz_ok_when_migrated(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == connection.vendor
    assert body["schema"]["status"] == "ok"
    assert body["schema"]["findings"] == 0


def test_healthz_names_an_unapplied_migration(client):
    # Forget that the last usage migration ran, as on a server where it never did.
    recorder = MigrationRecorder(connection)
    last = recorder.migration_qs.filter(app="usage").order_by("-id").first()
    last.delete()
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["problems"] == [f"migration not applied: usage.{last.name}"]


def test_an_unreachable_database_is_named_not_a_crash(django_db_blocker):
    from django.db import connections

    from config.health import database_problems

    broken = {**connections.settings["default"], "HOST": "127.0.0.1", "PORT": "1", "NAME": "x"}
    if broken["ENGINE"].endswith("sqlite3"):
        broken["NAME"] = "/nonexistent-dir/unreachable.sqlite3"
    connections.settings["unreachable"] = broken
    try:
        with django_db_blocker.unblock():
            problems = database_problems("unreachable")
    finally:
        connections["unreachable"].close()
        del connections.settings["unreachable"]
    assert len(problems) == 1 and problems[0].startswith("database unreachable: ")

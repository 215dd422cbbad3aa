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

from __future__ import annotations

import environ
import pytest
from django.core.cache import cache
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

from ops import embedded_pg

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
    assert body["schema"]["status"] == "ok"
    assert body["schema"]["findings"] == 0


def test_healthz_names_the_database_its_version_and_whether_it_is_embedded(client):
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")  # "18.6", or "15.20 (Debian 15.20-0+deb12u1)"
        version = cursor.fetchone()[0].split()[0]
    # bin/test without DATABASE_URL runs on the embedded server; with it, on the URL's.
    embedded = connection.settings_dict["HOST"] == str(embedded_pg.DATA_DIR)
    assert client.get("/healthz").json()["database"] == {
        "vendor": "postgresql",
        "version": version,
        "embedded": embedded,
    }


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

    nobody_listens = environ.Env.db_url_config("postgres://postgres@127.0.0.1:1/unreachable")
    connections.settings["unreachable"] = {**connections.settings["default"], **nobody_listens}
    try:
        with django_db_blocker.unblock():
            problems = database_problems("unreachable")
    finally:
        connections["unreachable"].close()
        del connections.settings["unreachable"]
    assert len(problems) == 1 and problems[0].startswith("database unreachable: ")

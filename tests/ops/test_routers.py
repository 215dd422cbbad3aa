"""The replica router: report reads go to `replica` inside use_replica(); writes never do."""

from __future__ import annotations

import threading

import pytest
from django.db import DEFAULT_DB_ALIAS, connections
from django.test.utils import CaptureQueriesContext

from billing.models import Company
from config import routers
from config.routers import REPLICA_ALIAS, ReplicaRouter, use_replica
from tests.conftest import make_company


@pytest.fixture
def replica_alias(monkeypatch):
    """tests/ops/conftest.py adds the mirrored `replica` alias for this package.

    These tests are about where queries go; the replica counts as fresh here
    (freshness is measured on a real standby in test_streaming_replica.py).
    """
    assert REPLICA_ALIAS in connections.settings
    monkeypatch.setattr(routers.health, "fresh", lambda: True)
    yield REPLICA_ALIAS
    connections[REPLICA_ALIAS].close()  # or the test database cannot be dropped


def test_without_a_replica_everything_uses_the_primary(monkeypatch):
    monkeypatch.delitem(connections.settings, REPLICA_ALIAS, raising=False)
    router = ReplicaRouter()
    with use_replica():
        assert router.db_for_read(Company) is None
        assert Company.objects.all().db == DEFAULT_DB_ALIAS


def test_routing_decisions_with_a_replica(replica_alias):
    router = ReplicaRouter()
    assert router.db_for_read(Company) is None
    with use_replica():
        assert router.db_for_read(Company) == REPLICA_ALIAS
        assert Company.objects.all().db == REPLICA_ALIAS
        assert router.db_for_write(Company) == DEFAULT_DB_ALIAS
        assert Company.objects.db_manager().db_manager(None)._db is None
    assert Company.objects.all().db == DEFAULT_DB_ALIAS
    assert router.allow_migrate(REPLICA_ALIAS, "billing") is False
    assert router.allow_migrate(DEFAULT_DB_ALIAS, "billing") is None


def test_decorator_and_nesting(replica_alias):
    @use_replica()
    def report():
        return Company.objects.all().db

    assert report() == REPLICA_ALIAS
    with use_replica():
        with use_replica():
            pass
        assert Company.objects.all().db == REPLICA_ALIAS  # still inside the outer block
    assert Company.objects.all().db == DEFAULT_DB_ALIAS


def test_the_opt_in_does_not_leak_into_other_threads(replica_alias):
    seen = []
    with use_replica():
        thread = threading.Thread(target=lambda: seen.append(Company.objects.all().db))
        thread.start()
        thread.join()
    assert seen == [DEFAULT_DB_ALIAS]


@pytest.mark.django_db(databases=[DEFAULT_DB_ALIAS, REPLICA_ALIAS])
def test_reads_run_on_the_replica_connection_and_writes_on_the_primary(replica_alias):
    company = make_company(name="Primary")
    with use_replica():
        with (
            CaptureQueriesContext(connections[REPLICA_ALIAS]) as on_replica,
            CaptureQueriesContext(connections[DEFAULT_DB_ALIAS]) as on_primary,
        ):
            # The replica is a second connection: it cannot see the test's uncommitted
            # company, which shows the read really went there.
            assert not Company.objects.filter(pk=company.pk).exists()
            Company.objects.filter(pk=company.pk).update(name="Renamed")
    assert len(on_replica) == 1 and on_replica[0]["sql"].startswith("SELECT")
    assert len(on_primary) == 1 and on_primary[0]["sql"].startswith("UPDATE")
    company.refresh_from_db()
    assert company.name == "Renamed"


@pytest.mark.django_db(databases=[DEFAULT_DB_ALIAS, REPLICA_ALIAS])
def test_the_billing_pages_read_their_reports_on_the_replica(replica_alias, staff_client):
    company = make_company()
    url = f"/billing/{company.pk}/"
    with CaptureQueriesContext(connections[REPLICA_ALIAS]) as on_replica:
        assert staff_client.get(url, {"tab": "usage"}).status_code == 200
        csv = staff_client.get(url, {"tab": "usage", "group": "day", "format": "csv"})
        b"".join(csv.streaming_content)  # the CSV streams after the view returned
        assert staff_client.get("/billing/").status_code == 200
    tables = " ".join(q["sql"] for q in on_replica)
    assert "usage_daily_rollup" in tables  # the usage tab's and the CSV's reports
    assert "billing_company" in tables  # the staff overview
    writes = ("INSERT", "UPDATE", "DELETE")
    assert not [q for q in on_replica if q["sql"].lstrip().upper().startswith(writes)]


def test_a_decorated_function_on_many_threads_at_once_keeps_each_threads_block(replica_alias):
    start, seen, errors = threading.Barrier(8), [], []

    @use_replica()
    def report():
        start.wait(10)  # every thread inside the block at once
        return Company.objects.all().db

    def run() -> None:
        try:
            seen.append(report())
            seen.append(Company.objects.all().db)  # after the block
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(seen) == sorted([REPLICA_ALIAS, DEFAULT_DB_ALIAS] * 8)

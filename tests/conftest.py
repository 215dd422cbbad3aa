"""Shared fixtures and the few `make_*` helpers that build the test world."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.db.models.signals import post_migrate
from django.utils import timezone

from billing.ledger import post_entry
from billing.models import Company, LedgerEntry, ModelPrice
from usage.events import UsageEvent
from usage.jobs import save_job
from usage.recording import record_usage

_counter = itertools.count(1)


def make_company(**kwargs) -> Company:
    n = next(_counter)
    kwargs.setdefault("name", f"Company {n}")
    kwargs.setdefault("external_id", f"org_{n}")
    return Company.objects.create(**kwargs)


def make_price(
    model: str = "gpt-test",
    *,
    input: str = "2.50",
    cached: str = "1.25",
    output: str = "10.00",
    effective_from: datetime | None = None,
    effective_to: datetime | None = None,
) -> ModelPrice:
    return ModelPrice.objects.create(
        model=model,
        input_per_million=Decimal(input),
        cached_input_per_million=Decimal(cached),
        output_per_million=Decimal(output),
        effective_from=effective_from or timezone.now() - timedelta(days=365),
        effective_to=effective_to,
    )


def make_event(company: Company, **kwargs) -> UsageEvent:
    kwargs.setdefault("idempotency_key", f"key-{next(_counter)}")
    kwargs.setdefault("model", "gpt-test")
    kwargs.setdefault("prompt_tokens", 1000)
    kwargs.setdefault("completion_tokens", 500)
    kwargs.setdefault("question_count", 5)
    if "job_id" not in kwargs and "draft_job_id" not in kwargs:
        kwargs["draft_job_id"] = f"draft-{next(_counter)}"
    return UsageEvent(company=str(company.pk), **kwargs)


def make_usage(company: Company, **kwargs):
    return record_usage(make_event(company, **kwargs), company=company)


def make_job(company: Company, **kwargs):
    kwargs.setdefault("title", "Backend Engineer")
    return save_job(company=company, **kwargs).job


def give_credit(company: Company, amount: str = "100", kind: str = LedgerEntry.Kind.PURCHASE):
    return post_entry(
        company=company,
        kind=kind,
        amount=Decimal(amount),
        idempotency_key=f"credit-{next(_counter)}",
    ).entry


def _is_transactional(request) -> bool:
    marker = request.node.get_closest_marker("django_db")
    if marker is not None and (marker.kwargs.get("transaction") or marker.args[:1] == (True,)):
        return True
    return bool({"transactional_db", "live_server"} & set(request.fixturenames))


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    """Admin pages render without a collectstatic manifest (tests run with DEBUG off)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _fresh_platform_totals(settings):
    """The staff overview's platform totals are cached for a minute in production;
    each test sees its own world (tests of the cache turn it back on)."""
    settings.PLATFORM_TOTALS_CACHE_SECONDS = 0


# The TRUNCATE guards (billing migrations database_guards and statements).
_NO_TRUNCATE = [
    ("billing_ledgerentry", "ledger_no_truncate"),
    ("billing_statement", "statement_no_truncate"),
    ("billing_statementline", "statement_line_no_truncate"),
]


@pytest.fixture(autouse=True)
def _flushable_ledger(request):
    """Let a transactional test's flush TRUNCATE the append-only ledger and statements.

    Their TRUNCATE triggers (billing migrations 0002 and statements) refuse the flush
    Django runs after a `transaction=True` or live-server test. The trigger is
    disabled for that flush only and enabled again by the `post_migrate`
    signal the flush sends when it is done. (Autouse fixtures of this conftest
    are set up after pytest-django's, so this teardown runs before the flush.)
    """
    yield
    if not _is_transactional(request):
        return
    with connection.cursor() as cursor:
        for table, trigger in _NO_TRUNCATE:
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER {trigger}")

    def enable(**kwargs) -> None:
        post_migrate.disconnect(dispatch_uid="flushable_ledger")
        with connection.cursor() as cursor:
            for table, trigger in _NO_TRUNCATE:
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER {trigger}")

    post_migrate.connect(enable, weak=False, dispatch_uid="flushable_ledger")


@pytest.fixture(autouse=True)
def _no_replica_unless_asked(request, monkeypatch):
    """tests/ops registers a mirrored `replica` alias for the whole session (and
    REPLICA_DATABASE_URL configures one); only the tests that ask for it (the
    `replica_alias` or `streaming_replica` fixture) see a replica configured."""
    from config.routers import REPLICA_ALIAS

    asked = {"replica_alias", "streaming_replica"} & set(request.fixturenames)
    if not asked and REPLICA_ALIAS in connections.settings:
        monkeypatch.delitem(connections.settings, REPLICA_ALIAS)


@pytest.fixture
def streaming_replica(transactional_db, settings, monkeypatch):
    """The real hot standby of REPLICA_DATABASE_URL, serving this test database.

    Replay is resumed after the test whatever happened. The freshness verdict
    starts anew, is re-checked on every request (REPLICA_CHECK_SECONDS=0) and
    tolerates a paused replay for the test's duration unless a test lowers
    REPLICA_MAX_LAG_SECONDS.
    """
    from config import routers
    from tests.replica import replica_alias_on_standby

    if not settings.REPLICA_DATABASE_URL:
        pytest.skip("needs REPLICA_DATABASE_URL: a streaming replica of this server (bin/replica)")
    settings.REPLICA_CHECK_SECONDS = 0
    settings.REPLICA_MAX_LAG_SECONDS = 600
    monkeypatch.setattr(routers, "health", routers.ReplicaHealth())
    with replica_alias_on_standby() as replica:
        yield replica


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings, django_db_blocker):
    """Before pytest-django drops a test database left by an interrupted run, end the
    sessions a pooler may still hold on it (see django_db_setup below)."""
    from tests.pg import end_sessions_on

    name = connection.creation._get_test_db_name()
    with django_db_blocker.unblock():
        end_sessions_on({**connection.settings_dict, "NAME": name})


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """End every other session on the test database before pytest-django drops it.

    Through PgBouncer the pooler keeps idle server connections to the test
    database after the last test closed its own, and DROP DATABASE refuses a
    database that has sessions.
    """
    yield
    from tests.pg import end_sessions_on

    with django_db_blocker.unblock():
        connections.close_all()
        end_sessions_on(connection.settings_dict)


@pytest.fixture
def company(db) -> Company:
    return make_company()


@pytest.fixture
def other_company(db) -> Company:
    return make_company()


@pytest.fixture
def price(db) -> ModelPrice:
    return make_price()


@pytest.fixture
def clock(monkeypatch):
    """`timezone.now()` under the test's control (statements need months to pass)."""
    from tests.billing.statement_world import install_clock

    return install_clock(monkeypatch)


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("staff", "staff@example.com", "pw-staff-123")
    client.force_login(user)
    return client

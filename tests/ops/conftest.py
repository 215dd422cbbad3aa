"""Fixtures for the operations tests."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _fresh_cache():
    """The health check caches the doctor's verdict; each test starts without it."""
    cache.clear()
    yield
    cache.clear()


def _add_replica_alias() -> None:
    """A `replica` alias mirroring the test database, as REPLICA_DATABASE_URL makes in
    production (settings give it TEST: {"MIRROR": "default"}). Added at collection, before
    the test databases are set up, so that tests may list it in `databases`."""
    if "replica" not in settings.DATABASES:
        default = settings.DATABASES["default"]
        test = {**default.get("TEST", {}), "MIRROR": "default"}
        settings.DATABASES["replica"] = {**default, "TEST": test}


_add_replica_alias()

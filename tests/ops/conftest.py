"""Fixtures for the operations tests."""

from __future__ import annotations

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _fresh_cache():
    """The health check caches the doctor's verdict; each test starts without it."""
    cache.clear()
    yield
    cache.clear()

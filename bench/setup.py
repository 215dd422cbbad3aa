"""Django set-up for the harness and its child processes (production-like settings)."""

from __future__ import annotations

import os
import secrets

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/qg_bench"


def configure(database_url: str | None = None) -> None:
    """Settings as in production: DEBUG off (no query log eating memory), reused connections."""
    os.environ["DATABASE_URL"] = (
        database_url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    )
    os.environ["DEBUG"] = "0"
    os.environ.setdefault("SECRET_KEY", "bench-" + secrets.token_urlsafe(32))
    os.environ.setdefault("CONN_MAX_AGE", "600")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()

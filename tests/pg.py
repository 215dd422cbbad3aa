"""Plain psycopg connections to the test server, beside Django's own."""

from __future__ import annotations

import psycopg


def end_sessions_on(settings_dict: dict) -> None:
    """End every session on the database of `settings_dict`, from another database
    (a session through PgBouncer on the database itself would stay in its pool)."""
    with psycopg.connect(autocommit=True, **conninfo(settings_dict, "postgres")) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            [settings_dict["NAME"]],
        )


def conninfo(settings_dict: dict, dbname: str) -> dict:
    params = {
        "dbname": dbname,
        "host": settings_dict["HOST"],
        "port": settings_dict["PORT"],
        "user": settings_dict["USER"],
        "password": settings_dict["PASSWORD"],
    }
    return {key: value for key, value in params.items() if value}

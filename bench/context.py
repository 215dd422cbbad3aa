"""What every scenario needs: the dataset facts, helpers for SQL and child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.urls import Resolver404, resolve

from config.routers import REPLICA_ALIAS

ROOT = Path(__file__).resolve().parent.parent
STAFF_USERNAME = "bench-staff"


@dataclass
class Context:
    marker: dict
    repeat: int  # 0: each scenario's own default
    log: Callable[[str], None]
    # --pooler-url: the API scenarios' second run connects gunicorn through it.
    pooler_url: str = ""
    # The database gunicorn connects to for the run in progress (None: DATABASE_URL).
    api_database_url: str | None = None
    # Where the page scenarios read for the run in progress: the primary, or (second
    # run, with --replica-url) the replica; the replica alias is hidden otherwise.
    reads: str = DEFAULT_DB_ALIAS
    _replica: dict | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._replica = connections.settings.pop(REPLICA_ALIAS, None)

    @property
    def has_replica(self) -> bool:
        return self._replica is not None

    @contextmanager
    def through_pooler(self) -> Iterator[None]:
        self.api_database_url = self.pooler_url
        try:
            yield
        finally:
            self.api_database_url = None

    @contextmanager
    def on_replica(self) -> Iterator[None]:
        """Pages (in this process and in children) read the replica, while it is fresh."""
        connections.settings[REPLICA_ALIAS] = self._replica
        self.reads = REPLICA_ALIAS
        try:
            yield
        finally:
            connections[REPLICA_ALIAS].close()
            del connections.settings[REPLICA_ALIAS]
            self.reads = DEFAULT_DB_ALIAS

    @property
    def rows(self) -> int:
        return int(self.marker["rows"])

    @property
    def largest(self):
        return self.marker["largest_company"]

    def reps(self, default: int) -> int:
        return self.repeat or default

    def scaled(self, full: int) -> int:
        """A row count for a 10M dataset, scaled down with smaller datasets."""
        return max(1_000, min(full, full * self.rows // 10_000_000))

    def staff_user(self):
        from django.contrib.auth import get_user_model

        user, _ = get_user_model().objects.get_or_create(
            username=STAFF_USERNAME,
            defaults={"is_staff": True, "is_superuser": True, "email": "bench@example.com"},
        )
        return user

    def client(self):
        from django.test import Client

        client = Client(HTTP_HOST="localhost")
        client.force_login(self.staff_user())
        return client

    def this_month(self, company_id) -> tuple[date, date]:
        """This month (first day to today) in the company's time zone."""
        from django.utils import timezone

        from billing.models import Company

        today = timezone.localtime(timezone.now(), Company.objects.get(pk=company_id).tz).date()
        return today.replace(day=1), today

    def child(self, *args: str, timeout: int = 1800) -> dict:
        """Run bench.child in a fresh process; its JSON report (with `error` on failure)."""
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path}
        if self.reads != REPLICA_ALIAS:
            env.pop("REPLICA_DATABASE_URL", None)
        proc = subprocess.run(
            [sys.executable, "-m", "bench.child", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("BENCH-CHILD "):
                return json.loads(line[len("BENCH-CHILD ") :])
        return {"error": f"child exited {proc.returncode}: {proc.stderr[-2000:]}"}


def sql_ms(sql: str, params=None, *, using: str = DEFAULT_DB_ALIAS) -> float:
    """Milliseconds to run `sql` and fetch every row (on the database `using`)."""
    t0 = time.perf_counter()
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        if cursor.description is not None:
            cursor.fetchall()
    return (time.perf_counter() - t0) * 1000


def explain(sql: str, params=None) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def url_exists(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


def command_exists(name: str) -> bool:
    from django.core.management import get_commands

    return name in get_commands()

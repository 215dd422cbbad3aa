"""The streaming replica the replica tests run against (the `streaming_replica` fixture).

REPLICA_DATABASE_URL names a real hot standby of the test server (bin/replica
starts one with pg_basebackup -R). Its database name does not matter: the
standby holds a physical copy of every database of the primary, so the test
database pytest-django creates on the primary appears on the standby by
replay. Settings keep the `replica` alias a test MIRROR, so Django creates
nothing on the read-only standby; for a replica test the alias is pointed at
the standby's copy of the test database instead, in every thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import DEFAULT_DB_ALIAS, connections

from config.routers import REPLICA_ALIAS
from tests.pg import conninfo

WAIT_SECONDS = 60


class StreamingReplica:
    """Controls and inspects the standby through its own connection (autocommit)."""

    def __init__(self, settings_dict: dict) -> None:
        self.settings_dict = settings_dict
        self._conn = psycopg.connect(autocommit=True, **conninfo(settings_dict, "postgres"))

    def close(self) -> None:
        self._conn.close()

    def value(self, sql: str, params=None):
        return self._conn.execute(sql, params).fetchone()[0]

    def check_it_replicates_the_primary(self) -> None:
        if not self.value("SELECT pg_is_in_recovery()"):
            raise AssertionError("REPLICA_DATABASE_URL is not a standby (not in recovery)")
        ours = self.value("SELECT system_identifier FROM pg_control_system()")
        if ours != _on_primary("SELECT system_identifier FROM pg_control_system()"):
            raise AssertionError("REPLICA_DATABASE_URL is a standby of another server")

    def wait_until_caught_up(self) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        target = str(_on_primary("SELECT pg_current_wal_lsn()"))
        self._wait(
            "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn",
            [target],
            f"the replica to replay up to {target}",
        )

    def wait_for_database(self, name: str) -> None:
        self._wait(
            "SELECT EXISTS (SELECT FROM pg_database WHERE datname = %s)",
            [name],
            f"database {name} on the replica",
        )

    def pause_replay(self) -> None:
        self.value("SELECT pg_wal_replay_pause()")
        self._wait("SELECT pg_get_wal_replay_pause_state() = 'paused'", None, "replay to pause")

    def resume_replay(self) -> None:
        self.value("SELECT pg_wal_replay_resume()")

    @contextmanager
    def replay_paused(self) -> Iterator[None]:
        self.pause_replay()
        try:
            yield
        finally:
            self.resume_replay()

    def wait_for_lag_above(self, seconds: float) -> None:
        from config.routers import LAG_SQL

        self._wait(f"SELECT ({LAG_SQL}) > %s", [seconds], f"replay lag above {seconds} s")

    def _wait(self, sql: str, params, what: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while not self.value(sql, params):
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {WAIT_SECONDS} s for {what}")
            time.sleep(0.05)


@contextmanager
def replica_alias_on_standby() -> Iterator[StreamingReplica]:
    """Point the `replica` alias at the standby's copy of the test database."""
    configured = connections.settings[REPLICA_ALIAS]
    test_name = connections[DEFAULT_DB_ALIAS].settings_dict["NAME"]
    standby = {**configured, "NAME": test_name}
    replica = StreamingReplica(standby)
    mirror = connections[REPLICA_ALIAS]
    try:
        replica.check_it_replicates_the_primary()
        replica.resume_replay()  # in case an interrupted run left it paused
        replica.wait_for_database(test_name)
        replica.wait_until_caught_up()
        connections.settings[REPLICA_ALIAS] = standby  # what other threads connect with
        connections[REPLICA_ALIAS] = connections.create_connection(REPLICA_ALIAS)
        yield replica
    finally:
        replica.resume_replay()
        connections[REPLICA_ALIAS].close()
        connections.settings[REPLICA_ALIAS] = configured
        connections[REPLICA_ALIAS] = mirror
        replica.close()


def _on_primary(sql: str):
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]

"""Command leases: one holder at a time, across connections, expiring when a run dies."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from ops.leases import LeaseLost, command_lease
from ops.models import CommandLease

pytestmark = pytest.mark.django_db(transaction=True)


def test_one_run_holds_the_lease_and_the_next_is_told_who_until_when():
    with command_lease("job") as first:
        assert first.acquired
        with command_lease("job") as second:
            assert not second.acquired
            assert second.holder == first.holder and second.expires_at == first.expires_at
            assert second.describe().startswith(f"{first.holder}, until ")
        assert CommandLease.objects.get(name="job").token == first.token  # the loser freed nothing
    assert not CommandLease.objects.exists()
    with command_lease("job") as again:
        assert again.acquired


def test_leases_of_different_commands_do_not_exclude_each_other():
    with command_lease("a") as a, command_lease("b") as b:
        assert a.acquired and b.acquired


def test_a_crashed_runs_lease_expires_and_the_next_run_takes_it_over():
    CommandLease.objects.create(
        name="job",
        token="00000000-0000-0000-0000-000000000001",
        holder="dead-host pid 1",
        acquired_at=timezone.now() - timedelta(minutes=10),
        expires_at=timezone.now() - timedelta(seconds=1),
    )
    with command_lease("job") as lease:
        assert lease.acquired
        assert CommandLease.objects.get(name="job").token == lease.token


def test_a_live_run_renews_its_lease():
    with command_lease("job", seconds=0.4) as lease:
        first = lease.expires_at
        time.sleep(0.15)
        lease.keep_alive()  # past a quarter of the lease: renews
        assert lease.expires_at > first
        time.sleep(0.3)  # beyond the first expiry, but renewed
        with command_lease("job") as other:
            assert not other.acquired


def test_keep_alive_does_not_write_on_every_call():
    with command_lease("job", seconds=60) as lease:
        expires = lease.expires_at
        for _ in range(50):
            lease.keep_alive()
        assert CommandLease.objects.get(name="job").expires_at == expires


def test_a_run_that_stalled_past_its_lease_stops_and_leaves_the_new_holder_alone():
    with command_lease("job", seconds=0.2) as stalled:
        time.sleep(0.3)
        with command_lease("job") as successor:
            assert successor.acquired
            with pytest.raises(LeaseLost, match="another run took it over"):
                stalled.keep_alive()
        # `stalled` leaves its block after `successor` released: nothing of it is left.
    assert not CommandLease.objects.exists()


def test_of_many_runs_at_once_exactly_one_gets_the_lease():
    start, results, errors = threading.Barrier(8), [], []

    def run() -> None:
        try:
            start.wait(10)
            with command_lease("job") as lease:
                results.append(lease.acquired)
                time.sleep(0.3)  # hold it while the others try
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [False] * 7 + [True]

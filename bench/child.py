"""Runs one measured job in a fresh process, so its peak memory is its own.

`python -m bench.child command NAME [ARGS...]` runs a management command;
`python -m bench.child get USERNAME URL` fetches a page in-process with
Django's test client as that user and consumes a streaming body chunk by
chunk. Prints one JSON line: elapsed seconds, baseline and peak RSS (MiB),
the longest database transaction (outermost atomic block or BEGIN..COMMIT),
and the command's output or the response's size.
"""

from __future__ import annotations

import io
import json
import sys
import time

from bench.measure import current_rss_mb, peak_rss_mb
from bench.setup import configure


class TransactionClock:
    """Durations of the outermost transactions on the default connection."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self._started: float | None = None

    def install(self) -> None:
        from django.db import connection
        from django.db.backends.base.base import BaseDatabaseWrapper

        clock = self
        original_set_autocommit = BaseDatabaseWrapper.set_autocommit
        original_commit = BaseDatabaseWrapper.commit
        original_rollback = BaseDatabaseWrapper.rollback

        def set_autocommit(self, autocommit, *args, **kwargs):
            if not autocommit and clock._started is None:
                clock._started = time.perf_counter()
            return original_set_autocommit(self, autocommit, *args, **kwargs)

        def finish(original):
            def wrapped(self, *args, **kwargs):
                try:
                    return original(self, *args, **kwargs)
                finally:
                    clock.stop()

            return wrapped

        BaseDatabaseWrapper.set_autocommit = set_autocommit
        BaseDatabaseWrapper.commit = finish(original_commit)
        BaseDatabaseWrapper.rollback = finish(original_rollback)
        connection.execute_wrappers.append(self._raw_sql)

    def stop(self) -> None:
        if self._started is not None:
            self.durations.append(time.perf_counter() - self._started)
            self._started = None

    def _raw_sql(self, execute, sql, params, many, context):
        word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if word in ("BEGIN", "START") and self._started is None:
            self._started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            if word in ("COMMIT", "ROLLBACK", "END"):
                self.stop()


def run_command(name: str, args: list[str]) -> dict:
    from django.core.management import call_command

    out, err = io.StringIO(), io.StringIO()
    call_command(name, *args, stdout=out, stderr=err)
    return {"stdout": out.getvalue()[-20000:], "stderr": err.getvalue()[-4000:]}


def run_get(username: str, url: str) -> dict:
    from django.contrib.auth import get_user_model
    from django.test import Client

    client = Client(HTTP_HOST="localhost")
    client.force_login(get_user_model().objects.get(username=username))
    response = client.get(url)
    size = lines = 0
    chunks = response.streaming_content if response.streaming else [response.content]
    first = b""
    for chunk in chunks:
        if not first:
            first = chunk[:300]
        size += len(chunk)
        lines += chunk.count(b"\n")
    return {
        "status": response.status_code,
        "bytes": size,
        "lines": lines,
        "streaming": response.streaming,
        "content_type": response.get("Content-Type", ""),
        "head": first.decode("utf-8", "replace"),
    }


def main(argv: list[str]) -> int:
    configure()
    clock = TransactionClock()
    clock.install()
    baseline = current_rss_mb()
    t0 = time.perf_counter()
    error = None
    try:
        if argv[0] == "command":
            output = run_command(argv[1], argv[2:])
        else:
            output = run_get(argv[1], argv[2])
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
        output, error = {}, f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - t0
    report = {
        "elapsed": elapsed,
        "baseline_mb": baseline,
        "peak_mb": peak_rss_mb(),
        "transactions": len(clock.durations),
        "longest_transaction_s": max(clock.durations, default=0.0),
        "error": error,
        **output,
    }
    print("BENCH-CHILD " + json.dumps(report, default=str))
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

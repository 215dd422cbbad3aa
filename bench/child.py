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
import os
import sys
import tempfile
import time

from bench.measure import current_rss_mb, forked_peak_mb, forked_processes, peak_rss_mb
from bench.setup import configure


class TransactionClock:
    """Durations of the outermost transactions on the default connection.

    A process forked by the job (import_usage's workers) keeps a clock of its
    own, which writes each duration to `forked_log`; :meth:`all_durations`
    reads them back, so the longest transaction covers every process.
    """

    def __init__(self, forked_log: str) -> None:
        self.durations: list[float] = []
        self._started: float | None = None
        self._forked_log = forked_log
        self._sink: io.TextIOBase | None = None
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.durations, self._started = [], None
        self._sink = open(self._forked_log, "a", buffering=1)  # noqa: SIM115 - lives as long as the fork

    def all_durations(self) -> list[float]:
        try:
            with open(self._forked_log) as fh:
                forked = [float(line) for line in fh if line.strip()]
        except FileNotFoundError:
            forked = []
        return self.durations + forked

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
            duration = time.perf_counter() - self._started
            self.durations.append(duration)
            self._started = None
            if self._sink is not None:
                self._sink.write(f"{duration}\n")

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
    fd, forked_log = tempfile.mkstemp(prefix="bench-child-", suffix=".log")
    os.close(fd)
    clock = TransactionClock(forked_log)
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
    durations = clock.all_durations()
    os.unlink(forked_log)
    report = {
        "elapsed": elapsed,
        "baseline_mb": baseline,
        # Forked workers: the largest one's peak, once per worker (an upper
        # bound: pages they share with this process are counted again).
        "peak_mb": peak_rss_mb() + forked_peak_mb() * forked_processes(),
        "own_peak_mb": peak_rss_mb(),
        "forked_processes": forked_processes(),
        "forked_peak_mb": forked_peak_mb(),
        "transactions": len(durations),
        "longest_transaction_s": max(durations, default=0.0),
        "error": error,
        **output,
    }
    print("BENCH-CHILD " + json.dumps(report, default=str))
    return 0 if error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

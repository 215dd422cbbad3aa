"""gunicorn settings, read automatically by `gunicorn config.wsgi` (the Procfile's web line).

Threaded workers: a request spends much of its time waiting on PostgreSQL
(the commit flush above all), so threads overlap that wait while one process
per core uses the cores. One process per core, four threads each: 8 requests
in flight on a 2-core host, as many as the benchmark's 8 clients. On 2 cores
2x4 beat 4x2, 3x4, 2x8 and 8x1 (docs/performance.md); more processes than
cores only add context switches and memory (the CPU is the ceiling).
Keep-alive lets API clients reuse their connection. Every
value can be overridden from the environment without a code change; the bind
address is gunicorn's own default ($PORT when set).
"""

from __future__ import annotations

import multiprocessing
import os

workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "30"))
# Recycle workers now and then so that slow leaks cannot grow without bound.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "20000"))
max_requests_jitter = max_requests // 10
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))


def pre_request(worker, req) -> None:
    """Let the application end this connection (config/request_body.py).

    gunicorn drops a Connection header set by the application, so closing
    after a body too big to drain is done by marking the request itself,
    which gunicorn then answers with "Connection: close".
    """
    from config.request_body import connection_closer

    connection_closer.set(lambda: setattr(req, "must_close", True))

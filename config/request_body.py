"""The request body at the WSGI edge, below Django: chunked bodies, and bodies left unread.

- **Chunked bodies.** Django reads CONTENT_LENGTH bytes, so a body sent with
  `Transfer-Encoding: chunked` (no length) would reach it empty. When the
  server has de-chunked it (gunicorn says so with `wsgi.input_terminated`),
  it is read here, at most API_MAX_BODY_BYTES + 1 bytes, and handed on with
  its length; one over the limit gets the API's 413. From a server that does
  not de-chunk, the API's gate answers 411 (billing.api.check_body).
- **Bodies left unread.** A request refused before its body is read (401,
  404, 413, 415, 429, ...) leaves that body on the connection. gunicorn drains
  at most 64 KiB of it and otherwise closes the connection after its response
  promised keep-alive, so the client's next request on it is lost, and the
  reset can even beat the response to the client. So before the response
  starts, the rest is read and dropped here (as nginx's lingering close
  does), up to DRAIN_FACTOR times the limit and DRAIN_SECONDS; a bigger or
  slower one ends the connection with `Connection: close` instead (and a
  client still sending it may see the connection reset before the 413).
  gunicorn ignores a Connection header set by the application, so its
  `pre_request` hook (gunicorn.conf.py) hands this module a way to close:
  `connection_closer`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from django.conf import settings

# Set per request by gunicorn.conf.py's pre_request hook; None under other servers.
connection_closer: ContextVar[Callable[[], None] | None] = ContextVar(
    "connection_closer", default=None
)
DRAIN_FACTOR = 64
DRAIN_SECONDS = 10.0
_CHUNK = 64 * 1024


class CountingInput:
    """wsgi.input that counts what the application reads."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.consumed = stream, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size) if size is not None and size >= 0 else self.stream.read()
        self.consumed += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self.stream.readline(size)
        self.consumed += len(data)
        return data

    def __iter__(self):
        return iter(self.readline, b"")


def read_up_to(stream: Any, limit: int) -> bytes:
    """At most `limit` bytes of a stream that ends (a de-chunked body)."""
    parts, size = [], 0
    while size < limit:
        part = stream.read(min(_CHUNK, limit - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def drain(stream: Any, *, at_most: int, deadline: float) -> bool:
    """Read and drop the rest of a body; whether it ended within the bounds."""
    drained = 0
    while drained <= at_most and time.monotonic() < deadline:
        part = stream.read(_CHUNK)
        if not part:
            return True
        drained += len(part)
    return False


def is_chunked(environ: dict) -> bool:
    return "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


class RequestBodyEdge:
    """WSGI middleware around Django's application (config/wsgi.py)."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        limit = settings.API_MAX_BODY_BYTES
        original = environ.get("wsgi.input")
        chunked = is_chunked(environ) and environ.get("wsgi.input_terminated") and original
        if chunked:
            body = read_up_to(original, limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["HTTP_TRANSFER_ENCODING"]
            unread: CountingInput | None = CountingInput(original) if len(body) > limit else None
        else:
            unread = environ["wsgi.input"] = CountingInput(original) if original else None
        declared = _declared_length(environ)

        def start(status: str, headers: list, exc_info: Any = None) -> Callable:
            if unread is not None and (chunked or unread.consumed < declared):
                _finish_body(unread, declared if not chunked else None, limit)
            return start_response(status, headers, exc_info)

        return self.app(environ, start)


def _declared_length(environ: dict) -> int:
    try:
        return max(int(environ.get("CONTENT_LENGTH") or 0), 0)
    except ValueError:
        return 0


def _finish_body(stream: CountingInput, declared: int | None, limit: int) -> None:
    """Drain what the application left of the body, or have the connection closed."""
    at_most = DRAIN_FACTOR * limit
    too_long = declared is not None and declared - stream.consumed > at_most
    deadline = time.monotonic() + DRAIN_SECONDS
    if too_long or not drain(stream, at_most=at_most, deadline=deadline):
        if (close := connection_closer.get()) is not None:
            close()

"""One JSON log line per API request, with a request id the caller can follow.

The id comes from the caller's X-Request-ID (when it is a sane token) or is
generated, is echoed in the response's X-Request-ID, and is attached to every
log line written while the request is served. The line names the company and
the API key *prefix* that the API set on the request (never the secret).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from ops.logging import request_id_var

logger = logging.getLogger("qg.requests")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
API_PREFIX = "/api/"


def request_id_for(request: HttpRequest) -> str:
    given = request.headers.get("X-Request-ID", "")
    return given if _SANE_ID.match(given) else uuid.uuid4().hex


def outcome_of(status: int) -> str:
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    if status >= 400:
        return "client_error"
    return "ok"


class RequestLogMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        request.request_id = request_id_for(request)
        token = request_id_var.set(request.request_id)
        started = time.monotonic()
        status = 500
        try:
            response = self.get_response(request)
            status = response.status_code
            response["X-Request-ID"] = request.request_id
            return response
        finally:
            self._log(request, status, started)
            request_id_var.reset(token)

    def _log(self, request: HttpRequest, status: int, started: float) -> None:
        company = getattr(request, "company_id", None)
        event = {
            "event": "api_request",
            "request_id": request.request_id,
            "method": request.method,
            "path": request.path,
            "status": status,
            "outcome": outcome_of(status),
            "company": str(company) if company else None,
            "api_key_prefix": getattr(request, "api_key_prefix", None),
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
        }
        level = logging.ERROR if status >= 500 else logging.INFO
        logger.log(level, "%s %s %s", request.method, request.path, status, extra={"event": event})

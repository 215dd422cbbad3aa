"""The JSON API at /api/v1/: the NinjaAPI instance, its auth, and its one error shape.

Every error, whatever raised it (a service's ServiceError, pydantic, the JSON
parser, the request gate, an unexpected bug), is answered as
`{"error": {"code", "message", "fields"}}` with a fitting status: never an
empty body, never an HTML page.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults as django_defaults
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser

from billing.api import ApiError, APIKeyAuth, status_of
from billing.api import router as companies_router
from core.errors import ServiceError
from core.text import printable_name, unstorable_path
from usage.api import router as usage_router
from usage.reservations_api import router as reservations_router
from usage.schemas import readable_errors, strict_json_loads

logger = logging.getLogger(__name__)


class JSONObjectParser(Parser):
    """JSON bodies must be objects: a list or a number is refused before validation."""

    def parse_body(self, request: HttpRequest) -> dict:
        data = strict_json_loads(request.body)
        if not isinstance(data, dict):
            raise NotAnObject("the body must be a JSON object")
        # A batch's events are checked one by one (one bad event loses no other).
        if (bad := unstorable_path(data, skip_keys=frozenset({"events"}))) is not None:
            raise UnstorableText(*bad)
        return data


class NotAnObject(ValueError):
    pass


class UnstorableText(ValueError):
    """A string of the body PostgreSQL cannot store (core.text); args are (path, reason)."""


api = NinjaAPI(
    parser=JSONObjectParser(),
    title="Question generation billing API",
    version="1",
    description="Record question generations, save jobs, manage tenants, check quotas, "
    "hold budget before a generation (reservations). "
    "Authenticate with `Authorization: Bearer <key>` (`manage.py create_api_key`).",
    auth=APIKeyAuth(),
    urls_namespace="api-v1",
)
api.add_router("", usage_router)
api.add_router("", companies_router)
api.add_router("", reservations_router)


def error_response(
    request: HttpRequest,
    status: int,
    code: str,
    message: str,
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> HttpResponse:
    body = {"error": {"code": code, "message": message, "fields": fields or {}, **(extra or {})}}
    response = api.create_response(request, body, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return error_response(request, exc.status, exc.code, exc.message, exc.fields, exc.headers)


@api.exception_handler(ServiceError)
def _billing_error(request: HttpRequest, exc: ServiceError) -> HttpResponse:
    # A refused hold also names every budget line it would cross (usage.errors.BudgetExceeded).
    extra = {"reasons": exc.reasons} if hasattr(exc, "reasons") else None
    return error_response(request, status_of(exc), exc.code, exc.message, exc.fields, extra=extra)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    fields = {}
    for error in exc.errors:
        # loc is ("body", <parameter>, field...) or ("path"/"query", field...)
        skip = 2 if error.get("loc", ("",))[0] == "body" else 1
        for name, reason in readable_errors([error], skip=skip).items():
            fields.setdefault(name, reason)
    message = "Invalid request: " + "; ".join(f"{k} {v}" for k, v in fields.items())
    return error_response(request, 422, "validation_error", message, fields)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(request, 401, "unauthorized", "Invalid or missing API key.")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    cause = exc.__cause__
    if isinstance(cause, NotAnObject):
        fields = {"body": "must be a JSON object"}
        return error_response(
            request, 422, "validation_error", "The body must be a JSON object.", fields
        )
    if isinstance(cause, UnstorableText):
        where, reason = cause.args
        message = f"Invalid request: {where} {reason}"
        return error_response(request, 422, "validation_error", message, {where: reason})
    if exc.status_code == 400:  # ninja could not parse the body
        detail = f": {cause}" if isinstance(cause, json.JSONDecodeError | ValueError) else ""
        return error_response(
            request, 400, "malformed_json", f"The body is not valid JSON{detail}."
        )
    return error_response(request, exc.status_code, "http_error", str(exc) or "Request refused.")


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return error_response(request, 413, "payload_too_large", "The request body is too large.")


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(request, 404, "not_found", "Not found.")


@api.exception_handler(Exception)
def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
    logger.exception("API request failed: %s %s", request.method, request.path)
    return error_response(request, 500, "internal_error", "Internal error; it has been logged.")


def _json_method_not_allowed(view):
    """ninja answers a wrong method with a plain-text 405; answer it in the API's shape."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        if response.status_code != 405:
            return response
        message = f"{request.method} is not allowed here; use {response['Allow']}."
        refused = error_response(request, 405, "method_not_allowed", message)
        refused["Allow"] = response["Allow"]
        return refused

    return wrapped


def urls() -> tuple:
    """`api.urls` with every view answering a wrong method in the error shape."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        pattern.callback = _json_method_not_allowed(pattern.callback)
    return patterns, app_name, namespace


@csrf_exempt  # a POST to an unknown path is a 404 too, not Django's CSRF page
def unknown_endpoint(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other path under /api/, any method: the same error shape, not Django's HTML 404."""
    path = printable_name(request.path)
    return error_response(request, 404, "not_found", f"No endpoint at {path}.")


# config.edge leaves its path unchecked: nothing looks it up, and any path is a 404.
unknown_endpoint.accepts_any_path = True


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 400 (handler400): a Host not in ALLOWED_HOSTS, a malformed request.

    Under /api/ it answers in the API's error shape, as every other API error
    does; elsewhere Django's own page.
    """
    if not request.path.startswith("/api/"):
        return django_defaults.bad_request(request, exception)
    if isinstance(exception, DisallowedHost):
        message = "The Host header names a host this service does not answer for."
        fields = {"Host": "not an allowed host"}
    else:
        message, fields = "The request is malformed and was refused.", {}
    body = {"error": {"code": "bad_request", "message": message, "fields": fields}}
    return JsonResponse(body, status=400)

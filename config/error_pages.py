"""Django's 403, 404 and 500 handlers: the billing look with a way back, or the API's shape.

Under /api/ every error keeps answering `{"error": {"code", "message", "fields"}}`
(config.api); elsewhere a person gets a page that says what happened and
where to go next, not Django's bare text.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

API_PREFIX = "/api/"


def _api_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message, "fields": {}}}, status=status)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        return _api_error(404, "not_found", f"No endpoint at {request.path}.")
    return defaults.page_not_found(request, exception, template_name="404.html")


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        return _api_error(403, "not_permitted", "This request is not permitted.")
    return defaults.permission_denied(request, exception, template_name="403.html")


def server_error(request: HttpRequest) -> HttpResponse:
    """Rendered without the request's context (it may be what failed): no user menu."""
    if request.path.startswith(API_PREFIX):
        return _api_error(500, "internal_error", "Something went wrong on our side.")
    return defaults.server_error(request, template_name="500.html")

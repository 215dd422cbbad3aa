"""The request edge: what every request passes before a view sees it.

- Path and query parameters, and the fields of a posted form, follow
  core.text's rule (no NUL, no lone surrogate): a bad one is answered with the
  error shape naming it under /api/, with a 400 page naming it elsewhere,
  before any query can fail on it. JSON bodies are checked by the API's
  parser (config.api), one batch event at a time.
- An `InvalidInput` that a page raises (a bad cursor, a date out of range) is
  the same 400 page, naming the field.
- With SECURE_SSL_REDIRECT on, /api/ over plain http is refused in the error
  shape instead of redirected (docs/operations.md says why); /healthz is
  exempt from the redirect in settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from config.api import error_response
from core.errors import InvalidInput
from core.text import printable_name, text_problem

API_PREFIX = "/api/"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class RequestEdgeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if settings.SECURE_SSL_REDIRECT and is_api(request) and not request.is_secure():
            return error_response(
                request,
                403,
                "https_required",
                "This API is served over HTTPS only; send the request to https:// "
                "(a key already sent over plain http should be revoked).",
            )
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs) -> HttpResponse | None:
        fields = bad_parameters(request, {} if _any_path(view_func) else view_kwargs)
        return refuse(request, fields) if fields else None

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        # Under /api/ the API's own handlers answer; pages get the 400 page.
        if isinstance(exception, InvalidInput) and not is_api(request):
            return refuse(request, exception.fields or {"request": exception.message})
        return None


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/")


def _any_path(view_func: Callable) -> bool:
    return getattr(view_func, "accepts_any_path", False)


def bad_parameters(request: HttpRequest, view_kwargs: dict) -> dict[str, str]:
    """{name: reason} of the first path, query or form parameter that breaks core.text's rule."""
    sources: list[Iterable[tuple[str, object]]] = [view_kwargs.items(), request.GET.lists()]
    # Never under /api/: its bodies are JSON, read (and refused) by the API itself.
    if not is_api(request) and request.content_type in FORM_TYPES:
        sources.append(request.POST.lists())
    for items in sources:
        for name, value in items:
            values = value if isinstance(value, list) else [value]
            for text in [name, *(v for v in values if isinstance(v, str))]:
                if (problem := text_problem(text)) is not None:
                    return {printable_name(name): problem}
    return {}


def refuse(request: HttpRequest, fields: dict[str, str]) -> HttpResponse:
    detail = "; ".join(f"{name} {reason}" for name, reason in fields.items())
    if is_api(request):
        return error_response(
            request, 422, "validation_error", f"Invalid request: {detail}", fields
        )
    return render(request, "400.html", {"fields": fields}, status=400)

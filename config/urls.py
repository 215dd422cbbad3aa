"""URL routes: the admin, auth, the billing pages, the API and health."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from config import api
from config.health import healthz

admin.site.site_header = "Question generation billing"
admin.site.site_title = "QG billing admin"
admin.site.index_title = "Platform administration"

# A 400 under /api/ (e.g. a Host header not in ALLOWED_HOSTS) in the API's shape.
handler400 = "config.api.bad_request"
# Styled pages in the billing look elsewhere, the API's error shape under /api/.
handler403 = "config.error_pages.permission_denied"
handler404 = "config.error_pages.not_found"
handler500 = "config.error_pages.server_error"

urlpatterns = [
    path("", RedirectView.as_view(url="/billing/", permanent=False)),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/v1/", api.urls()),
    # Every other path under /api/ (any method, inside /api/v1/ or not): the JSON 404.
    re_path(r"^api(?:/(?P<rest>.*))?$", api.unknown_endpoint),
    path("billing/", include("usage.urls")),
]

"""/billing/: the staff overview and each company's billing page."""

from __future__ import annotations

from django.urls import path

from usage import views

app_name = "billing"

urlpatterns = [
    path("", views.billing_home, name="home"),
    path("<uuid:company_id>/", views.company_page, name="company"),
    path("<uuid:company_id>/usage/<uuid:usage_id>/", views.charge_page, name="charge"),
    path("<uuid:company_id>/statements/<str:month>/", views.statement_page, name="statement"),
    path(
        "<uuid:company_id>/statements/<str:month>/csv/",
        views.statement_csv,
        name="statement_csv",
    ),
]

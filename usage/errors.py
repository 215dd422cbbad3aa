"""Errors of the usage services (the base error and the shared kinds are in core.errors)."""

from __future__ import annotations

from core.errors import ServiceError


class CrossTenantJob(ServiceError):
    """A job id of another company: usage is never linked across tenants."""

    code = "job_of_another_company"

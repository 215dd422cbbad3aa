"""Errors of the billing services (the base error and the shared kinds are in core.errors)."""

from __future__ import annotations

from core.errors import InvalidInput, ServiceError


class CompanyNotFound(ServiceError):
    code = "company_not_found"


class PriceError(ServiceError):
    code = "invalid_price"


class PriceOverlap(ServiceError):
    code = "price_overlap"


class TimezoneLocked(InvalidInput):
    """A valid time zone that the company's recorded usage refuses: a 409, not a 422."""

    code = "conflict"

"""Errors of the billing services (the base error and the shared kinds are in core.errors)."""

from __future__ import annotations

from core.errors import ServiceError


class CompanyNotFound(ServiceError):
    code = "company_not_found"


class PriceError(ServiceError):
    code = "invalid_price"


class PriceOverlap(ServiceError):
    code = "price_overlap"

"""Errors of the usage services (the base error and the shared kinds are in core.errors)."""

from __future__ import annotations

from core.errors import ServiceError


class CrossTenantJob(ServiceError):
    """A job id of another company: usage is never linked across tenants."""

    code = "job_of_another_company"


class BudgetExceeded(ServiceError):
    """A hold that would cross a line of the budget; `reasons` names every line."""

    code = "budget_exceeded"

    def __init__(self, message: str, *, reasons: list[str], fields: dict | None = None) -> None:
        super().__init__(message, fields=fields)
        self.reasons = reasons


class ReservationNotFound(ServiceError):
    code = "not_found"


class ReservationClosed(ServiceError):
    """A usage event names a hold that was released or settled by another usage."""

    code = "conflict"


class PriceNotFound(ServiceError):
    """An estimate of a model (or tier) that no price covers now: nothing to hold."""

    code = "price_not_found"

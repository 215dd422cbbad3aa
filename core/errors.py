"""The base error of every service, and the kinds that more than one app raises.

A service raises a :class:`ServiceError` for anything its caller can act on.
`code` is stable (the API maps it to an HTTP status, see billing.api), and
`fields` names the inputs at fault, so every entry point (API, admin form,
command) can say which field is wrong without parsing a message.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base for errors a caller can act on. `code` is stable, `fields` names inputs."""

    code = "service_error"

    def __init__(self, message: str, *, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class InvalidInput(ServiceError):
    code = "validation_error"


class IdempotencyConflict(ServiceError):
    code = "idempotency_conflict"


class AuthenticationFailed(ServiceError):
    code = "unauthorized"


class NotPermitted(ServiceError):
    code = "forbidden"

"""Failed and locked-out logins as JSON log lines (the login throttling is django-axes).

Every failed login on /accounts/login/ or /admin/login/ logs `login_failed`
(with `locked_out` true when django-axes refused it unread because the
username is locked from that address), and the failure that sets a lock logs
`login_locked_out`. Never the password: Django hands the signal cleansed
credentials, and only the username is kept.
"""

from __future__ import annotations

import logging

from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver

logger = logging.getLogger("qg.logins")


def _event(name: str, request, username: str | None) -> dict:
    return {
        "event": name,
        "username": (username or "")[:150],
        "ip_address": client_address(request) if request is not None else None,
        "path": request.path if request is not None else None,
    }


def attempted_username(request, credentials: dict | None) -> str:
    """The username django-axes counts failures for (AXES_USERNAME_CALLABLE).

    Cut to the longest username there can be: a longer one names no account,
    and django-axes would fail to store it (a 500 instead of "wrong password").
    """
    source = credentials if credentials else getattr(request, "POST", {})
    username = source.get(get_user_model().USERNAME_FIELD) or source.get("username") or ""
    return str(username)[: get_user_model()._meta.get_field("username").max_length]


def client_address(request) -> str | None:
    """The client's address for django-axes (AXES_CLIENT_IP_CALLABLE).

    Each of the TRUSTED_PROXY_COUNT proxies appends the address it received the
    request from to X-Forwarded-For; the last one is REMOTE_ADDR. So the client
    is the address that many places from the right of that chain, and anything
    further left is whatever the client wrote itself.
    """
    remote = request.META.get("REMOTE_ADDR")
    proxies = settings.TRUSTED_PROXY_COUNT
    if not proxies:
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    chain = [part.strip() for part in forwarded.split(",") if part.strip()] + [remote]
    return chain[-(proxies + 1)] if len(chain) > proxies else chain[0]


@receiver(user_login_failed, dispatch_uid="qg_login_failed")
def log_login_failed(sender, credentials: dict, request=None, **kwargs) -> None:
    event = _event("login_failed", request, credentials.get("username"))
    event["locked_out"] = bool(getattr(request, "axes_locked_out", False))
    logger.warning("login failed for %r", event["username"], extra={"event": event})


@receiver(user_locked_out, dispatch_uid="qg_login_locked_out")
def log_locked_out(sender, request=None, username: str | None = None, **kwargs) -> None:
    event = _event("login_locked_out", request, username)
    logger.warning("login locked out for %r", event["username"], extra={"event": event})

"""Nobody guesses a password: after LOGIN_FAILURE_LIMIT wrong passwords a username is
locked from that address on both login pages (even the right password is refused), with
a clear page; staff unlock it in the admin or with a command; failures and lockouts are
JSON log events."""

from __future__ import annotations

import logging

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

PASSWORD = "right-horse-battery-9"
LOGIN_PAGES = ["login", "admin:login"]


@pytest.fixture(autouse=True)
def _fast_hashing(settings):
    # Dozens of logins here; PBKDF2 is not what is under test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(
        "alice", password=PASSWORD, is_staff=True, is_superuser=True
    )


def attempt(page: str, password: str, *, address: str = "203.0.113.7"):
    client = Client(REMOTE_ADDR=address)
    response = client.post(reverse(page), {"username": "alice", "password": password})
    return client, response


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def fail_until_locked(page: str, **kwargs) -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT):
        _, response = attempt(page, "wrong", **kwargs)
    assert response.status_code == 429


@pytest.mark.parametrize("page", LOGIN_PAGES)
def test_the_right_password_is_refused_after_too_many_wrong_ones(user, page):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _, response = attempt(page, "wrong")
        assert response.status_code == 200  # the form again, with its error
    client, response = attempt(page, "wrong")
    assert response.status_code == 429
    client, response = attempt(page, PASSWORD)
    assert response.status_code == 429 and not logged_in(client)
    text = response.content.decode()
    assert "Too many failed logins" in text and "Try again in 15 minutes" in text
    assert "administrator to unlock" in text


def test_thirty_wrong_passwords_then_the_right_one_does_not_log_in(user):
    for _ in range(30):
        attempt("login", "wrong")
    client, response = attempt("login", PASSWORD)
    assert not logged_in(client) and response.status_code == 429


def test_the_lock_is_per_username_and_address(user, django_user_model):
    fail_until_locked("login")
    other_address, response = attempt("login", PASSWORD, address="198.51.100.2")
    assert logged_in(other_address), response.status_code
    django_user_model.objects.create_user("bob", password=PASSWORD)
    bob = Client(REMOTE_ADDR="203.0.113.7")
    bob.post(reverse("login"), {"username": "bob", "password": PASSWORD})
    assert logged_in(bob)


def test_a_success_before_the_limit_starts_the_count_again(user):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt("login", "wrong")
    client, _ = attempt("login", PASSWORD)
    assert logged_in(client)
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        attempt("login", "wrong")
    client, _ = attempt("login", PASSWORD)
    assert logged_in(client)


def test_staff_unlock_in_the_admin(user, django_user_model):
    fail_until_locked("login")
    staff = django_user_model.objects.create_superuser("root", "root@example.com", "pw-root-123")
    admin_client = Client()
    admin_client.force_login(staff)
    changelist = reverse("admin:axes_accessattempt_changelist")
    listing = admin_client.get(changelist)
    assert listing.status_code == 200 and "alice" in listing.content.decode()
    lock = AccessAttempt.objects.get(username="alice")
    response = admin_client.post(
        changelist,
        {"action": "delete_selected", "_selected_action": [lock.pk], "post": "yes"},
    )
    assert response.status_code == 302
    client, _ = attempt("login", PASSWORD)
    assert logged_in(client)


def test_the_reset_command_unlocks(user):
    fail_until_locked("admin:login")
    call_command("axes_reset_username", "alice")
    client, _ = attempt("admin:login", PASSWORD)
    assert logged_in(client)


def test_failed_and_locked_attempts_are_logged_as_events(user, caplog):
    caplog.set_level(logging.WARNING, logger="qg.logins")
    fail_until_locked("login")
    attempt("login", PASSWORD)
    events = [getattr(r, "event", {}) for r in caplog.records if r.name == "qg.logins"]
    failed = [e for e in events if e["event"] == "login_failed"]
    locked = [e for e in events if e["event"] == "login_locked_out"]
    assert len(failed) >= settings.AXES_FAILURE_LIMIT
    assert failed[0] == {
        "event": "login_failed",
        "username": "alice",
        "ip_address": "203.0.113.7",
        "path": "/accounts/login/",
        "locked_out": False,
    }
    assert locked and locked[0]["username"] == "alice"
    assert failed[-1]["locked_out"] is True  # the right password, refused while locked
    assert not any("right-horse" in str(e) for e in events)


def test_behind_a_proxy_the_address_is_read_from_x_forwarded_for(user, settings):
    # TRUSTED_PROXY_COUNT=1: the proxy's own address (REMOTE_ADDR) is everyone's.
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.5"

    def via_proxy(client_address: str, password: str) -> Client:
        # A client may send its own X-Forwarded-For; the proxy appends the real address.
        forwarded = f"192.0.2.99, {client_address}"
        client = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=forwarded)
        client.post(reverse("login"), {"username": "alice", "password": password})
        return client

    for _ in range(settings.AXES_FAILURE_LIMIT):
        via_proxy("203.0.113.7", "wrong")
    assert not logged_in(via_proxy("203.0.113.7", PASSWORD))
    assert logged_in(via_proxy("198.51.100.2", PASSWORD))
    assert AccessAttempt.objects.get().ip_address == "203.0.113.7"

"""Headless Chromium for the browser tests: Debian's /usr/bin/chromium, one per session.

Never downloads a browser: Playwright drives the system Chromium. Tests that
use it are marked `browser`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"

# Playwright's sync API keeps an event loop in this thread; the ORM calls the
# tests make between page actions are plain synchronous code, so allow them.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def _short_lived_connections(django_db_setup, django_db_blocker):
    """The live server answers each request in a new thread: with CONN_MAX_AGE those
    threads' connections outlive them and keep the test database from being dropped.
    Session-wide, so that a request still in flight when a test ends closes its
    connection; at the end, any server-thread connection left over is ended so the
    test database can be dropped."""
    from django.db import connection, connections

    db = connections.settings["default"]
    saved, db["CONN_MAX_AGE"] = db["CONN_MAX_AGE"], 0
    yield
    db["CONN_MAX_AGE"] = saved
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        connection.close()


@pytest.fixture
def page(browser, _short_lived_connections, live_server, settings):
    # Fast hashing: these tests log in a few times; PBKDF2 is not under test.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    context.set_default_timeout(10_000)
    # Every Content-Security-Policy violation fails the test: a page must keep working
    # under the policy (config/settings.py), not just look right with it switched off.
    context.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => console.error("
        "'CSP violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline')))"
    )
    violations: list[str] = []
    tab = context.new_page()
    tab.on(
        "console",
        lambda msg: (
            violations.append(msg.text)
            if "Content Security Policy" in msg.text or msg.text.startswith("CSP violation")
            else None
        ),
    )
    yield tab
    context.close()
    assert not violations, f"CSP violations on {tab.url}: {violations}"


@pytest.fixture
def shoot():
    """Save a full-page screenshot under screenshots/ (git-ignored) for people to look at."""
    SCREENSHOTS.mkdir(exist_ok=True)

    def save(page, name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save

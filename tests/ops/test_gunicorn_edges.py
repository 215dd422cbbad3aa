"""Over real keep-alive connections to a real gunicorn (gunicorn.conf.py, config.wsgi):
a request refused before its body is read never costs the client its next request on
the connection; a chunked body is read; a body too big to drain is answered with
`Connection: close`, the one way gunicorn lets the application close."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from billing.api_keys import create_api_key
from billing.models import Company
from config.request_body import DRAIN_FACTOR

pytestmark = pytest.mark.django_db(transaction=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server() -> Iterator[int]:
    port = _free_port()
    database = f"{settings.DATABASE_URL.rsplit('/', 1)[0]}/{settings.DATABASES['default']['NAME']}"
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "DEBUG": "0",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "CONN_MAX_AGE": "0",
    }
    gunicorn = Path(sys.executable).with_name("gunicorn")
    args = [str(gunicorn), "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1", "--threads", "2"]
    proc = subprocess.Popen(args, cwd=settings.BASE_DIR, env=env, stdout=subprocess.DEVNULL)
    try:
        _wait_until_up(port, proc)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_up(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"gunicorn exited with {proc.returncode}"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("gunicorn did not start")


@pytest.fixture
def secret(db) -> str:
    return create_api_key(name="edge")[1]


def headers(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}


def send(conn: http.client.HTTPConnection, method: str, path: str, **kwargs):
    conn.request(method, path, **kwargs)
    response = conn.getresponse()
    return response, response.read()


def assert_next_request_answers_on_the_same_connection(conn) -> None:
    sock = conn.sock
    response, _ = send(conn, "GET", "/healthz")
    assert response.status in (200, 503)
    assert conn.sock is sock, "the connection was dropped"


def test_a_413_keeps_the_connection_for_the_next_request(server, secret):
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    body = b'{"events": [' + b'"x",' * (settings.API_MAX_BODY_BYTES // 4) + b'"x"]}'
    response, content = send(
        conn, "POST", "/api/v1/usage/batch", body=body, headers=headers(secret)
    )
    assert response.status == 413 and json.loads(content)["error"]["code"] == "payload_too_large"
    assert response.getheader("Connection") == "keep-alive"
    assert_next_request_answers_on_the_same_connection(conn)


@pytest.mark.parametrize(
    ("auth", "content_type", "status"),
    [("Bearer wrong", "application/json", 401), ("KEY", "text/plain", 415)],
)
def test_any_refusal_before_the_body_is_read_keeps_the_connection(
    server, secret, auth, content_type, status
):
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    auth = auth.replace("KEY", f"Bearer {secret}")
    body = b"x" * (settings.API_MAX_BODY_BYTES - 10)
    response, _ = send(
        conn,
        "POST",
        "/api/v1/usage/batch",
        body=body,
        headers={"Authorization": auth, "Content-Type": content_type},
    )
    assert response.status == status
    assert_next_request_answers_on_the_same_connection(conn)
    response, _ = send(conn, "POST", "/api/v1/nope", body=body, headers=headers(secret))
    assert response.status == 404
    assert_next_request_answers_on_the_same_connection(conn)


def chunks(*parts: bytes) -> Iterator[bytes]:
    yield from parts


def test_a_chunked_body_is_read(server, secret):
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    body = chunks(b'{"external_id": "org-chunked", ', b'"name": "Chunked Co"}')
    response, content = send(
        conn, "POST", "/api/v1/companies", body=body, headers=headers(secret), encode_chunked=True
    )
    assert response.status == 201, content
    assert Company.objects.get(external_id="org-chunked").name == "Chunked Co"
    assert_next_request_answers_on_the_same_connection(conn)


def test_a_chunked_body_over_the_limit_is_a_413_and_the_connection_survives(server, secret):
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=30)
    piece = b"y" * 65536
    parts = [piece] * (settings.API_MAX_BODY_BYTES // len(piece) + 4)
    response, content = send(
        conn, "POST", "/api/v1/usage/batch", body=chunks(*parts), headers=headers(secret),
        encode_chunked=True,
    )  # fmt: skip
    assert response.status == 413, content
    assert_next_request_answers_on_the_same_connection(conn)


def test_a_body_too_big_to_drain_is_answered_with_connection_close(server, secret):
    declared = DRAIN_FACTOR * settings.API_MAX_BODY_BYTES + 1_000_000
    with socket.create_connection(("127.0.0.1", server), timeout=30) as sock:
        head = (
            f"POST /api/v1/usage/batch HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {secret}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"x" * 100_000)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
    status_line, *lines = answer.split(b"\r\n\r\n")[0].decode().split("\r\n")
    assert status_line.startswith("HTTP/1.1 413")
    assert "Connection: close" in lines

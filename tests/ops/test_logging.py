"""Structured logs: one JSON line per API request and per command run, no secrets."""

from __future__ import annotations

import json
import logging
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.http import HttpResponse
from django.test import RequestFactory

from ops.logging import JsonFormatter, request_id_var
from ops.middleware import RequestLogMiddleware

SECRET = "qg_0123abcd_S3cr3tS3cr3tS3cr3tS3cr3t"


def formatted(record: logging.LogRecord) -> dict:
    return json.loads(JsonFormatter().format(record))


def api_call(path="/api/v1/usage", headers=None, view=None):
    request = RequestFactory().post(path, headers=headers or {})

    def get_response(req):
        if view:
            return view(req)
        return HttpResponse(status=201)

    return request, RequestLogMiddleware(get_response)(request)


def request_lines(caplog) -> list[dict]:
    return [formatted(r) for r in caplog.records if r.name == "qg.requests"]


def test_json_formatter_redacts_secrets_in_messages_and_fields():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "used %s", (SECRET,), None)
    record.event = {"authorization": f"Bearer {SECRET}", "password": "pw", "ok": "fine"}
    line = formatted(record)
    text = json.dumps(line)
    assert "S3cr3t" not in text and '"pw"' not in text
    assert line["message"] == "used qg_0123abcd_[redacted]"
    assert line["authorization"] == "[redacted]" and line["ok"] == "fine"


def test_api_request_is_one_json_line_with_company_and_key_prefix(caplog):
    def view(req):
        req.api_key_prefix = "0123abcd"
        req.company_id = "c0ffee00-0000-0000-0000-000000000000"
        return HttpResponse(status=201)

    caplog.set_level(logging.INFO, logger="qg.requests")
    request, response = api_call(headers={"Authorization": f"Bearer {SECRET}"}, view=view)
    [line] = request_lines(caplog)
    assert line["event"] == "api_request"
    assert (line["method"], line["path"], line["status"], line["outcome"]) == (
        "POST",
        "/api/v1/usage",
        201,
        "ok",
    )
    assert line["company"] == "c0ffee00-0000-0000-0000-000000000000"
    assert line["api_key_prefix"] == "0123abcd"
    assert isinstance(line["duration_ms"], float)
    assert line["request_id"] == response["X-Request-ID"] == request.request_id
    assert "S3cr3t" not in json.dumps(line)
    assert request_id_var.get() is None  # reset after the request


def test_callers_request_id_is_honoured_and_junk_is_replaced(caplog):
    caplog.set_level(logging.INFO, logger="qg.requests")
    _, response = api_call(headers={"X-Request-ID": "abc-123"})
    assert response["X-Request-ID"] == "abc-123"
    _, response = api_call(headers={"X-Request-ID": 'bad "id"\nINJECTED'})
    assert response["X-Request-ID"] != 'bad "id"\nINJECTED'
    assert len(response["X-Request-ID"]) == 32
    assert [line["outcome"] for line in request_lines(caplog)] == ["ok", "ok"]


def test_error_statuses_are_logged_with_their_outcome(caplog):
    caplog.set_level(logging.INFO, logger="qg.requests")
    for status in (400, 429, 503):
        api_call(view=lambda req, s=status: HttpResponse(status=s))
    assert [line["outcome"] for line in request_lines(caplog)] == [
        "client_error",
        "rate_limited",
        "server_error",
    ]


def test_non_api_paths_are_not_logged(caplog):
    caplog.set_level(logging.INFO, logger="qg.requests")
    _, response = api_call(path="/billing/")
    assert request_lines(caplog) == [] and "X-Request-ID" not in response


@pytest.mark.django_db
def test_command_run_is_logged_with_outcome_duration_and_summary(caplog):
    caplog.set_level(logging.INFO, logger="qg.commands")
    call_command("schema_doctor", stdout=StringIO())
    [line] = [formatted(r) for r in caplog.records if r.name == "qg.commands"]
    assert (line["event"], line["command"], line["outcome"]) == (
        "command_run",
        "schema_doctor",
        "ok",
    )
    assert line["summary"] == {"findings": 0, "codes": []}
    assert line["duration_ms"] >= 0


@pytest.mark.django_db
def test_failed_command_is_logged_as_failed(caplog, tmp_path):
    caplog.set_level(logging.INFO, logger="qg.commands")
    with pytest.raises(CommandError):
        call_command("import_usage", str(tmp_path / "missing.csv"), stdout=StringIO())
    [line] = [formatted(r) for r in caplog.records if r.name == "qg.commands"]
    assert line["outcome"] == "failed" and "is not a file" in line["error"]
    assert line["level"] == "ERROR"


@pytest.mark.django_db
def test_ensure_admin_never_logs_the_generated_password(caplog):
    caplog.set_level(logging.INFO, logger="qg.commands")
    out = StringIO()
    call_command("ensure_admin", "--username", "root2", stdout=out)
    password = out.getvalue().rsplit("password: ", 1)[1].strip()
    logged = "".join(JsonFormatter().format(r) for r in caplog.records)
    assert "command_run" in logged and password not in logged

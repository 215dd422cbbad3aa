from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _import_settings(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG"}}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import config.settings as s; d = s.DATABASES['default']; "
            "print(d['ENGINE'], d['HOST'], d['NAME'], d['USER'])",
        ],
        cwd=ROOT,  # not tests/, whose ops/ and billing/ packages would shadow the apps
        env={**clean, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )


def test_refuses_to_start_without_secret_key_when_debug_is_off(tmp_path):
    # An empty SECRET_KEY in the environment wins over any .env file.
    result = _import_settings({"DEBUG": "0", "SECRET_KEY": ""})
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_debug_runs_fall_back_to_a_development_key():
    result = _import_settings({"DEBUG": "1", "SECRET_KEY": ""})
    assert result.returncode == 0, result.stderr


def test_database_url_unset_means_the_embedded_server_in_the_project_folder():
    # Its socket folder is the host: what bin/run and bin/test start (ops/embedded_pg.py).
    result = _import_settings({"DEBUG": "1", "DATABASE_URL": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        str(ROOT / ".pgdata"),
        "qg_billing",
        "postgres",
    ]


def test_database_url_set_is_used_as_given():
    url = "postgres://app:secret@db.example.com:6432/billing"
    result = _import_settings({"DEBUG": "1", "DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "django.db.backends.postgresql",
        "db.example.com",
        "billing",
        "app",
    ]

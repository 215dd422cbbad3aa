# Shared by bin/run and bin/test: a virtualenv with the pinned packages, a .env
# with a generated SECRET_KEY on first use (never committed), and the database:
# DATABASE_URL as given, or else the embedded PostgreSQL in .pgdata/
# (ops/embedded_pg.py), started here and stopped on exit if this run started it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python3
if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtualenv in $VENV"
    "$PYTHON_BIN" -m venv "$VENV"
fi
REQS="${REQS:-requirements.txt}"
STAMP="$VENV/.installed-$(cat requirements*.txt | sha256sum | cut -c1-16)-$(basename "$REQS")"
if [ ! -f "$STAMP" ]; then
    echo "==> installing $REQS"
    "$VENV/bin/pip" install --disable-pip-version-check -q -r "$REQS"
    touch "$STAMP"
fi
if [ ! -f .env ]; then
    echo "==> writing .env with a fresh SECRET_KEY"
    echo "SECRET_KEY=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(50))')" > .env
fi
PY="$VENV/bin/python"

# A DATABASE_URL in .env counts as set (settings read it from there).
if [ -z "${DATABASE_URL:-}" ] && ! grep -qsE '^(export )?DATABASE_URL=.' .env; then
    if "$PY" -m ops.embedded_pg status >/dev/null; then
        echo "==> using the embedded PostgreSQL already running in .pgdata/"
    else
        echo "==> starting the embedded PostgreSQL in .pgdata/"
        trap 'echo "==> stopping the embedded PostgreSQL"; "$PY" -m ops.embedded_pg stop' EXIT
    fi
    DATABASE_URL="$("$PY" -m ops.embedded_pg start)"
    export DATABASE_URL
fi

"""The one settings module. Everything that differs between machines comes from
the environment (or a `.env` file beside manage.py) through django-environ.

Development defaults are safe: with DEBUG off (the default) the app refuses to
start without a real SECRET_KEY; the HTTPS settings are off unless switched on
by their environment variables, so the same build runs on plain http locally
and behind a TLS proxy in production. docs/operations.md lists every variable.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from config.logging import logging_config
from ops import embedded_pg

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

_DEV_SECRET_KEY = "insecure-development-key-never-use-in-production"
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set it in the environment (or .env); "
            "only DEBUG=1 runs fall back to a development key."
        )
    SECRET_KEY = _DEV_SECRET_KEY

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "billing",
    "usage",
    "ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "ops.middleware.RequestLogMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# DATABASE_URL selects the database. Unset, it is the embedded PostgreSQL that
# bin/run and bin/test start in .pgdata/ (ops/embedded_pg.py), so `manage.py`
# reaches the demo's database while bin/run runs.
DATABASE_URL = env.str("DATABASE_URL", default="") or embedded_pg.database_url()
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# A read replica for the billing page's reports (config/routers.py): reads inside
# `use_replica()` go there while it is fresh; writes and migrations never do.
# Tests mirror it; the streaming-replica tests point it at the real standby.
REPLICA_DATABASE_URL = env.str("REPLICA_DATABASE_URL", default="")
# Past this replay lag (seconds), or when the replica does not answer, report
# pages read the primary; the replica is asked at most every REPLICA_CHECK_SECONDS.
REPLICA_MAX_LAG_SECONDS = env.float("REPLICA_MAX_LAG_SECONDS", default=5.0)
REPLICA_CHECK_SECONDS = env.float("REPLICA_CHECK_SECONDS", default=1.0)
if REPLICA_DATABASE_URL:
    DATABASES["replica"] = env.db_url_config(REPLICA_DATABASE_URL)
    DATABASES["replica"]["CONN_MAX_AGE"] = DATABASES["default"]["CONN_MAX_AGE"]
    DATABASES["replica"]["CONN_HEALTH_CHECKS"] = True
    # A replica that is down must cost a page a moment, not the OS's connect timeout.
    DATABASES["replica"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 2)
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["config.routers.ReplicaRouter"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/billing/"
LOGOUT_REDIRECT_URL = "login"

# --- HTTPS, switched on in production by the environment -------------------
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=SECURE_SSL_REDIRECT)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Email (billing alerts) --------------------------------------------------
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="billing@localhost")
if env.str("EMAIL_URL", default=""):
    vars().update(env.email_url("EMAIL_URL"))

# --- Cache (API rate limits); Redis in production ----------------------------
REDIS_URL = env.str("REDIS_URL", default="")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- Billing behaviour --------------------------------------------------------
# Draft usage still pending after this many days is marked abandoned by
# `manage.py reconcile_drafts` (still billed, still linkable).
DRAFT_ABANDON_AFTER_DAYS = env.int("DRAFT_ABANDON_AFTER_DAYS", default=30)
# An event may claim to have happened at most this far in the future.
USAGE_MAX_FUTURE_SKEW_SECONDS = env.int("USAGE_MAX_FUTURE_SKEW_SECONDS", default=300)
# The largest cost a caller may report for one generation, in the company's
# currency. Far above any LLM call; it keeps an absurd (or mistyped) figure from
# being billed, and the column sums (NUMERIC(28,12)) far from their limit.
USAGE_MAX_EVENT_COST = Decimal(env.str("USAGE_MAX_EVENT_COST", default="100000"))
# Single posts (POST /api/v1/usage) that a web process receives at the same
# moment are recorded in one transaction (usage/grouping.py); off: one each.
USAGE_GROUP_COMMIT = env.bool("USAGE_GROUP_COMMIT", default=True)
# Largest request body the API accepts, and the most events in one batch.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=2 * 1024 * 1024)
API_MAX_BATCH_EVENTS = env.int("API_MAX_BATCH_EVENTS", default=1000)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
# Requests per minute per API key (0 turns the limit off); counted in CACHES.
API_RATE_LIMIT_PER_MINUTE = env.int("API_RATE_LIMIT_PER_MINUTE", default=6000)

# One JSON object per line (config/logging.py); LOG_FORMAT=text for humans.
LOGGING = logging_config(
    level=env.str("LOG_LEVEL", default="INFO"),
    fmt=env.str("LOG_FORMAT", default="text" if DEBUG else "json"),
)

# --- Operations -----------------------------------------------------------------
# /healthz runs the full schema doctor at most this often (per cache).
SCHEMA_DOCTOR_CACHE_SECONDS = env.int("SCHEMA_DOCTOR_CACHE_SECONDS", default=300)

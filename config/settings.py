"""The one settings module. Everything that differs between machines comes from
the environment (or a `.env` file beside manage.py) through django-environ.

Development defaults are safe: with DEBUG off (the default) the app refuses to
start without a real SECRET_KEY; the HTTPS settings are off unless switched on
by their environment variables, so the same build runs on plain http locally
and behind a TLS proxy in production. docs/operations.md lists every variable.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from ops import embedded_pg
from ops.logging import logging_config

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
    "axes",
    "csp",
    # The interactive API docs load django-ninja's own Swagger UI files (no CDN).
    "ninja",
    "billing",
    "usage",
    "ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "ops.middleware.RequestLogMiddleware",
    "config.edge.RequestEdgeMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
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

AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out username and address before the password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

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
# Not redirected to https: /healthz (load balancers probe it over plain http)
# and /api/, which config.edge refuses over http in its error shape instead, so
# a client never follows a redirect that turns its POST into a GET.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^api(/|$)"]
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# Content-Security-Policy on every HTML page (django-csp): nothing but this
# site's own scripts, styles and images runs or loads; no inline script or style.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        # The admin's and Swagger UI's icons are data: URIs.
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Login throttling (django-axes) on /accounts/login/ and /admin/login/ ------
# A username is locked from one address after LOGIN_FAILURE_LIMIT wrong
# passwords, for LOGIN_LOCKOUT_MINUTES (any new failure meanwhile restarts
# the wait). Staff unlock in the admin (Axes > Access attempts: delete the row)
# or with `manage.py axes_reset_username USERNAME`.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# ops.logins writes the failed and locked-out logins as JSON events instead.
AXES_VERBOSE = False
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_USERNAME_CALLABLE = "ops.logins.attempted_username"
# Behind N reverse proxies the client's address is the Nth from the right of
# X-Forwarded-For and REMOTE_ADDR (ops.logins.client_address); with none it is
# REMOTE_ADDR. A wrong count lets a client choose its address, or locks a proxy.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
AXES_CLIENT_IP_CALLABLE = "ops.logins.client_address"

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
# How long a hold (POST /api/v1/reservations) counts when its request gives no
# ttl_seconds, and the longest it may ask for; past it the hold counts as released.
RESERVATION_DEFAULT_TTL_SECONDS = env.int("RESERVATION_DEFAULT_TTL_SECONDS", default=900)
RESERVATION_MAX_TTL_SECONDS = env.int("RESERVATION_MAX_TTL_SECONDS", default=86400)
# Largest request body the API accepts, and the most events in one batch.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=2 * 1024 * 1024)
API_MAX_BATCH_EVENTS = env.int("API_MAX_BATCH_EVENTS", default=1000)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
# The staff overview's platform totals are recomputed at most this often (seconds;
# 0 recomputes them on every view): over every company they cost a scan of two
# months of the daily rollup. Kept in CACHES.
PLATFORM_TOTALS_CACHE_SECONDS = env.int("PLATFORM_TOTALS_CACHE_SECONDS", default=60)

# Requests per minute per API key (0 turns the limit off); counted in CACHES.
API_RATE_LIMIT_PER_MINUTE = env.int("API_RATE_LIMIT_PER_MINUTE", default=6000)

# --- Reconciliation against the provider (docs/operations.md) ------------------
# A day and model matches when every token dimension differs by at most the
# larger of these (tokens, and percent of the provider's figure): exact by default.
PROVIDER_RECONCILE_TOKEN_TOLERANCE = env.int("PROVIDER_RECONCILE_TOKEN_TOLERANCE", default=0)
PROVIDER_RECONCILE_TOKEN_TOLERANCE_PERCENT = Decimal(
    env.str("PROVIDER_RECONCILE_TOKEN_TOLERANCE_PERCENT", default="0")
)
# USD per day and model; empty: the cost is shown, not judged (our prices are ours).
PROVIDER_RECONCILE_COST_TOLERANCE = env.str("PROVIDER_RECONCILE_COST_TOLERANCE", default="")
# Which of our model names are billed by which provider (besides every model
# the provider's own report names), and names that mean the same model
# ("alias=model,..."), applied before the snapshot date is dropped.
PROVIDER_OPENAI_MODEL_PREFIXES = env.list(
    "PROVIDER_OPENAI_MODEL_PREFIXES", default=["gpt-", "chatgpt-", "o1", "o3", "o4", "ft:gpt-"]
)
PROVIDER_ANTHROPIC_MODEL_PREFIXES = env.list(
    "PROVIDER_ANTHROPIC_MODEL_PREFIXES", default=["claude-"]
)
PROVIDER_MODEL_ALIASES = env.dict("PROVIDER_MODEL_ALIASES", default={})

# One JSON object per line (ops/logging.py); LOG_FORMAT=text for humans.
LOGGING = logging_config(
    level=env.str("LOG_LEVEL", default="INFO"),
    fmt=env.str("LOG_FORMAT", default="text" if DEBUG else "json"),
)

# --- Operations -----------------------------------------------------------------
# /healthz runs the full schema doctor at most this often (per cache).
SCHEMA_DOCTOR_CACHE_SECONDS = env.int("SCHEMA_DOCTOR_CACHE_SECONDS", default=300)

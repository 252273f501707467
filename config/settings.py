"""Redress settings: one file, driven by the environment.

With no environment at all this is the zero-setup default: SQLite under ``var/``, an embedded
(filesystem) Celery broker and a file cache, so ``make run`` needs neither PostgreSQL nor Redis.
Production sets ``DATABASE_URL`` (PostgreSQL), ``CELERY_BROKER_URL`` (Redis, also used as the
cache for throttling and API-key lookups), ``DJANGO_DEBUG=false``, ``DJANGO_SECRET_KEY`` and
``DJANGO_ALLOWED_HOSTS``.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("REDRESS_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = env_str(name)
    return int(value) if value is not None else default


def env_float(name: str, default: float) -> float:
    value = env_str(name)
    return float(value) if value is not None else default


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    value = env_str(name)
    if value is None:
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", True)

if DEBUG:
    SECRET_KEY = env_str("DJANGO_SECRET_KEY", "insecure-dev-only-key-do-not-use-in-production")
    ALLOWED_HOSTS = env_list(
        "DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"]
    )
else:
    # No defaults on purpose: a production deployment must choose both.
    SECRET_KEY = env_str("DJANGO_SECRET_KEY")
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")
    if not SECRET_KEY or not ALLOWED_HOSTS:
        raise ImproperlyConfigured(
            "With DJANGO_DEBUG off, DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS must be set."
        )

CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

# --- TLS (README "Production"): off by default, because the bench and local runs serve plain
# HTTP with DEBUG off; the documented production settings turn each on, and
# ``manage.py check --deploy`` is clean with them (tests/feedback/test_deploy_check.py).
# "HTTP_X_FORWARDED_PROTO=https": the header the TLS-terminating proxy sets, and its value.
_proxy_header = env_str("DJANGO_SECURE_PROXY_SSL_HEADER", "") or ""
if _proxy_header:
    _name, _, _value = _proxy_header.partition("=")
    if not _name.startswith("HTTP_") or not _value:
        raise ImproperlyConfigured(
            "DJANGO_SECURE_PROXY_SSL_HEADER is HTTP_<HEADER>=<value>, "
            "e.g. HTTP_X_FORWARDED_PROTO=https."
        )
    SECURE_PROXY_SSL_HEADER = (_name, _value)
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # a load balancer's plain-HTTP probe
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    # No rest_framework.authtoken: personal tokens are hashed (feedback.PersonalToken, whose
    # migration 0005 hashed and removed the plain ones).
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc served from our static files, no CDN
    "corsheaders",  # browser feedback tokens: per-project origins (feedback/api/cors.py)
    "feedback",
    "labeling",
    "monitoring",
    "webhooks",
]

MIDDLEWARE = [
    # CORS for the feedback-token endpoints only, per project (feedback/api/cors.py). First, so
    # that it answers preflights and sees every response, the intake lane's too.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Bodies sent chunked (no Content-Length) are read, up to the limit, for every view.
    "feedback.api.middleware.ChunkedBody",
    # API-key POSTs to the intake views are answered here; the rest goes on down the chain.
    # Only the four browser middleware may follow (system check redress.E001).
    "feedback.api.middleware.KeyRequestFastLane",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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

# --- Database --------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'redress.sqlite3'}",
        conn_max_age=env_int("DJANGO_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while the worker writes; IMMEDIATE transactions take the
    # write lock up front so two writers wait for each other instead of failing mid-way.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )
    DATABASES["default"]["CONN_MAX_AGE"] = 0
else:
    # Prepared statements: psycopg's threshold for queries that ask for one, and the switch for
    # the single-feedback INSERT, prepared once per connection unless this is off
    # (feedback/services/intake.py). Django's own cursors bind on the client and are never
    # prepared. Behind PgBouncer in transaction mode, set max_prepared_statements there or this
    # to -1 (off: the INSERT is sent unnamed).
    _prepare_threshold = env_int("DJANGO_DB_PREPARE_THRESHOLD", 5)
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
        None if _prepare_threshold < 0 else _prepare_threshold
    )
    # One test database per test process, so parallel runs on one server never collide.
    DATABASES["default"]["TEST"] = {
        "NAME": env_str("DJANGO_TEST_DB_NAME", f"test_{DATABASES['default']['NAME']}_{os.getpid()}")
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (API-key lookups, throttling) -----------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
CACHE_URL = env_str(
    "CACHE_URL",
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else None,
)
# Redis may stop or freeze: the request path then answers from the database and counts rates
# per process (feedback/redis_cache.py). A command waits at most this long (seconds; connect and
# read alike, no retries), and after a failure a process leaves Redis alone this long.
REDRESS_REDIS_TIMEOUT = env_float("REDRESS_REDIS_TIMEOUT", 0.05)
REDRESS_REDIS_RETRY_SECONDS = env_float("REDRESS_REDIS_RETRY_SECONDS", 3.0)
if CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "feedback.redis_cache.ResilientRedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", "redress"),
            "OPTIONS": {
                "socket_connect_timeout": REDRESS_REDIS_TIMEOUT,
                "socket_timeout": REDRESS_REDIS_TIMEOUT,
            },
        }
    }
else:
    # A file cache is shared by every process on the machine (web, worker), unlike locmem, so
    # revoking a key or counting a rate works the same in the embedded default.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# --- Celery ----------------------------------------------------------------------------------
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # a worker that dies mid-task leaves the message for another
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 3600)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 3300)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_TIMEZONE = "UTC"
# A Redis broker that freezes or vanishes without closing the connection would otherwise hold
# a publish (an enqueue after commit, in a request) forever: bound each command, and the
# connection attempt. Celery retries a publish 3 times before it raises.
REDRESS_BROKER_TIMEOUT = env_float("REDRESS_BROKER_TIMEOUT", 1.0)
CELERY_BROKER_CONNECTION_TIMEOUT = REDRESS_BROKER_TIMEOUT
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "socket_timeout": REDRESS_BROKER_TIMEOUT,
        "socket_connect_timeout": REDRESS_BROKER_TIMEOUT,
    }
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "celery-broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
# Periodic work. Every entry is a safety net or a schedule; nothing depends on it for correctness.
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "queues-schedule": {"task": "labeling.tasks.queues_schedule_task", "schedule": 60.0},
    "sampling-runs-recover": {
        "task": "labeling.tasks.sampling_runs_recover_task",
        "schedule": 300.0,
    },
    "leases-expire": {"task": "labeling.tasks.leases_expire_task", "schedule": 60.0},
    "exports-recover": {"task": "labeling.tasks.exports_recover_task", "schedule": 300.0},
    "audits-recover": {"task": "labeling.tasks.audits_recover_task", "schedule": 300.0},
    # Rollups first, then the alert rules over them (the alert task folds before it reads).
    "alerts-evaluate": {"task": "monitoring.tasks.alerts_evaluate_task", "schedule": 60.0},
    "webhooks-sweep": {"task": "webhooks.tasks.webhooks_sweep_task", "schedule": 60.0},
    "labels-ready": {"task": "labeling.tasks.labels_ready_task", "schedule": 60.0},
    # Tasks a broker outage refused (see labeling.enqueue): sent within a minute of its return.
    "unsent-tasks-send": {"task": "labeling.tasks.unsent_tasks_send_task", "schedule": 60.0},
}
# Rollups fold only rows older than this: a row's id is given at INSERT but seen at COMMIT, so
# a concurrent transaction can commit a smaller id after a larger one (see monitoring/rollups).
REDRESS_ROLLUP_LAG_SECONDS = env_int("REDRESS_ROLLUP_LAG_SECONDS", 60)
# Promotion to a gold set needs at least this share of an item's labels to agree with its
# consensus (0.66: two reviewers of three); a request may ask for a stricter or looser bar.
REDRESS_GOLD_MIN_AGREEMENT = env_float("REDRESS_GOLD_MIN_AGREEMENT", 0.66)
# A sampling run pending or running longer than this was lost (broker outage, dead worker).
REDRESS_SAMPLING_STALE_SECONDS = env_int("REDRESS_SAMPLING_STALE_SECONDS", 900)
# An export still running after this was lost with its worker: past the hard time limit no
# build can still be alive, so the sweep never takes one over.
REDRESS_EXPORT_STALE_SECONDS = env_int("REDRESS_EXPORT_STALE_SECONDS", CELERY_TASK_TIME_LIMIT + 300)
# An audit still running after this was lost with its worker (same reasoning as exports).
REDRESS_AUDIT_STALE_SECONDS = env_int("REDRESS_AUDIT_STALE_SECONDS", CELERY_TASK_TIME_LIMIT + 300)
# Exports larger than this fail instead of filling the disk (bytes; unset: no limit).
REDRESS_EXPORT_MAX_BYTES = env_int("REDRESS_EXPORT_MAX_BYTES", 0) or None
# On PostgreSQL, JSON-lines and Parquet exports read committed rows as Arrow columns through
# ADBC (binary COPY on connections of their own); off: psycopg COPY text on Django's connection
# settings, e.g. for a pooler that ADBC's libpq connections cannot reach.
REDRESS_EXPORT_ARROW_READER = env_bool("REDRESS_EXPORT_ARROW_READER", True)
# Audits of at most this many rows are computed in the request (201); larger ones by a worker.
REDRESS_AUDIT_INLINE_ROWS = env_int("REDRESS_AUDIT_INLINE_ROWS", 20_000)

# --- Webhooks (webhooks/) ---------------------------------------------------------------------
# Seconds between a failed attempt and the next (with ±20% jitter); after the last, failed.
_WEBHOOK_RETRIES_DEFAULT = ["5", "300", "1800", "7200", "18000", "36000"]
REDRESS_WEBHOOK_RETRY_SECONDS = [
    float(s) for s in env_list("REDRESS_WEBHOOK_RETRY_SECONDS", _WEBHOOK_RETRIES_DEFAULT)
]
# Connect and read timeout of one attempt (seconds).
REDRESS_WEBHOOK_TIMEOUT = env_float("REDRESS_WEBHOOK_TIMEOUT", 10.0)
# Deliver to private, loopback and link-local addresses (tests, local development only).
REDRESS_WEBHOOK_ALLOW_PRIVATE = env_bool("REDRESS_WEBHOOK_ALLOW_PRIVATE", False)
# An endpoint whose every attempt failed for this long is disabled and its admins emailed.
REDRESS_WEBHOOK_DISABLE_AFTER_SECONDS = env_int("REDRESS_WEBHOOK_DISABLE_AFTER_SECONDS", 86400)
# Outbox events (and their delivery logs) older than this are deleted by the sweep; 0 keeps all.
REDRESS_WEBHOOK_RETENTION_DAYS = env_int("REDRESS_WEBHOOK_RETENTION_DAYS", 30)
# Prefix of links in webhook payloads (an export's download_url), e.g. https://redress.example.com
REDRESS_PUBLIC_URL = (env_str("REDRESS_PUBLIC_URL", "") or "").rstrip("/")
# Mail (endpoints disabled, later alerts): the console by default, SMTP in production.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "redress@localhost")

# --- Auth, i18n, static ----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(VAR_DIR / "media")},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
LOGIN_URL = "admin:login"

# 1 MiB request bodies at most (DESIGN.md limits); larger ones are refused with 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024

# --- REST framework --------------------------------------------------------------------------
REDRESS_INGEST_RATE = env_str("REDRESS_INGEST_RATE", "600/minute")
# Most requests an intake process takes from a key's rate at once (feedback/api/throttling.py);
# only keys allowed 1,000 or more per window take more than one. 1 turns leases off.
REDRESS_INGEST_LEASE = env_int("REDRESS_INGEST_LEASE", 50)
# Browser feedback tokens (feedback/api/token_grant.py): requests per token, and per end user
# of a project whatever token they hold. 429 with Retry-After past either.
REDRESS_FEEDBACK_TOKEN_RATE = env_str("REDRESS_FEEDBACK_TOKEN_RATE", "30/minute")
REDRESS_FEEDBACK_END_USER_RATE = env_str("REDRESS_FEEDBACK_END_USER_RATE", "60/minute")

# CORS (django-cors-headers): no origin is allowed globally. Only the token endpoints can
# answer with CORS headers, and only to an origin a project lists (Project.allowed_origins,
# checked by the signal handler in feedback/api/cors.py). Key-authenticated requests never do.
CORS_ALLOWED_ORIGINS: list[str] = []
CORS_ALLOW_ALL_ORIGINS = False
CORS_ALLOW_CREDENTIALS = False  # tokens travel in a header, never with cookies
# corsheaders turns itself on for a request when CORS_URLS_REGEX matches *or* its signal says so.
# The signal alone decides here (the regex matches nothing), so that a request it refuses (a
# key's, any other path) goes through untouched, without even a ``Vary: Origin``.
CORS_URLS_REGEX = r"^(?!)"
# The paths a feedback token may call from a browser: the only ones that may get CORS headers.
REDRESS_TOKEN_CORS_PATHS = r"^/api/v1/(feedback|categories|disputes/[0-9]+)$"
CORS_ALLOW_METHODS = ("GET", "POST", "OPTIONS")
CORS_ALLOW_HEADERS = ("authorization", "content-type", "idempotency-key")
CORS_EXPOSE_HEADERS = ("Retry-After",)  # the widget backs off as told
CORS_PREFLIGHT_MAX_AGE = 600

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "feedback.api.auth.ApiKeyAuthentication",
        "feedback.api.token_auth.PersonalTokenAuthentication",
        "feedback.api.token_grant.FeedbackTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["feedback.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_PARSER_CLASSES": ["feedback.api.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "feedback.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Redress API",
    "DESCRIPTION": (
        "Human feedback and labeling for AI products in production. End-user apps authenticate "
        "with `Authorization: Bearer <project API key>`; people with `Authorization: Token "
        '<token>`. Every 4xx body is `{"errors": [{"field", "code", "detail"}]}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # /api/docs/ and /api/redoc/ load their scripts from Redress itself, so they work offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "ENUM_NAME_OVERRIDES": {
        "DisputeStatusEnum": "feedback.models.Feedback.DisputeStatus",
        "BatchItemStatusEnum": "feedback.api.serializers.BATCH_ITEM_STATUS_CHOICES",
        "RatingEnum": "feedback.api.serializers.RATING_CHOICES",
        "JobStatusEnum": "labeling.models.Audit.Status",  # audits and sampling runs alike
        # Two "format" fields (exports, webhooks): each choice set named, the export's as before.
        "FormatEnum": "labeling.models.Export.Format",
        "WebhookFormatEnum": "webhooks.models.Webhook.Format",
        "WebhookDeliveryStatusEnum": "webhooks.models.WebhookDelivery.Status",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "feedback.api.schema.intake_postprocess",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}

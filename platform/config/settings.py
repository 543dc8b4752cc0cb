"""Django settings, read from environment variables only.

With nothing set, a fresh checkout runs on embedded defaults: an embedded
PostgreSQL (see `dbenv`), Celery's broker on that same Postgres via kombu's
SQLAlchemy transport (no broker server needed), and local artifact storage
under var/. Production sets DATABASE_URL, CELERY_BROKER_URL (e.g. Redis),
SECRET_KEY and DEBUG=false.
"""

from __future__ import annotations

import json
from pathlib import Path

from celery.schedules import crontab
from rewards.schedule import beat_schedule as rewards_beat_schedule  # a plain module: no models

import dbenv

from .env import ImproperlyConfiguredEnv, envbool, envint, envlist, envstr


def envjson(name: str, default: str = ""):
    """A JSON value from the environment ({} / "" when unset)."""
    raw = envstr(name, default)
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ImproperlyConfiguredEnv(f"{name} must be JSON, got {raw!r} ({exc})") from None


BASE_DIR = Path(__file__).resolve().parent.parent.parent  # the checkout
VAR_DIR = dbenv.var_dir()

DEBUG = envbool("DEBUG", True)
SECRET_KEY = envstr("SECRET_KEY") or ("dev-only-insecure-key" if DEBUG else "")
if not SECRET_KEY:
    raise RuntimeError("SECRET_KEY must be set when DEBUG is false")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "ninja",  # serves Swagger UI's assets itself: /api/v1/docs must work offline
    "ops",
    "registry",
    "audits",
    "api",
    "console",
    "rewards",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (the console's CSS/JS, Swagger UI) straight from gunicorn: no proxy needed to get a styled console.
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
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASE_URL = dbenv.database_url()
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        **dbenv.parse(DATABASE_URL),
        # Persistent connections: with 0, Django (and Celery's Django fixup after every task)
        # closes the connection, so each request and each task paid for a new Postgres backend.
        "CONN_MAX_AGE": envint("DB_CONN_MAX_AGE", 60),
        "CONN_HEALTH_CHECKS": True,  # a connection the server dropped is replaced, not used
        "TEST": {"NAME": envstr("TEST_DATABASE_NAME") or None},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(envstr("STATIC_ROOT") or VAR_DIR / "static")
# Without `collectstatic` (make demo, tests) whitenoise finds files in the apps' static/ folders.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every start when it is missing

# Artifacts (round snapshots, reports, exports) go through Django's storage API.
# Local filesystem by default; any storage backend (e.g. django-storages' S3) can
# be selected with ARTIFACT_STORAGE_BACKEND + ARTIFACT_STORAGE_OPTIONS (JSON), e.g.
#   ARTIFACT_STORAGE_BACKEND=storages.backends.s3.S3Storage
#   ARTIFACT_STORAGE_OPTIONS='{"bucket_name": "protoken", "endpoint_url": "http://minio:9000"}'
# (after `pip install django-storages[s3]`). Workers then copy a round to
# ARTIFACT_CACHE_DIR before loading it; nothing else changes.
ARTIFACT_ROOT = Path(envstr("ARTIFACT_ROOT") or VAR_DIR / "artifacts")
_ARTIFACT_BACKEND = envstr("ARTIFACT_STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "artifacts": {
        "BACKEND": _ARTIFACT_BACKEND,
        "OPTIONS": envjson("ARTIFACT_STORAGE_OPTIONS", "")
        or ({"location": str(ARTIFACT_ROOT)} if _ARTIFACT_BACKEND.endswith("FileSystemStorage") else {}),
    },
}

# Celery. No CELERY_BROKER_URL -> kombu's SQLAlchemy transport on our own Postgres,
# so a real worker process runs with no broker server.
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL") or dbenv.with_scheme(DATABASE_URL, "sqla+postgresql+psycopg")
CELERY_RESULT_BACKEND = envstr("CELERY_RESULT_BACKEND") or dbenv.with_scheme(DATABASE_URL, "db+postgresql+psycopg")
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# kombu's SQLAlchemy transport hands every transport option to create_engine(), which
# refuses `polling_interval`; config.broker gives it BROKER_POLL_MS instead.
CELERY_BROKER_TRANSPORT_OPTIONS = {} if CELERY_BROKER_URL.startswith("sqla+") else {"polling_interval": 0.2}
BROKER_POLL_MS = envint("BROKER_POLL_MS", 100)
if not 10 <= BROKER_POLL_MS <= 60_000:
    raise ImproperlyConfiguredEnv(f"BROKER_POLL_MS must be in 10..60000 milliseconds, got {BROKER_POLL_MS}")
CELERY_TASK_ROUTES = {"audits.*": {"queue": "attribution"}}
CELERY_RESULT_EXTENDED = True

# Console sign-in (django.contrib.auth sessions).
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:overview"
LOGOUT_REDIRECT_URL = "console:login"

# Audit reports: beat builds every federation's previous AUDIT_REPORT_PERIOD_DAYS days
# on the AUDIT_REPORT_CRON schedule (5 cron fields, UTC; default Mondays 03:00).
AUDIT_REPORT_PERIOD_DAYS = envint("AUDIT_REPORT_PERIOD_DAYS", 7)
AUDIT_REPORT_CRON = envstr("AUDIT_REPORT_CRON", "0 3 * * 1")
if len(AUDIT_REPORT_CRON.split()) != 5 or not 1 <= AUDIT_REPORT_PERIOD_DAYS <= 366:
    raise ImproperlyConfiguredEnv(
        f"AUDIT_REPORT_CRON must be 5 cron fields (got {AUDIT_REPORT_CRON!r}) and "
        f"AUDIT_REPORT_PERIOD_DAYS 1..366 (got {AUDIT_REPORT_PERIOD_DAYS})"
    )
_cron = dict(zip(("minute", "hour", "day_of_month", "month_of_year", "day_of_week"), AUDIT_REPORT_CRON.split(), strict=True))
CELERY_BEAT_SCHEDULE = {
    "console-period-reports": {"task": "console.build_period_reports", "schedule": crontab(**_cron)},
}
# Settlement of every active reward plan's previous period (rewards/schedule.py); "" turns it off.
CELERY_BEAT_SCHEDULE.update(rewards_beat_schedule(envstr("REWARDS_SETTLE_CRON", "15 0 * * *")))

ATTRIBUTION_DEVICE = envstr("ATTRIBUTION_DEVICE", "cpu")
ROUND_CACHE_BYTES = envint("ROUND_CACHE_BYTES", 4 * 1024**3)
MAX_UPLOAD_BYTES = envint("MAX_UPLOAD_BYTES", 2 * 1024**3)
# A round archive may not unpack to more than this (guards against archive bombs).
MAX_EXTRACTED_BYTES = envint("MAX_EXTRACTED_BYTES", 4 * MAX_UPLOAD_BYTES)
# Uploads stream to temporary files and stop as soon as they pass MAX_UPLOAD_BYTES.
FILE_UPLOAD_HANDLERS = ["registry.uploads.LimitedUploadHandler"]
FILE_UPLOAD_TEMP_DIR = envstr("FILE_UPLOAD_TEMP_DIR") or None
# Where a worker keeps local copies of rounds whose storage backend has no local path (e.g. S3).
ARTIFACT_CACHE_DIR = Path(envstr("ARTIFACT_CACHE_DIR") or VAR_DIR / "artifact-cache")
# Attribution engine configuration (JSON object of AttributionConfig fields); {} = the engine's defaults.
ATTRIBUTION_CONFIG = envjson("ATTRIBUTION_CONFIG", "{}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "WARNING")},
}

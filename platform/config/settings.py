"""Django settings, read from environment variables only.

With nothing set, a fresh checkout runs on embedded defaults: an embedded
PostgreSQL (see `dbenv`), Celery's broker on that same Postgres via kombu's
SQLAlchemy transport (no broker server needed), and local artifact storage
under var/. Production sets DATABASE_URL, CELERY_BROKER_URL (e.g. Redis),
SECRET_KEY and DEBUG=false.
"""

from __future__ import annotations

from pathlib import Path

import dbenv

from .env import envbool, envint, envlist, envstr

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
    "ops",
    "registry",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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
        "CONN_MAX_AGE": envint("DB_CONN_MAX_AGE", 0),
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

# Artifacts (round snapshots, reports, exports) go through Django's storage API.
# Local filesystem by default; any storage backend (e.g. django-storages' S3) can
# be selected with ARTIFACT_STORAGE_BACKEND + ARTIFACT_STORAGE_OPTIONS (JSON).
ARTIFACT_ROOT = Path(envstr("ARTIFACT_ROOT") or VAR_DIR / "artifacts")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "artifacts": {
        "BACKEND": envstr("ARTIFACT_STORAGE_BACKEND", "django.core.files.storage.FileSystemStorage"),
        "OPTIONS": {"location": str(ARTIFACT_ROOT)},
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
CELERY_BROKER_TRANSPORT_OPTIONS = {"polling_interval": 0.2}
CELERY_TASK_ROUTES = {"audits.*": {"queue": "attribution"}}
CELERY_RESULT_EXTENDED = True

ATTRIBUTION_DEVICE = envstr("ATTRIBUTION_DEVICE", "cpu")
ROUND_CACHE_BYTES = envint("ROUND_CACHE_BYTES", 4 * 1024**3)
MAX_UPLOAD_BYTES = envint("MAX_UPLOAD_BYTES", 2 * 1024**3)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "WARNING")},
}

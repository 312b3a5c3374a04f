"""The demo project: SQLite and LocMem with zero setup; django-redis when REDIS_URL is set,
PostgreSQL when DJANGO_DB_ENGINE=postgresql."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-demo-key-only-for-the-testproject")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "ratelimit_tiers",
    "testproject",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "ratelimit_tiers.middleware.RateLimitHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"
WSGI_APPLICATION = "testproject.wsgi.application"

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
            ],
        },
    },
]

# SQLite by default; DJANGO_DB_ENGINE=postgresql for PostgreSQL (psycopg 3), where DJANGO_DB names
# the database and DJANGO_DB_HOST (a host or a socket directory), _PORT, _USER and _PASSWORD reach it.
DATABASES: dict[str, dict[str, Any]]
if os.environ.get("DJANGO_DB_ENGINE", "sqlite3") == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("DJANGO_DB", "ratelimit_tiers"),
            "HOST": os.environ.get("DJANGO_DB_HOST", ""),
            "PORT": os.environ.get("DJANGO_DB_PORT", ""),
            "USER": os.environ.get("DJANGO_DB_USER", ""),
            "PASSWORD": os.environ.get("DJANGO_DB_PASSWORD", ""),
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DJANGO_DB", str(BASE_DIR / "db.sqlite3")),
            "OPTIONS": {"timeout": 20},
        }
    }

REDIS_URL = os.environ.get("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.1, "SOCKET_TIMEOUT": 0.1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # The demo runs as one process, where LocMem is exact; say so instead of warning.
    SILENCED_SYSTEM_CHECKS = ["ratelimit_tiers.W001"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["ratelimit_tiers.authentication.APIKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["ratelimit_tiers.throttling.TierRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "ratelimit_tiers.openapi.AutoSchema",
    # A JSON API: its schema offers JSON bodies only (schemathesis's in-process transport
    # also crashes on some generated multipart bodies).
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}


def env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in {"1", "true", "yes", "on"}


# The demo can show both: RATELIMIT_TIERS_IETF_HEADERS=1 scripts/demo, RATELIMIT_TIERS_FAIL_OPEN=0 ...
RATELIMIT_TIERS_IETF_HEADERS = env_flag("RATELIMIT_TIERS_IETF_HEADERS", False)
RATELIMIT_TIERS_FAIL_OPEN = env_flag("RATELIMIT_TIERS_FAIL_OPEN", True)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"ratelimit_tiers": {"handlers": ["console"], "level": "INFO"}},
}

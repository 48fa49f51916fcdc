"""Settings of the django-llmstream demo site, read from environment variables.

The variables are those of PROTOCOL.md ("Mounting"): with none set, the site runs offline on
the ``demo`` provider with SQLite and the in-memory broker. Not a production configuration.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

PROJECT_DIR = Path(__file__).resolve().parent.parent  # testproject/

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str = "") -> str:
    """The variable's value without surrounding blanks; unset or blank gives ``default``."""
    return os.environ.get(name, "").strip() or default


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name).lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not on/off (or true/false, 1/0, yes/no).")


def env_float(name: str, default: float) -> float:
    value = env_str(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number of seconds.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list, blanks dropped."""
    items = [item.strip() for item in env_str(name).split(",")]
    return [item for item in items if item] or list(default)


# -- core ----------------------------------------------------------------------------------

# Every worker of one site must share the key. The "django-insecure-" prefix makes
# `check --deploy` flag the default.
SECRET_KEY = env_str(
    "DJANGO_SECRET_KEY", "django-insecure-llmstream-demo-key-do-not-use-in-production"
)
DEBUG = env_bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
# Not in PROTOCOL.md's table: lets a DEBUG-off benchmark run still serve the chat page's
# static files from the ASGI app (see asgi.py).
SERVE_STATIC = env_bool("DJANGO_SERVE_STATIC", DEBUG)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",  # htmx and its SSE extension for the /htmx/ page
    "django_llmstream",
]

MIDDLEWARE = [
    # First, so that it wraps every response: PROTOCOL.md requires the event streams to
    # arrive event by event behind GZipMiddleware, and the demo proves it.
    "django.middleware.gzip.GZipMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"
ASGI_APPLICATION = "testproject.asgi.application"
WSGI_APPLICATION = "testproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [PROJECT_DIR / "templates"],
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

# -- database ------------------------------------------------------------------------------

DATABASES = {
    "default": dj_database_url.config(
        env="DATABASE_URL", default=f"sqlite:///{PROJECT_DIR / 'db.sqlite3'}"
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Many streams write at once (batched transcript flushes, new turns): WAL lets readers
    # and a writer work together, IMMEDIATE transactions take the write lock up front instead
    # of failing with "database is locked" on upgrade, and the timeout lets writers queue.
    _sqlite_options: dict[str, Any] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["OPTIONS"] = {**_sqlite_options, **DATABASES["default"].get("OPTIONS", {})}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
    "DJANGO_DB_POOL", True
):
    # Under ASGI every request's sync work runs in a thread of its own, so without a pool
    # each request opens (and closes) a PostgreSQL connection. Django's pool (psycopg_pool,
    # the "demo" extra) hands them out instead. DJANGO_DB_POOL=off to compare.
    try:
        import psycopg_pool  # noqa: F401
    except ImportError:
        pass
    else:
        DATABASES["default"]["OPTIONS"] = {
            "pool": {"min_size": 2, "max_size": 20, "timeout": 10},
            **DATABASES["default"].get("OPTIONS", {}),
        }

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

STATIC_URL = "/static/"
STATICFILES_DIRS = [PROJECT_DIR / "static"]
STATIC_ROOT = PROJECT_DIR / "staticfiles"

LOGIN_URL = "admin:login"

# -- django-llmstream ----------------------------------------------------------------------

# Example prices, in dollars per million tokens, for models the site may allow.
_OPENAI_PRICES = {
    "gpt-4o-mini": {"input": "0.15", "output": "0.60", "cached_input": "0.075"},
}


def _provider(
    backend: str,
    *,
    base_url: str,
    api_key: str,
    models: list[str],
    prices: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """One ``PROVIDERS`` entry; the API key only when set (local servers need none)."""
    entry: dict[str, Any] = {"BACKEND": backend, "BASE_URL": base_url, "MODELS": models}
    if api_key:
        entry["API_KEY"] = api_key
    known = {model: price for model, price in (prices or {}).items() if model in models}
    if known:
        entry["PRICES"] = known
    return entry


PROVIDERS: dict[str, dict[str, Any]] = {}

# OpenAI or any compatible server: a base URL alone is enough, as is a key alone.
if env_str("OPENAI_BASE_URL") or env_str("OPENAI_API_KEY"):
    _openai_api = env_str("OPENAI_API", "chat").lower()
    _openai_backends = {
        "chat": "django_llmstream.providers.openai.OpenAIProvider",
        "responses": "django_llmstream.providers.openai_responses.OpenAIResponsesProvider",
    }
    if _openai_api not in _openai_backends:
        raise ImproperlyConfigured(f"OPENAI_API={_openai_api!r} must be 'chat' or 'responses'.")
    PROVIDERS["openai"] = _provider(
        _openai_backends[_openai_api],
        base_url=env_str("OPENAI_BASE_URL", "https://api.openai.com/v1"),
        api_key=env_str("OPENAI_API_KEY"),
        models=env_list("OPENAI_MODEL", ["gpt-4o-mini"]),
        prices=_OPENAI_PRICES,
    )

# Anthropic: the base URL is the host without /v1, as in the Anthropic SDKs.
if env_str("ANTHROPIC_BASE_URL") or env_str("ANTHROPIC_API_KEY"):
    PROVIDERS["anthropic"] = _provider(
        "django_llmstream.providers.anthropic.AnthropicProvider",
        base_url=env_str("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
        api_key=env_str("ANTHROPIC_API_KEY"),
        models=env_list("ANTHROPIC_MODEL", ["claude-sonnet-4-5"]),
    )

# Ollama: the base URL is the host without /api; it takes no key.
if env_str("OLLAMA_BASE_URL") or env_str("OLLAMA_MODEL"):
    PROVIDERS["ollama"] = _provider(
        "django_llmstream.providers.ollama.OllamaProvider",
        base_url=env_str("OLLAMA_BASE_URL", "http://127.0.0.1:11434"),
        api_key="",
        models=env_list("OLLAMA_MODEL", ["llama3.2"]),
    )

# Offline and deterministic: always there, so the site runs with nothing configured.
PROVIDERS["demo"] = {
    "BACKEND": "django_llmstream.providers.demo.DemoProvider",
    "OPTIONS": {"DELAY": 0.03},
}

LLMSTREAM: dict[str, Any] = {
    "PROVIDERS": PROVIDERS,
    # An unknown name fails `manage.py check` (llmstream.E005) with the list of providers.
    "DEFAULT_PROVIDER": env_str(
        "LLMSTREAM_DEFAULT_PROVIDER", "openai" if "openai" in PROVIDERS else "demo"
    ),
    "ALLOW_ANONYMOUS": True,
    "IDLE_TIMEOUT": env_float("LLMSTREAM_IDLE_TIMEOUT", 60),
    "HEARTBEAT_SECONDS": env_float("LLMSTREAM_HEARTBEAT", 15),
    "ON_DISCONNECT": env_str("LLMSTREAM_ON_DISCONNECT", "cancel").lower(),
    "DISCONNECT_GRACE_SECONDS": env_float("LLMSTREAM_DISCONNECT_GRACE", 10),
}
if env_str("REDIS_URL"):
    # Several workers or hosts: events, replay and stop signals travel through Redis.
    LLMSTREAM["BROKER"] = {
        "BACKEND": "django_llmstream.brokers.redis.RedisBroker",
        "LOCATION": env_str("REDIS_URL"),
    }

# LLMSTREAM_LIMITS=off switches off the per-user and per-visitor quotas and rate limits (for
# benchmarks and load tests).
LLMSTREAM_LIMITS_ENABLED = env_bool("LLMSTREAM_LIMITS", True)
LLMSTREAM["LIMITS"] = (
    {
        "CONCURRENT_TURNS_PER_OWNER": 4,
        "REQUESTS_PER_MINUTE": 30,
        "TOKENS_PER_DAY": 1_000_000,
        "CACHE": "default",
    }
    if LLMSTREAM_LIMITS_ENABLED
    else {}  # every limit None: off
)
# REQUESTS_PER_MINUTE is counted in the cache, which all workers must share: Redis when the
# site runs several workers (REDIS_URL), else the default per-process cache of the single
# process that the memory broker implies anyway (so its warning, W030, does not apply).
if env_str("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env_str("REDIS_URL"),
            "KEY_PREFIX": "llmstream-demo",
        }
    }
else:
    SILENCED_SYSTEM_CHECKS = ["llmstream.W030"]

# -- logging -------------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"llmstream_console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # Django's own loggers keep Django's defaults.
    "loggers": {
        "django_llmstream": {
            "handlers": ["llmstream_console"],
            "level": "INFO",
            "propagate": False,
        },
    },
}

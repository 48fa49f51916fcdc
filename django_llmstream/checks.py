"""System checks: a misconfigured ``LLMSTREAM`` fails at start-up, never mid-stream.

Ids: ``llmstream.E001``… for errors, ``llmstream.W001``… for warnings. Each provider and the
broker contribute their own ``check()`` (E006-E011 and E017 come from providers).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

from django.conf import settings
from django.core import checks

from django_llmstream.conf import DEFAULTS, app_settings

__all__ = ["check_settings", "register"]

_W = 'LLMSTREAM["{}"]'

# Setting -> (smallest allowed, whether None is allowed).
_NUMBERS: dict[str, tuple[float, bool]] = {
    "BROKER_TTL_SECONDS": (0, False),
    "LEASE_SECONDS": (1, False),
    "SHUTDOWN_DRAIN_SECONDS": (0, False),
    "HEARTBEAT_SECONDS": (0.001, False),
    "RETRY_MS": (0, False),
    "FLUSH_INTERVAL": (0.001, False),
    "DISCONNECT_GRACE_SECONDS": (0, False),
    "CONNECT_TIMEOUT": (0.001, False),
    "IDLE_TIMEOUT": (0.001, False),
    "TOTAL_TIMEOUT": (0.001, True),
    "MAX_RETRIES": (0, False),
    "RETRY_BACKOFF": (0, False),
    "MAX_CONNECTIONS": (1, False),
    "MAX_UPSTREAM_EVENT_BYTES": (1024, False),
    "MAX_OUTPUT_CHARS": (1, True),
    "CONTEXT_BUDGET": (1, True),
    "MAX_PROMPT_CHARS": (1, False),
    "MAX_BODY_BYTES": (1, False),
    "PAGE_SIZE": (1, False),
}
_INTEGERS = {
    "RETRY_MS",
    "MAX_RETRIES",
    "MAX_CONNECTIONS",
    "MAX_UPSTREAM_EVENT_BYTES",
    "MAX_OUTPUT_CHARS",
    "CONTEXT_BUDGET",
    "MAX_PROMPT_CHARS",
    "MAX_BODY_BYTES",
    "PAGE_SIZE",
}


def register() -> None:
    checks.register(check_settings, "llmstream")


def check_settings(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    raw = getattr(settings, "LLMSTREAM", {})
    if not isinstance(raw, Mapping):
        return [
            checks.Error(
                "LLMSTREAM must be a dict.",
                hint="Set LLMSTREAM = {...} in your settings, or remove it to use the defaults.",
                id="llmstream.E001",
            )
        ]
    errors: list[checks.CheckMessage] = []
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        errors.append(
            checks.Warning(
                f"LLMSTREAM has unknown key(s): {', '.join(sorted(unknown))}.",
                hint="Check the spelling against the settings reference; unknown keys are ignored.",
                id="llmstream.W001",
            )
        )
    errors += _check_numbers()
    errors += _check_choices()
    errors += _check_providers()
    errors += _check_broker()
    errors += _check_allowed_params()
    errors += _check_server()
    errors += _check_security()
    return errors


def _check_security() -> list[checks.CheckMessage]:
    """PERMISSION, AUTHENTICATORS (E030, E031) and LIMITS (E032, W030)."""
    from django_llmstream.quotas import check_limits_settings
    from django_llmstream.security import check_security_settings

    return check_security_settings() + check_limits_settings()


def _check_server() -> list[checks.CheckMessage]:
    """Django's own ``runserver`` serves WSGI: say what that loses, before anyone wonders."""
    argv = sys.argv
    serving_wsgi = len(argv) > 1 and argv[1] == "runserver"
    if not serving_wsgi or "daphne" in settings.INSTALLED_APPS:
        return []
    return [
        checks.Warning(
            "runserver serves WSGI: only POST stream/ streams there, one turn per request "
            "(no turns/ + events/, no resume after a reload, no stop from another request).",
            hint="Serve the ASGI application instead: uvicorn mysite.asgi:application (or add "
            '"daphne" first to INSTALLED_APPS, whose runserver is ASGI).',
            id="llmstream.W002",
        )
    ]


def _check_numbers() -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for name, (minimum, nullable) in _NUMBERS.items():
        value = getattr(app_settings, name)
        if value is None and nullable:
            continue
        is_number = isinstance(value, Real) and not isinstance(value, bool)
        if not is_number or value < minimum or (name in _INTEGERS and not isinstance(value, int)):
            kind = "a whole number" if name in _INTEGERS else "a number"
            errors.append(
                checks.Error(
                    f"{_W.format(name)} = {value!r} is not {kind} >= {minimum:g}"
                    + (" or None." if nullable else "."),
                    hint=f"Set {_W.format(name)} to {kind} >= {minimum:g}, or remove it to use "
                    f"the default ({DEFAULTS[name]!r}).",
                    id="llmstream.E012",
                )
            )
    return errors


def _check_choices() -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    if app_settings.ON_DISCONNECT not in {"cancel", "finish"}:
        errors.append(
            checks.Error(
                f"{_W.format('ON_DISCONNECT')} = {app_settings.ON_DISCONNECT!r} is not valid.",
                hint='Set it to "cancel" or "finish".',
                id="llmstream.E013",
            )
        )
    if app_settings.CONCURRENT_TURNS not in {"reject", "cancel_previous", "queue"}:
        errors.append(
            checks.Error(
                f"{_W.format('CONCURRENT_TURNS')} = {app_settings.CONCURRENT_TURNS!r} is not "
                "valid.",
                hint='Set it to "reject", "cancel_previous" or "queue".',
                id="llmstream.E019",
            )
        )
    if not isinstance(app_settings.ALLOW_ANONYMOUS, bool):
        errors.append(
            checks.Error(
                f"{_W.format('ALLOW_ANONYMOUS')} must be True or False.",
                id="llmstream.E016",
            )
        )
    return errors


def _check_providers() -> list[checks.CheckMessage]:
    from django_llmstream.exceptions import InvalidProviderConfig
    from django_llmstream.providers import load_backend

    providers = app_settings.PROVIDERS
    if not isinstance(providers, Mapping) or not providers:
        return [
            checks.Error(
                f"{_W.format('PROVIDERS')} must be a non-empty dict of alias -> options.",
                hint='For example {"demo": {"BACKEND": '
                '"django_llmstream.providers.demo.DemoProvider"}}.',
                id="llmstream.E003",
            )
        ]
    errors: list[checks.CheckMessage] = []
    for alias, config in providers.items():
        try:
            backend = load_backend(alias)
        except InvalidProviderConfig as exc:
            errors.append(
                checks.Error(
                    str(exc),
                    hint="BACKEND must be the dotted path of a provider class, e.g. "
                    '"django_llmstream.providers.openai.OpenAIProvider".',
                    id="llmstream.E004",
                )
            )
            continue
        errors += backend(alias, config).check()
    default = app_settings.DEFAULT_PROVIDER
    if default is not None and default not in providers:
        errors.append(
            checks.Error(
                f"{_W.format('DEFAULT_PROVIDER')} = {default!r} is not in PROVIDERS.",
                hint=f"Use one of: {', '.join(map(repr, providers))}.",
                id="llmstream.E005",
            )
        )
    return errors


def _check_broker() -> list[checks.CheckMessage]:
    from django_llmstream.brokers import load_broker_class
    from django_llmstream.exceptions import InvalidBrokerConfig

    try:
        broker_class = load_broker_class()
    except InvalidBrokerConfig as exc:
        return [
            checks.Error(
                str(exc),
                hint='BROKER["BACKEND"] must be "django_llmstream.brokers.memory.MemoryBroker" '
                'or "django_llmstream.brokers.redis.RedisBroker".',
                id="llmstream.E014",
            )
        ]
    return broker_class.check(app_settings.BROKER)


def _check_allowed_params() -> list[checks.CheckMessage]:
    allowed = app_settings.ALLOWED_PARAMS
    problems: list[str] = []
    if not isinstance(allowed, Mapping):
        problems.append("it must be a dict of name -> spec")
    else:
        for name, spec in allowed.items():
            if not isinstance(spec, Mapping) or spec.get("type") not in {
                "int",
                "float",
                "bool",
                "str",
                "list",
            }:
                problems.append(f'{name!r} needs a "type" of int, float, bool, str or list')
    if problems:
        return [
            checks.Error(
                f"{_W.format('ALLOWED_PARAMS')} is not valid: {'; '.join(problems)}.",
                hint='Example: {"temperature": {"type": "float", "min": 0, "max": 2}}.',
                id="llmstream.E015",
            )
        ]
    return []

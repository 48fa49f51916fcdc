"""Provider handler: builds each ``LLMSTREAM["PROVIDERS"]`` entry once, lazily, like ``caches``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from django_llmstream.conf import app_settings
from django_llmstream.exceptions import InvalidProviderConfig
from django_llmstream.providers.base import BaseProvider, ChatMessage, ChatRequest

__all__ = [
    "BaseProvider",
    "ChatMessage",
    "ChatRequest",
    "get_provider",
    "provider_aliases",
    "reset_providers",
]

_instances: dict[str, BaseProvider] = {}


def provider_aliases() -> list[str]:
    providers = app_settings.PROVIDERS
    return list(providers) if isinstance(providers, Mapping) else []


def _config(alias: str) -> Mapping[str, Any]:
    providers = app_settings.PROVIDERS
    if not isinstance(providers, Mapping) or alias not in providers:
        raise InvalidProviderConfig(f'LLMSTREAM["PROVIDERS"] has no entry {alias!r}.')
    config = providers[alias]
    if not isinstance(config, Mapping) or not config.get("BACKEND"):
        raise InvalidProviderConfig(
            f'LLMSTREAM["PROVIDERS"]["{alias}"] needs a "BACKEND" (a dotted path such as '
            '"django_llmstream.providers.openai.OpenAIProvider").'
        )
    return config


def load_backend(alias: str) -> type[BaseProvider]:
    """The backend class of ``alias``; a bad path raises :class:`InvalidProviderConfig`."""
    path = _config(alias)["BACKEND"]
    try:
        backend = import_string(path)
    except ImportError as exc:
        raise InvalidProviderConfig(
            f'LLMSTREAM["PROVIDERS"]["{alias}"]["BACKEND"] = {path!r} cannot be imported: {exc}'
        ) from exc
    if not (isinstance(backend, type) and issubclass(backend, BaseProvider)):
        raise InvalidProviderConfig(
            f'LLMSTREAM["PROVIDERS"]["{alias}"]["BACKEND"] = {path!r} is not a BaseProvider '
            "subclass."
        )
    return backend


def get_provider(alias: str | None = None) -> BaseProvider:
    """The provider instance of ``alias`` (default: the default provider), built once."""
    alias = alias or app_settings.default_provider
    if not alias:
        raise InvalidProviderConfig('LLMSTREAM["PROVIDERS"] is empty.')
    instance = _instances.get(alias)
    if instance is None:
        instance = load_backend(alias)(alias, _config(alias))
        _instances[alias] = instance
    return instance


def reset_providers(**kwargs: Any) -> None:
    """Forget built providers (their shared HTTP clients stay per event loop; see http.py)."""
    if kwargs.get("setting") in (None, "LLMSTREAM"):
        _instances.clear()


setting_changed.connect(reset_providers, dispatch_uid="llmstream_reset_providers")

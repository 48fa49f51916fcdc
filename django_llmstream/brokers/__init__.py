"""Broker handler: one broker per process, built lazily from ``LLMSTREAM["BROKER"]``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from django_llmstream.brokers.base import BaseBroker, Subscription, TurnEvent
from django_llmstream.conf import app_settings
from django_llmstream.exceptions import InvalidBrokerConfig

__all__ = ["BaseBroker", "Subscription", "TurnEvent", "get_broker", "load_broker_class"]

_broker: BaseBroker | None = None


def _config() -> Mapping[str, Any]:
    config = app_settings.BROKER
    if not isinstance(config, Mapping) or not config.get("BACKEND"):
        raise InvalidBrokerConfig('LLMSTREAM["BROKER"] needs a "BACKEND" dotted path.')
    return config


def load_broker_class() -> type[BaseBroker]:
    path = _config()["BACKEND"]
    try:
        backend = import_string(path)
    except ImportError as exc:
        raise InvalidBrokerConfig(
            f'LLMSTREAM["BROKER"]["BACKEND"] = {path!r} cannot be imported: {exc}'
        ) from exc
    if not (isinstance(backend, type) and issubclass(backend, BaseBroker)):
        raise InvalidBrokerConfig(
            f'LLMSTREAM["BROKER"]["BACKEND"] = {path!r} is not a BaseBroker subclass.'
        )
    return backend


def get_broker() -> BaseBroker:
    global _broker
    if _broker is None:
        _broker = load_broker_class()(_config())
    return _broker


def reset_broker(**kwargs: Any) -> None:
    global _broker
    if kwargs.get("setting") in (None, "LLMSTREAM"):
        _broker = None


setting_changed.connect(reset_broker, dispatch_uid="llmstream_reset_broker")

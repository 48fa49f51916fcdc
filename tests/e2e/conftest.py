from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import override_settings

SECRET = "sk-test-SUPERSECRET0123456789abcdef"


def llm_settings(upstream_url: str, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "PROVIDERS": {
            "openai": {
                "BACKEND": "django_llmstream.providers.openai.OpenAIProvider",
                "BASE_URL": upstream_url,
                "API_KEY": SECRET,
                "MODELS": ["fake-model", "other-model"],
                "PRICES": {"fake-model": {"input": "1.00", "output": "2.00"}},
            },
            "demo": {
                "BACKEND": "django_llmstream.providers.demo.DemoProvider",
                "OPTIONS": {"DELAY": 0.01},
            },
        },
        "DEFAULT_PROVIDER": "openai",
        "ALLOW_ANONYMOUS": True,
        "FLUSH_INTERVAL": 0.05,
        "IDLE_TIMEOUT": 3,
        "MAX_RETRIES": 0,
        "DISCONNECT_GRACE_SECONDS": 1,
    }
    settings.update(overrides)
    return settings


@pytest.fixture
def configure(upstream: Any) -> Iterator[Callable[..., None]]:
    """``configure(**overrides)``: point provider ``openai`` at the fake upstream."""
    active: list[override_settings] = []

    def apply(**overrides: Any) -> None:
        while active:
            active.pop().disable()
        override = override_settings(LLMSTREAM=llm_settings(upstream.base_url, **overrides))
        override.enable()
        active.append(override)

    apply()
    yield apply
    while active:
        active.pop().disable()


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)

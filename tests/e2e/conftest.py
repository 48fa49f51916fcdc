from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.db import connection
from django.test import override_settings

from tests.live import Client

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


# -- worker processes: real uvicorn processes sharing this test run's database -------------

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    def __init__(self, env: dict[str, str]) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.asgi:application",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--lifespan",
                "on",
                "--timeout-graceful-shutdown",
                "10",
            ],
            cwd=ROOT,
            env=env,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{self.url}/llmstream/conversations/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("worker did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def worker_env(transactional_db: None, upstream: Any) -> dict[str, str]:
    database = dict(connection.settings_dict)
    database["NAME"] = connection.settings_dict["NAME"]
    keep = {
        k: database[k] for k in ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS")
    }
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.worker_settings",
        "LLMSTREAM_TEST_DATABASE": json.dumps(keep, default=str),
        "LLMSTREAM_TEST_UPSTREAM": upstream.base_url,
        "LLMSTREAM_TEST_REDIS_PREFIX": f"llmstream-e2e-{uuid.uuid4().hex[:8]}",
        "LLMSTREAM_TEST_DRAIN": "10",
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
def workers(worker_env: dict[str, str]) -> Iterator[tuple[Worker, Worker]]:
    a, b = Worker(worker_env), Worker(worker_env)
    yield a, b
    a.stop()
    b.stop()


_open_clients: list[Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open_clients:
        _open_clients.pop().close()


def worker_client(worker: Worker, cookies: httpx.Cookies | None = None) -> Client:
    client = Client(worker.url)
    _open_clients.append(client)
    if cookies is not None:
        for cookie in cookies.jar:
            client.http.cookies.set(cookie.name, cookie.value)
    return client

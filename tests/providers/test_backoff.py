"""Retry waits: exponential backoff with equal jitter, ``Retry-After`` as given. The random
source is replaced (``http.jitter_random``) so that every delay is exact."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from django_llmstream.exceptions import (
    UpstreamConnectionError,
    UpstreamRateLimited,
    UpstreamServerError,
)
from django_llmstream.providers import http
from django_llmstream.providers.http import MAX_RETRY_AFTER, backoff_delay, retry_delay
from django_llmstream.providers.openai import OpenAIProvider
from tests.providers.contract import chat_request, collect, llmstream_settings, summarize
from tests.upstream import DEFAULT_TEXT, FakeUpstream


@pytest.fixture
def draws(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The values the jitter draws, in order (0.5 once they run out)."""
    values: list[float] = []

    def fake() -> float:
        return values.pop(0) if values else 0.5

    monkeypatch.setattr(http, "jitter_random", fake)
    return values


@pytest.mark.parametrize(
    ("draw", "attempt", "expected"),
    [
        (0.0, 0, 0.5),  # the step itself: never sooner
        (0.5, 0, 0.75),
        (0.999, 0, 0.9995),  # just under twice the step
        (0.0, 1, 1.0),  # the step doubles
        (0.5, 1, 1.5),
        (0.0, 2, 2.0),
        (1.0, 2, 4.0),
    ],
)
def test_equal_jitter_between_the_step_and_twice_it(
    draws: list[float], draw: float, attempt: int, expected: float
) -> None:
    draws.append(draw)
    assert backoff_delay(0.5, attempt) == pytest.approx(expected)


def test_the_wait_is_capped(draws: list[float]) -> None:
    draws += [0.0, 1.0, 1.0]
    assert backoff_delay(0.5, 20) == MAX_RETRY_AFTER / 2
    assert backoff_delay(0.5, 20) == MAX_RETRY_AFTER
    assert backoff_delay(0.5, 200) == MAX_RETRY_AFTER  # no overflow for silly attempts


def test_out_of_range_draws_are_clamped(draws: list[float]) -> None:
    draws += [-1.0, 7.0]
    assert backoff_delay(1.0, 0) == 1.0
    assert backoff_delay(1.0, 0) == 2.0


def test_zero_backoff_retries_at_once(draws: list[float]) -> None:
    draws.append(0.9)
    assert backoff_delay(0.0, 3) == 0.0


def test_retry_after_is_used_as_given_without_jitter(draws: list[float]) -> None:
    limited = UpstreamRateLimited("slow down", status_code=429, retry_after=2.5)
    assert retry_delay(limited, 0, 0.5) == 2.5
    assert retry_delay(limited, 3, 0.5) == 2.5
    too_long = UpstreamRateLimited("later", status_code=429, retry_after=MAX_RETRY_AFTER + 1)
    assert retry_delay(too_long, 0, 0.5) is None
    assert draws == []  # nothing was drawn: the upstream said when


def test_without_retry_after_the_backoff_applies(draws: list[float]) -> None:
    draws += [0.25, 0.75]
    assert retry_delay(UpstreamServerError("boom", status_code=500), 0, 0.2) == pytest.approx(0.25)
    assert retry_delay(UpstreamConnectionError("refused"), 1, 0.2) == pytest.approx(0.7)


def test_the_random_source_is_the_real_one_by_default() -> None:
    delays = {backoff_delay(1.0, 0) for _ in range(50)}
    assert all(1.0 <= d < 2.0 for d in delays)
    assert len(delays) > 1, "jittered"


async def test_a_retry_waits_the_jittered_delay(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch, draws: list[float]
) -> None:
    sleeps: list[float] = []
    real_sleep = asyncio.sleep
    this_thread = threading.get_ident()

    async def recording_sleep(delay: float, *args: Any) -> Any:
        # asyncio.sleep is global: other threads' loops (a uvicorn server of the e2e tests)
        # sleep as usual.
        if threading.get_ident() != this_thread:
            return await real_sleep(delay, *args)
        sleeps.append(delay)
        return await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)  # (the retry loop's asyncio.sleep)
    upstream.respond(status=503)
    upstream.respond(status=502)
    draws += [0.2, 0.6]
    provider = OpenAIProvider("openai", {"BASE_URL": upstream.base_url, "MODELS": ["fake-model"]})
    with llmstream_settings(MAX_RETRIES=2, RETRY_BACKOFF=0.1):
        events = await collect(provider.stream(chat_request()))
    assert summarize(events).text == DEFAULT_TEXT
    assert len(upstream.requests) == 3
    assert [d for d in sleeps if d] == [pytest.approx(0.12), pytest.approx(0.32)]

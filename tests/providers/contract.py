"""The contract every provider backend must pass, and helpers for provider tests.

A backend's test module subclasses :class:`ProviderContract` (a ``Test…`` name makes pytest
collect the inherited tests) and implements its hooks::

    class TestOpenAIContract(ProviderContract):
        def make_provider(self, base_url: str, **config: Any) -> BaseProvider:
            return OpenAIProvider("openai", {"BASE_URL": base_url, "MODELS": ["m"], **config})

The tests use the ``upstream`` fixture of :mod:`tests.upstream` (a real HTTP server); a
backend without network (``uses_network = False``) gets it too and ignores it.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from django.conf import settings
from django.test import override_settings

from django_llmstream.events import (
    FINISH_REASONS,
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from django_llmstream.exceptions import ProviderError
from django_llmstream.providers.base import BaseProvider, ChatMessage, ChatRequest
from tests.upstream import FakeUpstream, echo_error

__all__ = [
    "API_KEY",
    "ProviderContract",
    "Summary",
    "chat_request",
    "collect",
    "collect_until_error",
    "llmstream_settings",
    "secret_leaks",
    "summarize",
]

#: A key shaped like no known provider's, so that only the provider's own scrubbing can
#: hide it (the generic key-shape pattern of base.py would not).
API_KEY = "contract-test-key-4f1c9a7e2b"

EVENT_TYPES = (TextDelta, ReasoningDelta, ToolCallDelta, Usage, Finish)


def chat_request(
    prompt: str = "Hello there", *, model: str = "fake-model", **params: Any
) -> ChatRequest:
    return ChatRequest(
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", prompt)),
        model=model,
        params=params,
    )


def llmstream_settings(**overrides: Any) -> override_settings:
    """``override_settings`` of some ``LLMSTREAM`` keys, the others kept."""
    return override_settings(LLMSTREAM={**settings.LLMSTREAM, **overrides})


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


async def collect_until_error(
    events: AsyncIterator[Event],
) -> tuple[list[Event], BaseException | None]:
    """The events before the iterator raised, and what it raised (or ``None``)."""
    received: list[Event] = []
    try:
        async for event in events:
            received.append(event)
    except Exception as exc:
        return received, exc
    return received, None


@dataclass
class Summary:
    """Events folded the way the sidecars (``*.expected.json``) describe a stream."""

    text: str = ""
    reasoning_text: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage | None = None
    finish: Finish | None = None


def summarize(events: Iterable[Event]) -> Summary:
    summary = Summary()
    calls: dict[int, dict[str, Any]] = {}
    for event in events:
        if isinstance(event, TextDelta):
            summary.text += event.text
        elif isinstance(event, ReasoningDelta):
            summary.reasoning_text = (summary.reasoning_text or "") + event.text
        elif isinstance(event, ToolCallDelta):
            if event.index not in calls:
                calls[event.index] = {
                    "index": event.index,
                    "id": event.id,
                    "name": event.name,
                    "arguments": "",
                }
            else:
                assert event.id is None and event.name is None, "id/name only on the first piece"
            calls[event.index]["arguments"] += event.arguments
        elif isinstance(event, Usage):
            summary.usage = event
        elif isinstance(event, Finish):
            summary.finish = event
    summary.tool_calls = [calls[index] for index in sorted(calls)]
    return summary


def secret_leaks(
    secret: str, error: BaseException, records: Iterable[logging.LogRecord]
) -> list[str]:
    """Where ``secret`` shows: the error's str/repr/message, its chained causes, the formatted
    traceback and the log records. Empty when it is nowhere."""
    places = {
        "str": str(error),
        "repr": repr(error),
        "message": str(getattr(error, "message", "")),
        "traceback": "".join(traceback.format_exception(error)),
    }
    cause: BaseException | None = error.__cause__ or error.__context__
    depth = 0
    while cause is not None and depth < 10:
        places[f"cause {depth}"] = f"{cause!s} {cause!r}"
        cause = cause.__cause__ or cause.__context__
        depth += 1
    for record in records:
        places[f"log {record.name}"] = record.getMessage()
    return [name for name, text in places.items() if secret in text]


def assert_event_contract(events: list[Event]) -> None:
    assert events, "a complete answer yields events"
    for event in events:
        assert isinstance(event, EVENT_TYPES), f"not an Event: {event!r}"
    finishes = [event for event in events if isinstance(event, Finish)]
    assert len(finishes) == 1, "exactly one Finish"
    assert events[-1] is finishes[0], "the Finish comes last"
    assert finishes[0].reason in FINISH_REASONS
    for event in events:
        if isinstance(event, Usage):
            for name, value in event.as_dict().items():
                assert value is None or (type(value) is int and value >= 0), (name, value)
        if isinstance(event, TextDelta | ReasoningDelta):
            assert isinstance(event.text, str) and event.text, "no empty deltas"
        if isinstance(event, ToolCallDelta):
            assert isinstance(event.index, int) and event.index >= 0
            assert isinstance(event.arguments, str)
    usages = [event for event in events if isinstance(event, Usage)]
    assert len(usages) <= 1, "usage is reported once"


class ProviderContract:
    """Tests every provider backend passes. Subclasses implement the hooks below."""

    #: Whether the backend talks to the upstream (the fake server sees its requests).
    uses_network: ClassVar[bool] = True
    #: Whether the backend can be given an API key (and so must hide it).
    takes_api_key: ClassVar[bool] = True
    model: ClassVar[str] = "fake-model"

    # -- hooks -------------------------------------------------------------------------

    def make_provider(self, base_url: str, **config: Any) -> BaseProvider:
        """A provider pointed at ``base_url`` with ``MODELS`` including :attr:`model`."""
        raise NotImplementedError

    def prepare_answer(self, upstream: FakeUpstream) -> None:
        """Queue a complete answer (default: the server's default OpenAI stream)."""

    def prepare_slow_answer(self, upstream: FakeUpstream) -> dict[str, Any]:
        """Queue an answer that yields a first event, then keeps the stream open for seconds;
        return config for :meth:`make_provider` that is needed for it."""
        raise NotImplementedError

    def prepare_auth_failure(self, upstream: FakeUpstream) -> None:
        """Queue an authentication failure whose body echoes the request's credentials."""
        upstream.respond(status=401, body=echo_error)

    def request(self, **params: Any) -> ChatRequest:
        return chat_request(model=self.model, **params)

    # -- the contract ------------------------------------------------------------------

    async def test_yields_only_events_and_one_finish_last(self, upstream: FakeUpstream) -> None:
        self.prepare_answer(upstream)
        provider = self.make_provider(upstream.base_url)
        events = await collect(provider.stream(self.request()))
        assert_event_contract(events)
        assert summarize(events).text
        if self.uses_network:
            assert len(upstream.requests) == 1

    async def test_usage_is_typed(self, upstream: FakeUpstream) -> None:
        self.prepare_answer(upstream)
        provider = self.make_provider(upstream.base_url)
        usage = summarize(await collect(provider.stream(self.request()))).usage
        assert usage is not None
        assert isinstance(usage.input_tokens, int)
        assert isinstance(usage.output_tokens, int)

    async def test_aclose_mid_stream_closes_the_upstream(self, upstream: FakeUpstream) -> None:
        config = self.prepare_slow_answer(upstream)
        provider = self.make_provider(upstream.base_url, **config)
        events = provider.stream(self.request())
        first = await anext(events)
        assert isinstance(first, EVENT_TYPES)
        started = asyncio.get_running_loop().time()
        await events.aclose()  # type: ignore[attr-defined]
        if self.uses_network:
            assert await upstream.await_for_disconnect(1.0), "the upstream saw no disconnect"
        assert asyncio.get_running_loop().time() - started < 1.0
        with pytest.raises(StopAsyncIteration):
            await anext(events)

    async def test_cancelling_the_task_closes_the_upstream(self, upstream: FakeUpstream) -> None:
        config = self.prepare_slow_answer(upstream)
        provider = self.make_provider(upstream.base_url, **config)
        got_first = asyncio.Event()
        received: list[Event] = []

        async def consume() -> None:
            async for event in provider.stream(self.request()):
                received.append(event)
                got_first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(got_first.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 1.0)
        if self.uses_network:
            assert await upstream.await_for_disconnect(1.0), "the upstream saw no disconnect"
        assert not any(isinstance(event, Finish) for event in received)

    async def test_errors_are_scrubbed(
        self, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
    ) -> None:
        if not (self.uses_network and self.takes_api_key):
            pytest.skip("this backend has no credentials and no upstream")
        self.prepare_auth_failure(upstream)
        provider = self.make_provider(upstream.base_url, API_KEY=API_KEY)
        with caplog.at_level(logging.DEBUG, logger="django_llmstream"):
            _events, error = await collect_until_error(provider.stream(self.request()))
        assert isinstance(error, ProviderError), error
        assert error.retryable is False
        assert secret_leaks(API_KEY, error, caplog.records) == []
        assert "[redacted]" in error.message  # the echoed key was there, and was replaced
        assert any(r.levelno == logging.WARNING for r in caplog.records), "failures are logged"
        # The upstream did receive the key: scrubbing is about what we show, not what we send.
        assert API_KEY in " ".join(upstream.requests[0].headers.values())

    def test_repr_and_str_hide_the_key(self) -> None:
        if not self.takes_api_key:
            pytest.skip("this backend takes no API key")
        provider = self.make_provider("http://127.0.0.1:9/v1", API_KEY=API_KEY)
        assert API_KEY not in repr(provider)
        assert API_KEY not in str(provider)
        assert API_KEY not in provider.scrub(f"the key is {API_KEY}")

    def test_cost_from_prices(self) -> None:
        provider = self.make_provider(
            "http://127.0.0.1:9/v1",
            PRICES={self.model: {"input": "1.00", "output": "4.00", "cached_input": "0.50"}},
        )
        usage = Usage(input_tokens=1_000_000, output_tokens=500_000, cached_input_tokens=200_000)
        assert provider.cost(self.model, usage) == Decimal("2.90000000")
        assert provider.cost(self.model, Usage(input_tokens=10)) is None  # output unknown
        assert provider.cost("unpriced-model", usage) is None

    def test_valid_config_passes_its_checks(self) -> None:
        provider = self.make_provider("http://127.0.0.1:9/v1")
        assert provider.check() == []
        assert provider.is_model_allowed(self.model)

"""Signals fire once per turn in every ending, with the documented arguments; the end of a
turn is logged with structured extras and no text.

Turns run through the views with the demo provider (and a provider that fails mid-stream),
so the signals are those a site receives.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from django.test import AsyncClient, override_settings

from django_llmstream import generation, signals
from django_llmstream.events import Event, TextDelta
from django_llmstream.exceptions import UpstreamConnectionError
from django_llmstream.models import Message
from django_llmstream.providers import ChatRequest
from django_llmstream.providers.demo import DemoProvider
from django_llmstream.sse import SSEParser

pytestmark = pytest.mark.django_db(transaction=True)

SIGNALS = {
    "started": signals.turn_started,
    "finished": signals.turn_finished,
    "failed": signals.turn_failed,
    "cancelled": signals.turn_cancelled,
}
COMMON = {"turn_id", "conversation_id", "provider", "model"}
ENDING = COMMON | {"status", "usage", "cost", "duration_ms"}
USAGE_KEYS = {"input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"}


class FailingProvider(DemoProvider):
    """Streams one piece of text, then loses the upstream connection."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        yield TextDelta("partial ")
        await asyncio.sleep(0)
        raise UpstreamConnectionError("The upstream closed the connection.")


def _settings(delay: float = 0) -> dict[str, Any]:
    return {
        "PROVIDERS": {
            "demo": {
                "BACKEND": "django_llmstream.providers.demo.DemoProvider",
                "OPTIONS": {"DELAY": delay},
            },
            "failing": {"BACKEND": "tests.test_signals.FailingProvider"},
        },
        "ALLOW_ANONYMOUS": True,
        "FLUSH_INTERVAL": 0.02,
    }


@pytest.fixture
def received() -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    calls: list[tuple[str, Any, dict[str, Any]]] = []
    receivers = []
    for name, signal in SIGNALS.items():

        def receiver(sender: Any, *, _name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal", None)
            calls.append((_name, sender, kwargs))

        signal.connect(receiver, weak=False)
        receivers.append((signal, receiver))
    yield calls
    for signal, receiver in receivers:
        signal.disconnect(receiver)


async def _start(client: AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post(
        "/llmstream/turns/", {"prompt": "hello", **body}, content_type="application/json"
    )
    assert response.status_code == 201, response.content
    return dict(json.loads(response.content))


async def _read(client: AsyncClient, url: str) -> list[str]:
    response = await client.get(url)
    parser = SSEParser()
    names: list[str] = []
    async for chunk in response.streaming_content:
        names += [event.event for event in parser.feed(chunk)]
    return names


def _only(calls: list[tuple[str, Any, dict[str, Any]]], turn: str) -> list[str]:
    return [name for name, _sender, kwargs in calls if kwargs["turn_id"] == turn]


def _ending(calls: list[tuple[str, Any, dict[str, Any]]]) -> tuple[str, Any, dict[str, Any]]:
    endings = [call for call in calls if call[0] != "started"]
    assert len(endings) == 1, endings
    return endings[0]


async def test_completed_turn(received: list[tuple[str, Any, dict[str, Any]]]) -> None:
    with override_settings(LLMSTREAM=_settings()):
        client = AsyncClient()
        body = await _start(client)
        assert (await _read(client, body["events_url"]))[-1] == "done"
        await asyncio.sleep(0.05)  # the signal follows the terminal event
    assert _only(received, body["turn"]) == ["started", "finished"]
    started = received[0]
    assert started[1] is DemoProvider
    assert started[2] == {
        "turn_id": body["turn"],
        "conversation_id": body["conversation"],
        "provider": "demo",
        "model": "demo",
    }
    name, sender, kwargs = _ending(received)
    assert name == "finished" and sender is DemoProvider and set(kwargs) == ENDING
    turn = await Message.objects.aget(pk=body["turn"])
    assert kwargs["status"] == "completed"
    assert kwargs["usage"] == turn.usage_dict() and set(kwargs["usage"]) == USAGE_KEYS
    assert kwargs["cost"] == turn.cost and kwargs["duration_ms"] == turn.duration_ms


async def test_cancelled_by_stop(received: list[tuple[str, Any, dict[str, Any]]]) -> None:
    with override_settings(LLMSTREAM=_settings(delay=0.02)):
        client = AsyncClient()
        body = await _start(client)
        await asyncio.sleep(0.1)
        assert (await client.post(body["stop_url"])).status_code == 202
        assert (await client.post(body["stop_url"])).status_code == 202  # idempotent
        assert (await _read(client, body["events_url"]))[-1] == "done"
        await asyncio.sleep(0.05)
    assert _only(received, body["turn"]) == ["started", "cancelled"]
    _name, _sender, kwargs = _ending(received)
    assert set(kwargs) == ENDING | {"reason"}
    assert kwargs["status"] == "cancelled" and kwargs["reason"] == "stopped"
    assert (await Message.objects.aget(pk=body["turn"])).status == "cancelled"


async def test_failed_upstream(received: list[tuple[str, Any, dict[str, Any]]]) -> None:
    with override_settings(LLMSTREAM=_settings()):
        client = AsyncClient()
        body = await _start(client, provider="failing")
        assert (await _read(client, body["events_url"]))[-1] == "error"
        await asyncio.sleep(0.05)
    assert _only(received, body["turn"]) == ["started", "failed"]
    _name, sender, kwargs = _ending(received)
    assert sender is FailingProvider
    assert set(kwargs) == ENDING | {"error_type", "error_message"}
    assert kwargs["status"] == "failed"
    assert kwargs["error_type"] == "upstream_connection"
    assert kwargs["error_message"] == "The upstream closed the connection."
    turn = await Message.objects.aget(pk=body["turn"])
    assert turn.status == "failed" and turn.content == "partial "


async def test_interrupted_by_shutdown(received: list[tuple[str, Any, dict[str, Any]]]) -> None:
    with override_settings(LLMSTREAM=_settings(delay=0.05)):
        client = AsyncClient()
        body = await _start(client)
        await asyncio.sleep(0.1)
        await generation.shutdown()
    assert _only(received, body["turn"]) == ["started", "failed"]
    _name, _sender, kwargs = _ending(received)
    assert kwargs["status"] == "interrupted" and kwargs["error_type"] == "interrupted"
    assert kwargs["cost"] is None
    assert (await Message.objects.aget(pk=body["turn"])).status == "interrupted"


async def test_every_turn_gets_its_own_signals(
    received: list[tuple[str, Any, dict[str, Any]]],
) -> None:
    with override_settings(LLMSTREAM=_settings()):
        client = AsyncClient()
        first = await _start(client)
        await _read(client, first["events_url"])
        second = await _start(client, conversation=first["conversation"], prompt="again")
        await _read(client, second["events_url"])
        await asyncio.sleep(0.05)
    assert _only(received, first["turn"]) == ["started", "finished"]
    assert _only(received, second["turn"]) == ["started", "finished"]
    assert len(received) == 4


async def test_a_failing_receiver_does_not_break_the_turn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.turn_finished.connect(broken, weak=False)
    try:
        with override_settings(LLMSTREAM=_settings()), caplog.at_level(logging.ERROR):
            client = AsyncClient()
            body = await _start(client)
            assert (await _read(client, body["events_url"]))[-1] == "done"
            await asyncio.sleep(0.05)
    finally:
        signals.turn_finished.disconnect(broken)
    assert (await Message.objects.aget(pk=body["turn"])).status == "completed"
    assert any("receiver" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


async def test_turn_end_is_logged_with_structured_extras(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        override_settings(LLMSTREAM=_settings()),
        caplog.at_level(logging.INFO, logger="django_llmstream"),
    ):
        client = AsyncClient()
        body = await _start(client, prompt="a secret prompt", system="a secret system")
        await _read(client, body["events_url"])
        await asyncio.sleep(0.05)
    records = [r for r in caplog.records if getattr(r, "turn_id", None) == body["turn"]]
    assert len(records) == 1
    record = records[0]
    turn = await Message.objects.aget(pk=body["turn"])
    assert record.name.startswith("django_llmstream")
    assert record.getMessage().startswith(f"Turn {body['turn']} ended: completed")
    extras = {
        name: getattr(record, name)
        for name in (
            "turn_id",
            "conversation_id",
            "provider",
            "model",
            "status",
            "finish_reason",
            "error_type",
            "input_tokens",
            "output_tokens",
            "tokens",
            "cost",
            "ttft_ms",
            "duration_ms",
        )
    }
    assert extras == {
        "turn_id": body["turn"],
        "conversation_id": body["conversation"],
        "provider": "demo",
        "model": "demo",
        "status": "completed",
        "finish_reason": "stop",
        "error_type": None,
        "input_tokens": turn.input_tokens,
        "output_tokens": turn.output_tokens,
        "tokens": (turn.input_tokens or 0) + (turn.output_tokens or 0),
        "cost": None if turn.cost is None else str(turn.cost),
        "ttft_ms": turn.ttft_ms,
        "duration_ms": turn.duration_ms,
    }
    # Never the text of the conversation, in the message or in any attribute.
    for record in caplog.records:
        dumped = json.dumps({k: str(v) for k, v in vars(record).items()})
        for secret in ("a secret prompt", "a secret system", turn.content[:30]):
            assert secret not in dumped


async def test_failed_turn_log_names_the_error(caplog: pytest.LogCaptureFixture) -> None:
    with (
        override_settings(LLMSTREAM=_settings()),
        caplog.at_level(logging.INFO, logger="django_llmstream"),
    ):
        client = AsyncClient()
        body = await _start(client, provider="failing")
        await _read(client, body["events_url"])
        await asyncio.sleep(0.05)
    (record,) = [r for r in caplog.records if getattr(r, "turn_id", None) == body["turn"]]
    assert record.status == "failed"  # type: ignore[attr-defined]
    assert record.error_type == "upstream_connection"  # type: ignore[attr-defined]
    assert record.provider == "failing"  # type: ignore[attr-defined]
    assert isinstance(record.duration_ms, int)  # type: ignore[attr-defined]

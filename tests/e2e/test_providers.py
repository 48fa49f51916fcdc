"""End to end through uvicorn for the native backends: Anthropic Messages, Ollama ``/api/chat``
and OpenAI Responses, each fed a recorded stream by the fake upstream.

A turn's SSE events (reasoning, tool calls with id and name on their first piece, the
``done`` usage and cost) and the stored ``Message`` must agree with the recording, mapped onto
PROTOCOL.md's conventions; a mid-stream provider error fails the turn and keeps its text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.test import override_settings

from django_llmstream.models import Message
from tests.live import Client, SSEResult
from tests.providers.recorded import expected_for
from tests.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

KEY = "provider-e2e-key-0a1b2c3d4e5f"
PRICES = {
    "anthropic": {"claude-test": {"input": "3.00", "output": "15.00", "cached_input": "0.30"}},
    "ollama": {"llama-test": {"input": "0.10", "output": "0.20"}},
    "responses": {"gpt-test": {"input": "1.25", "output": "10.00", "cached_input": "0.125"}},
}


def provider_settings(upstream: FakeUpstream, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "PROVIDERS": {
            "anthropic": {
                "BACKEND": "django_llmstream.providers.anthropic.AnthropicProvider",
                # The host without /v1, as in the Anthropic SDKs.
                "BASE_URL": upstream.url,
                "API_KEY": KEY,
                "MODELS": ["claude-test"],
                "PRICES": PRICES["anthropic"],
            },
            "ollama": {
                "BACKEND": "django_llmstream.providers.ollama.OllamaProvider",
                # The host without /api.
                "BASE_URL": upstream.url,
                "MODELS": ["llama-test"],
                "PRICES": PRICES["ollama"],
            },
            "responses": {
                "BACKEND": "django_llmstream.providers.openai_responses.OpenAIResponsesProvider",
                "BASE_URL": upstream.base_url,
                "API_KEY": KEY,
                "MODELS": ["gpt-test"],
                "PRICES": PRICES["responses"],
            },
        },
        "DEFAULT_PROVIDER": "anthropic",
        "ALLOW_ANONYMOUS": True,
        "FLUSH_INTERVAL": 0.05,
        "IDLE_TIMEOUT": 3,
        "MAX_RETRIES": 0,
        "DISCONNECT_GRACE_SECONDS": 1,
    }
    settings.update(overrides)
    return settings


@pytest.fixture
def providers(upstream: FakeUpstream) -> Iterator[Callable[..., None]]:
    """``providers(**overrides)``: the three native backends, pointed at the fake upstream."""
    active: list[override_settings] = []

    def apply(**overrides: Any) -> None:
        while active:
            active.pop().disable()
        override = override_settings(LLMSTREAM=provider_settings(upstream, **overrides))
        override.enable()
        active.append(override)

    apply()
    yield apply
    while active:
        active.pop().disable()


def cost(provider: str, model: str, usage: dict[str, int | None]) -> str:
    price = {k: Decimal(v) for k, v in PRICES[provider][model].items()}
    cached = usage["cached_input_tokens"] or 0
    assert usage["input_tokens"] is not None and usage["output_tokens"] is not None
    total = (
        (usage["input_tokens"] - cached) * price["input"]
        + cached * price.get("cached_input", price["input"])
        + usage["output_tokens"] * price["output"]
    )
    return str((total / Decimal(1_000_000)).quantize(Decimal("0.00000001")))


def turn_of(result: SSEResult) -> Message:
    return Message.objects.get(pk=result.events[0].json()["turn"])


def tool_calls_of(result: SSEResult) -> list[dict[str, Any]]:
    """The complete calls, folded from the ``tool_call`` events."""
    calls: dict[int, dict[str, Any]] = {}
    for event in result.by_type("tool_call"):
        piece = event.json()
        if piece["index"] not in calls:
            assert piece["id"] is not None or piece["name"] is not None, "id/name first"
            calls[piece["index"]] = {**piece, "arguments": ""}
        else:
            assert piece["id"] is None and piece["name"] is None, "id/name only first"
        calls[piece["index"]]["arguments"] += piece["arguments"]
    return [calls[index] for index in sorted(calls)]


def reasoning_of(result: SSEResult) -> str:
    return "".join(event.json()["text"] for event in result.by_type("reasoning"))


def check_turn(
    result: SSEResult,
    *,
    provider: str,
    model: str,
    fixture: str,
    finish_reason: str,
    usage: dict[str, int | None],
) -> Message:
    """The stream and the stored turn agree with the recording (``fixture``'s sidecar)."""
    expected = expected_for(fixture)
    assert result.status == 200
    names = [event.event for event in result.events]
    assert names[0] == "start" and names[-1] == "done", names
    start = result.events[0].json()
    assert (start["provider"], start["model"]) == (provider, model)
    assert result.text == expected["text"]
    assert reasoning_of(result) == (expected["reasoning_text"] or "")
    calls = [
        {"index": i, "id": call["id"], "name": call["name"], "arguments": call["arguments"]}
        for i, call in enumerate(expected["tool_calls"])
    ]
    assert tool_calls_of(result) == calls
    done = result.terminal.json()
    assert done["finish_reason"] == finish_reason
    assert done["usage"] == usage
    assert done["cost"] == cost(provider, model, usage)
    # When done arrives, the database already holds what it reports.
    turn = turn_of(result)
    assert turn.status == "completed"
    assert (turn.provider, turn.model) == (provider, model)
    assert turn.content == expected["text"]
    assert turn.reasoning == (expected["reasoning_text"] or "")
    assert turn.tool_calls == calls
    assert turn.finish_reason == finish_reason
    assert turn.usage_dict() == usage
    assert str(turn.cost) == done["cost"]
    return turn


# -- Anthropic ---------------------------------------------------------------------------------


def test_anthropic_thinking_and_tool_call_turn(
    client_e2e: Client, providers: Any, upstream: FakeUpstream
) -> None:
    upstream.respond(fixture="anthropic_thinking_recorded.sse", delay=0.005)
    result = client_e2e.read_sse(
        "POST",
        "/llmstream/stream/",
        json={"prompt": "Weather in Florence?", "provider": "anthropic", "system": "Be brief."},
    )
    check_turn(
        result,
        provider="anthropic",
        model="claude-test",
        fixture="anthropic_thinking_recorded.sse",
        finish_reason="tool_calls",  # stop_reason tool_use
        # input 424 + cache reads 0 + cache writes 0; cached = cache reads.
        usage={
            "input_tokens": 424,
            "output_tokens": 119,
            "cached_input_tokens": 0,
            "reasoning_tokens": None,
        },
    )
    (sent,) = upstream.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"]
    assert sent.json["system"] == "Be brief."
    assert sent.json["messages"] == [{"role": "user", "content": "Weather in Florence?"}]
    assert sent.json["max_tokens"] > 0

    # The next turn: the unanswered tool call is left out, and the two user messages that
    # then meet become one user turn (the API wants alternating roles).
    conversation = result.events[0].json()["conversation"]
    upstream.respond(fixture="anthropic_messages_stream.sse")
    second = client_e2e.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "Never mind.", "conversation": conversation}
    )
    assert second.terminal.event == "done" and second.text == "Hello!"
    assert upstream.requests[-1].json["system"] == "Be brief."
    assert upstream.requests[-1].json["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Florence?"},
                {"type": "text", "text": "Never mind."},
            ],
        }
    ]


def test_anthropic_text_and_tool_call_turn(
    client_e2e: Client, providers: Any, upstream: FakeUpstream
) -> None:
    upstream.respond(fixture="anthropic_tool_use.sse")
    result = client_e2e.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "Weather in Paris?", "provider": "anthropic"}
    )
    # Text is content block 0 and the tool_use block 1: the call is still index 0. Its
    # pieces read together went out together; the first event names the call.
    calls = [event.json() for event in result.by_type("tool_call")]
    assert {k: calls[0][k] for k in ("index", "id", "name")} == {
        "index": 0,
        "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
        "name": "get_weather",
    }
    assert all(c["index"] == 0 and c["id"] is None and c["name"] is None for c in calls[1:])
    assert "".join(c["arguments"] for c in calls) == '{"location": "Paris"}'
    check_turn(
        result,
        provider="anthropic",
        model="claude-test",
        fixture="anthropic_tool_use.sse",
        finish_reason="tool_calls",
        usage={
            "input_tokens": 377,
            "output_tokens": 65,
            "cached_input_tokens": 0,
            "reasoning_tokens": None,
        },
    )


def test_anthropic_overloaded_mid_stream_fails_the_turn_and_keeps_the_text(
    client_e2e: Client, providers: Any, upstream: FakeUpstream
) -> None:
    upstream.respond(fixture="anthropic_error_overloaded.sse")
    result = client_e2e.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "Hi", "provider": "anthropic"}
    )
    assert [event.event for event in result.events] == ["start", "delta", "error"]
    assert result.text == "Hello"
    error = result.terminal.json()
    assert error["type"] == "upstream_overloaded"
    assert error["retryable"] is True
    assert "Overloaded" in error["message"]
    assert KEY not in error["message"]
    turn = turn_of(result)
    assert turn.status == "failed"
    assert turn.error_type == "upstream_overloaded"
    assert turn.content == "Hello"
    # A replay from the database ends with the same error.
    replay = client_e2e.read_sse("GET", f"/llmstream/turns/{turn.pk}/events/")
    assert replay.text == "Hello"
    assert replay.terminal.json() == error


# -- Ollama ------------------------------------------------------------------------------------


def test_ollama_tool_call_turn(client_e2e: Client, providers: Any, upstream: FakeUpstream) -> None:
    upstream.respond(fixture="ollama_chat_tool_calls.ndjson")
    result = client_e2e.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "Weather in Tokyo?", "provider": "ollama"}
    )
    check_turn(
        result,
        provider="ollama",
        model="llama-test",
        fixture="ollama_chat_tool_calls.ndjson",
        # done_reason "stop", but the turn ended in a tool call.
        finish_reason="tool_calls",
        # prompt_eval_count / eval_count; Ollama reports no cached or thinking counts.
        usage={
            "input_tokens": 169,
            "output_tokens": 15,
            "cached_input_tokens": None,
            "reasoning_tokens": None,
        },
    )
    (sent,) = upstream.requests
    assert sent.path == "/api/chat"
    assert sent.json["messages"] == [{"role": "user", "content": "Weather in Tokyo?"}]


def test_ollama_thinking_turn_cut_by_length(
    client_e2e: Client, providers: Any, upstream: FakeUpstream
) -> None:
    upstream.respond(fixture="ollama_chat_thinking_excerpt.ndjson")
    result = client_e2e.read_sse(
        "POST",
        "/llmstream/stream/",
        json={"prompt": "Think", "provider": "ollama", "params": {"max_tokens": 20}},
    )
    check_turn(
        result,
        provider="ollama",
        model="llama-test",
        fixture="ollama_chat_thinking_excerpt.ndjson",
        finish_reason="length",
        usage={
            "input_tokens": 22,
            "output_tokens": 20,
            "cached_input_tokens": None,
            "reasoning_tokens": None,
        },
    )
    assert upstream.requests[0].json["options"] == {"num_predict": 20}


def test_ollama_error_line_fails_the_turn(
    client_e2e: Client, providers: Any, upstream: FakeUpstream
) -> None:
    upstream.respond(fixture="ollama_error.ndjson")
    result = client_e2e.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "Hi", "provider": "ollama"}
    )
    assert result.text == " Yes.Ican"
    error = result.terminal.json()
    assert error["type"] == "upstream_error" and error["retryable"] is True
    assert "an error was encountered while running the model" in error["message"]
    turn = turn_of(result)
    assert (turn.status, turn.content) == ("failed", " Yes.Ican")


# -- OpenAI Responses --------------------------------------------------------------------------


def test_responses_reasoning_and_tool_call_turn(
    client_e2e: Client, providers: Any, upstream: FakeUpstream
) -> None:
    upstream.respond(fixture="openai_responses_reasoning_tool.sse")
    result = client_e2e.read_sse(
        "POST",
        "/llmstream/stream/",
        json={"prompt": "Weather in Florence?", "provider": "responses", "system": "Be brief."},
    )
    check_turn(
        result,
        provider="responses",
        model="gpt-test",
        fixture="openai_responses_reasoning_tool.sse",
        finish_reason="tool_calls",  # status "completed" with a function call in the output
        # Already our convention: cached inside input, reasoning inside output.
        usage={
            "input_tokens": 63,
            "output_tokens": 121,
            "cached_input_tokens": 0,
            "reasoning_tokens": 64,
        },
    )
    (sent,) = upstream.requests
    assert sent.path == "/v1/responses"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json["instructions"] == "Be brief."
    assert sent.json["input"] == [{"role": "user", "content": "Weather in Florence?"}]


def test_responses_text_turn(client_e2e: Client, providers: Any, upstream: FakeUpstream) -> None:
    upstream.respond(fixture="openai_responses_stream.sse")
    result = client_e2e.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "Hi in Portuguese?", "provider": "responses"}
    )
    check_turn(
        result,
        provider="responses",
        model="gpt-test",
        fixture="openai_responses_stream.sse",
        finish_reason="stop",
        usage={
            "input_tokens": 20,
            "output_tokens": 8,
            "cached_input_tokens": 0,
            "reasoning_tokens": 0,
        },
    )

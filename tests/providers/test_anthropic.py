"""Anthropic Messages backend: the recorded streams of ``../shared/fixtures`` (mock transport at
several chunkings, and a real socket), the request it sends, retries, errors and checks."""

from __future__ import annotations

import itertools
import json
import logging
from typing import Any

import pytest

from django_llmstream.events import Finish, ReasoningDelta, ToolCallDelta, Usage
from django_llmstream.exceptions import (
    UpstreamBadRequest,
    UpstreamConnectionError,
    UpstreamOverloaded,
    UpstreamProtocolError,
    UpstreamStreamError,
)
from django_llmstream.providers.anthropic import (
    ANTHROPIC_VERSION,
    DEFAULT_MAX_TOKENS,
    FINISH_REASON_MAP,
    AnthropicProvider,
)
from django_llmstream.providers.base import BaseProvider, ChatMessage, ChatRequest
from tests.providers.contract import (
    API_KEY,
    ProviderContract,
    Summary,
    chat_request,
    collect,
    collect_until_error,
    llmstream_settings,
    summarize,
)
from tests.providers.recorded import CHUNKINGS, chunks_of, expected_for, run_chunks
from tests.shared import FIXTURES_DIR, shared_fixtures
from tests.upstream import FakeUpstream, sse

MODEL = "claude-test"
FIXTURES = shared_fixtures("anthropic_*.sse")


def make(base_url: str = "http://127.0.0.1:9", **config: Any) -> AnthropicProvider:
    transport = config.pop("transport", None)
    return AnthropicProvider(
        "anthropic", {"BASE_URL": base_url, "MODELS": [MODEL], **config}, transport=transport
    )


def expected_usage(expected: dict[str, Any]) -> Usage | None:
    """The sidecar's usage (Anthropic's own numbers) in our convention.

    Anthropic's ``input_tokens`` counts only the input that was neither read from nor written
    to the prompt cache; ours includes both: ``input_tokens + cache_read_input_tokens +
    cache_creation_input_tokens``. Cache reads are our ``cached_input_tokens``.
    ``output_tokens`` (thinking included) is taken as is; no separate thinking count.
    """
    usage = expected["usage"]
    if usage is None:
        return None
    read = usage["cached_input_tokens"]
    written = usage["cache_creation_input_tokens"]
    return Usage(
        input_tokens=usage["input_tokens"] + (read or 0) + (written or 0),
        output_tokens=usage["output_tokens"],
        cached_input_tokens=read,
        reasoning_tokens=usage["reasoning_tokens"],
    )


def check_against_expected(
    summary: Summary, error: BaseException | None, expected: dict[str, Any]
) -> None:
    assert summary.text == expected["text"]
    assert summary.reasoning_text == expected["reasoning_text"]
    # Tool calls are numbered from 0 in the order they start, whatever their content block
    # index (anthropic_tool_use.sse: text block 0, tool_use block 1 -> call 0).
    assert summary.tool_calls == [
        {"index": i, "id": call["id"], "name": call["name"], "arguments": call["arguments"]}
        for i, call in enumerate(expected["tool_calls"])
    ]
    if expected["error"] is not None:
        assert expected["error"]["type"] == "overloaded_error"
        # The mid-stream form of HTTP 529: the same retryable "overloaded" error.
        assert isinstance(error, UpstreamOverloaded), error
        assert error.retryable is True
        assert error.type == "upstream_overloaded"
        assert expected["error"]["message"] in str(error)
        assert summary.finish is None
        assert summary.usage is None  # only the provisional message_start count was seen
        return
    assert error is None, error
    raw = expected["finish_reason"]
    # end_turn -> stop, tool_use -> tool_calls, max_tokens -> length (FINISH_REASON_MAP).
    assert summary.finish == Finish(FINISH_REASON_MAP[raw], raw)
    assert summary.usage == expected_usage(expected)


# -- recorded streams --------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("chunk_size", CHUNKINGS)
async def test_fixture_through_mock_transport(name: str, chunk_size: int | None) -> None:
    chunks = chunks_of(name, chunk_size)
    events, error = await run_chunks(make, chunks, model=MODEL)
    check_against_expected(summarize(events), error, expected_for(name))


@pytest.mark.parametrize("name", FIXTURES)
async def test_fixture_through_a_real_socket(name: str, upstream: FakeUpstream) -> None:
    upstream.respond(fixture=name)
    provider = make(upstream.url, API_KEY=API_KEY)
    events, error = await collect_until_error(provider.stream(chat_request(model=MODEL)))
    check_against_expected(summarize(events), error, expected_for(name))
    (sent,) = upstream.requests
    assert (sent.method, sent.path) == ("POST", "/v1/messages")


def test_the_shared_fixtures_are_all_covered() -> None:
    if not FIXTURES_DIR.is_dir():
        pytest.skip("../shared/fixtures not found: CI provides it beside the clone")
    assert set(FIXTURES) >= {
        "anthropic_messages_stream.sse",
        "anthropic_tool_use.sse",
        "anthropic_thinking.sse",
        "anthropic_thinking_recorded.sse",
        "anthropic_error_overloaded.sse",
    }


async def test_tool_call_index_is_not_the_content_block_index() -> None:
    events, error = await run_chunks(make, chunks_of("anthropic_tool_use.sse", None))
    assert error is None
    pieces = [event for event in events if isinstance(event, ToolCallDelta)]
    assert pieces[0] == ToolCallDelta(
        index=0, arguments="", id="toolu_01NRLabsLyVHZPKxbKvkfSMn", name="get_weather"
    )
    assert {piece.index for piece in pieces} == {0}
    assert all(piece.id is None and piece.name is None for piece in pieces[1:])
    assert events[-1] == Finish("tool_calls", "tool_use")


async def test_thinking_streams_as_reasoning_and_signatures_are_not_shown() -> None:
    events, _ = await run_chunks(make, chunks_of("anthropic_thinking.sse", None))
    reasoning = [event for event in events if isinstance(event, ReasoningDelta)]
    assert len(reasoning) == 6
    assert not any("EqQBCgIYAhIM" in getattr(event, "text", "") for event in events)


# -- synthetic streams for what the recordings do not show -------------------------------------


def message_start(**usage: int) -> bytes:
    message = {"id": "msg_x", "type": "message", "role": "assistant", "content": []}
    return sse({"type": "message_start", "message": {**message, "usage": usage}}, event="x")


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return sse({"type": "content_block_start", "index": index, "content_block": block})


def block_delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse({"type": "content_block_delta", "index": index, "delta": delta})


def text(index: int, piece: str) -> bytes:
    return block_delta(index, {"type": "text_delta", "text": piece})


def message_delta(reason: str | None, **usage: int) -> bytes:
    return sse(
        {"type": "message_delta", "delta": {"stop_reason": reason}, "usage": usage},
        event="message_delta",
    )


STOP = sse({"type": "message_stop"}, event="message_stop")


def error_event(kind: str, message: str) -> bytes:
    return sse({"type": "error", "error": {"type": kind, "message": message}}, event="error")


async def test_cache_tokens_are_added_to_input_tokens() -> None:
    chunks = [
        message_start(
            input_tokens=12,
            cache_read_input_tokens=1000,
            cache_creation_input_tokens=300,
            output_tokens=1,
        ),
        block_start(0, {"type": "text", "text": ""}),
        text(0, "Hi"),
        message_delta("end_turn", output_tokens=42),
        STOP,
    ]
    events, error = await run_chunks(make, chunks)
    assert error is None
    assert summarize(events).usage == Usage(
        input_tokens=1312, output_tokens=42, cached_input_tokens=1000, reasoning_tokens=None
    )


async def test_usage_without_cache_fields_leaves_cached_unknown() -> None:
    chunks = [message_start(input_tokens=7), text(0, "a"), message_delta("end_turn"), STOP]
    events, _ = await run_chunks(make, chunks)
    assert summarize(events).usage == Usage(input_tokens=7, output_tokens=None)


@pytest.mark.parametrize(
    ("raw", "mapped"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("something_new", "stop"),
    ],
)
async def test_finish_reasons_are_mapped(raw: str, mapped: str) -> None:
    events, error = await run_chunks(
        make, [message_start(), text(0, "a"), message_delta(raw), STOP]
    )
    assert error is None
    assert events[-1] == Finish(mapped, raw)


async def test_two_tool_calls_after_text_are_calls_0_and_1() -> None:
    chunks = [
        message_start(input_tokens=5),
        block_start(0, {"type": "text", "text": ""}),
        text(0, "Checking."),
        block_start(1, {"type": "tool_use", "id": "toolu_a", "name": "f", "input": {}}),
        block_delta(1, {"type": "input_json_delta", "partial_json": '{"x":'}),
        block_delta(1, {"type": "input_json_delta", "partial_json": "1}"}),
        block_start(2, {"type": "tool_use", "id": "toolu_b", "name": "g", "input": {"y": 2}}),
        message_delta("tool_use", output_tokens=9),
        STOP,
    ]
    events, error = await run_chunks(make, chunks)
    assert error is None
    assert summarize(events).tool_calls == [
        {"index": 0, "id": "toolu_a", "name": "f", "arguments": '{"x":1}'},
        {"index": 1, "id": "toolu_b", "name": "g", "arguments": '{"y":2}'},
    ]


async def test_server_tool_blocks_are_not_tool_calls() -> None:
    chunks = [
        message_start(input_tokens=5),
        block_start(0, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search"}),
        block_delta(0, {"type": "input_json_delta", "partial_json": '{"query":"x"}'}),
        block_start(1, {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1"}),
        block_start(2, {"type": "redacted_thinking", "data": "abc"}),
        block_start(3, {"type": "text", "text": ""}),
        text(3, "Found it."),
        block_delta(3, {"type": "citations_delta", "citation": {"type": "x"}}),
        message_delta("end_turn", output_tokens=3),
        STOP,
    ]
    events, error = await run_chunks(make, chunks)
    assert error is None
    summary = summarize(events)
    assert (summary.text, summary.tool_calls, summary.reasoning_text) == ("Found it.", [], None)


async def test_eof_after_the_stop_reason_is_complete_and_before_it_is_not() -> None:
    events, error = await run_chunks(
        make, [message_start(), text(0, "a"), message_delta("end_turn")]
    )
    assert error is None and events[-1] == Finish("stop", "end_turn")
    events, error = await run_chunks(make, [message_start(), text(0, "a")])
    assert isinstance(error, UpstreamConnectionError)
    assert summarize(events).text == "a"


@pytest.mark.parametrize(
    ("kind", "retryable"),
    [
        ("api_error", True),
        ("rate_limit_error", True),
        ("invalid_request_error", False),
        ("authentication_error", False),
    ],
)
async def test_other_mid_stream_errors(kind: str, retryable: bool) -> None:
    events, error = await run_chunks(
        make, [message_start(), text(0, "part"), error_event(kind, "It broke")]
    )
    assert isinstance(error, UpstreamStreamError)
    assert error.retryable is retryable
    assert "It broke" in str(error) and kind in str(error)
    assert summarize(events).text == "part"


@pytest.mark.parametrize(
    "chunk",
    [b"data: {nope}\n\n", b"data: [1]\n\n", b'data: {"type": "content_block_start"}\n\n'],
)
async def test_malformed_events_are_protocol_errors(chunk: bytes) -> None:
    events, error = await run_chunks(make, [message_start(), text(0, "ok"), chunk])
    assert isinstance(error, UpstreamProtocolError)
    assert summarize(events).text == "ok"


# -- retries -----------------------------------------------------------------------------------


async def test_529_overloaded_then_200_is_retried(upstream: FakeUpstream) -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    upstream.respond(status=529, body=json.dumps(body).encode(), headers={"Retry-After": "0"})
    upstream.respond(fixture="anthropic_messages_stream.sse")
    with llmstream_settings(MAX_RETRIES=1, RETRY_BACKOFF=0.01):
        events = await collect(make(upstream.url).stream(chat_request(model=MODEL)))
    assert summarize(events).text == "Hello!"
    assert len(upstream.requests) == 2


async def test_529_without_retries_is_overloaded_with_the_message(upstream: FakeUpstream) -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    upstream.respond(status=529, body=json.dumps(body).encode())
    _, error = await collect_until_error(make(upstream.url).stream(chat_request(model=MODEL)))
    assert isinstance(error, UpstreamOverloaded)
    assert error.status_code == 529 and error.retryable is True
    assert "Overloaded (overloaded_error)" in str(error)


async def test_overloaded_before_any_text_is_retried(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=[message_start(input_tokens=3), error_event("overloaded_error", "O")])
    upstream.respond(fixture="anthropic_messages_stream.sse")
    with llmstream_settings(MAX_RETRIES=1, RETRY_BACKOFF=0.01):
        events = await collect(make(upstream.url).stream(chat_request(model=MODEL)))
    assert summarize(events).text == "Hello!"
    assert len(upstream.requests) == 2


async def test_overloaded_after_text_is_not_retried(upstream: FakeUpstream) -> None:
    upstream.respond(fixture="anthropic_error_overloaded.sse")
    with llmstream_settings(MAX_RETRIES=2, RETRY_BACKOFF=0.01):
        events, error = await collect_until_error(
            make(upstream.url).stream(chat_request(model=MODEL))
        )
    assert isinstance(error, UpstreamOverloaded)
    assert summarize(events).text == "Hello"
    assert len(upstream.requests) == 1


async def test_400_quotes_the_message_and_type(upstream: FakeUpstream) -> None:
    body = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    upstream.respond(status=400, body=json.dumps(body).encode())
    _, error = await collect_until_error(make(upstream.url).stream(chat_request(model=MODEL)))
    assert isinstance(error, UpstreamBadRequest)
    assert str(error) == (
        "Upstream anthropic answered 400: max_tokens: Field required (invalid_request_error)"
    )


# -- the request -------------------------------------------------------------------------------


async def test_request_headers_and_body(upstream: FakeUpstream) -> None:
    upstream.respond(fixture="anthropic_messages_stream.sse")
    request = ChatRequest(
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")),
        model=MODEL,
        params={"temperature": 0.2, "top_p": 0.9, "max_tokens": 50},
    )
    await collect(make(upstream.url, API_KEY=API_KEY).stream(request))
    (sent,) = upstream.requests
    assert (sent.method, sent.path) == ("POST", "/v1/messages")
    assert sent.headers["x-api-key"] == API_KEY
    assert sent.headers["anthropic-version"] == ANTHROPIC_VERSION
    assert "authorization" not in sent.headers
    assert sent.headers["accept"] == "text/event-stream"
    assert sent.json == {
        "model": MODEL,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "Hi"}],
        "system": "Be brief.",
        "stream": True,
        "temperature": 0.2,
        "top_p": 0.9,
    }


def test_max_tokens_defaults_from_options() -> None:
    assert make().build_body(chat_request(model=MODEL))["max_tokens"] == DEFAULT_MAX_TOKENS
    provider = make(OPTIONS={"DEFAULT_MAX_TOKENS": 1000, "ANTHROPIC_VERSION": "2099-01-01"})
    assert provider.build_body(chat_request(model=MODEL))["max_tokens"] == 1000
    assert provider.headers()["anthropic-version"] == "2099-01-01"


def test_params_the_api_lacks_are_dropped_with_a_debug_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    request = chat_request(
        model=MODEL, seed=1, presence_penalty=0.5, frequency_penalty=0.5, stop=["END"], top_k=5
    )
    with caplog.at_level(logging.DEBUG, logger="django_llmstream.providers"):
        body = make().build_body(request)
    assert body["stop_sequences"] == ["END"]
    assert body["top_k"] == 5
    for name in ("seed", "presence_penalty", "frequency_penalty", "stop"):
        assert name not in body
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert sum("takes no" in message for message in logged) == 3


def test_history_alternates_and_tool_results_are_user_blocks() -> None:
    call = {"index": 0, "id": "toolu_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}
    unanswered = {"index": 1, "id": "toolu_2", "name": "get_time", "arguments": "{}"}
    messages = (
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "Hello"),
        ChatMessage("user", "Are you there?"),
        ChatMessage("assistant", "Let me check.", tool_calls=(call,)),
        ChatMessage("tool", "18 °C", tool_call_id="toolu_1"),
        ChatMessage("user", "Thanks"),
        ChatMessage("assistant", "", tool_calls=(unanswered,)),
        ChatMessage("assistant", ""),
        ChatMessage("user", "And now?"),
        ChatMessage("system", "Answer in French."),
    )
    system, turns = make().format_messages(messages)
    assert system == "Be brief.\n\nAnswer in French."
    assert turns == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Hello"},
                {"type": "text", "text": "Are you there?"},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 °C"},
                {"type": "text", "text": "Thanks"},
                # The unanswered call and the empty assistant message are left out, so the
                # user's next message joins this turn.
                {"type": "text", "text": "And now?"},
            ],
        },
    ]
    roles = [turn["role"] for turn in turns]
    assert all(a != b for a, b in itertools.pairwise(roles))


def test_thinking_budget() -> None:
    provider = make(OPTIONS={"THINKING_BUDGET": 2048, "DEFAULT_MAX_TOKENS": 8000})
    assert provider.check() == []
    body = provider.build_body(chat_request(model=MODEL, temperature=0.5, top_p=0.5))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert "temperature" not in body and "top_p" not in body
    # The budget stays below max_tokens, and thinking is off when there is no room for it.
    body = provider.build_body(chat_request(model=MODEL, max_tokens=2000))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1999}
    body = provider.build_body(chat_request(model=MODEL, max_tokens=500, temperature=0.5))
    assert "thinking" not in body and body["temperature"] == 0.5


# -- configuration -----------------------------------------------------------------------------


def test_api_anthropic_com_needs_a_key() -> None:
    provider = AnthropicProvider("claude", {"MODELS": ["claude-sonnet-4-5"]})
    assert provider.base_url == "https://api.anthropic.com"
    assert [error.id for error in provider.check()] == ["llmstream.E006"]
    keyed = AnthropicProvider("claude", {"MODELS": ["claude-sonnet-4-5"], "API_KEY": "k"})
    assert keyed.check() == []
    by_header = AnthropicProvider(
        "claude", {"MODELS": ["m"], "HEADERS": {"x-api-key": "from-a-header"}}
    )
    assert by_header.check() == []
    assert "from-a-header" in by_header.secrets()


def test_a_compatible_server_needs_no_key() -> None:
    assert make("http://127.0.0.1:4000").check() == []


def test_base_url_with_v1_fails_the_checks() -> None:
    errors = make("https://api.anthropic.com/v1", API_KEY="k").check()
    assert [error.id for error in errors] == ["llmstream.E011"]
    assert "ends with /v1" in errors[0].msg


@pytest.mark.parametrize(
    "options",
    [
        {"DEFAULT_MAX_TOKENS": 0},
        {"DEFAULT_MAX_TOKENS": "4096"},
        {"ANTHROPIC_VERSION": ""},
        {"THINKING_BUDGET": 100},
        {"THINKING_BUDGET": 8000},  # not below DEFAULT_MAX_TOKENS (4096)
    ],
)
def test_bad_options_fail_the_checks(options: dict[str, Any]) -> None:
    assert [error.id for error in make(OPTIONS=options).check()] == ["llmstream.E011"]


def test_unknown_options_fail_the_checks() -> None:
    errors = make(OPTIONS={"MAX_TOKENS": 5}).check()
    assert [error.id for error in errors] == ["llmstream.E017"]
    assert "DEFAULT_MAX_TOKENS" in (errors[0].hint or "")


# -- the contract ------------------------------------------------------------------------------


class TestAnthropicContract(ProviderContract):
    model = MODEL

    def make_provider(self, base_url: str, **config: Any) -> BaseProvider:
        # The contract hands out OpenAI-style base URLs; Anthropic's has no /v1.
        return make(base_url.removesuffix("/v1"), **config)

    def prepare_answer(self, upstream: FakeUpstream) -> None:
        upstream.respond(fixture="anthropic_messages_stream.sse")

    def prepare_slow_answer(self, upstream: FakeUpstream) -> dict[str, Any]:
        # message_start, content_block_start, ping, "Hello" — then nothing.
        upstream.respond(fixture="anthropic_messages_stream.sse", stall_after=4)
        return {}

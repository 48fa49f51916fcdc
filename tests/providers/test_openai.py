"""OpenAI Chat Completions backend: recorded streams (shared fixtures and our own), through a
mock transport at many chunkings and through a real socket; the request it sends; checks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from django_llmstream.events import Finish, TextDelta, ToolCallDelta, Usage
from django_llmstream.exceptions import (
    UpstreamAuthError,
    UpstreamConnectionError,
    UpstreamProtocolError,
    UpstreamStreamError,
)
from django_llmstream.providers.base import BaseProvider, ChatMessage, ChatRequest
from django_llmstream.providers.openai import FINISH_REASON_MAP, OpenAIProvider
from tests.providers.contract import (
    API_KEY,
    ProviderContract,
    Summary,
    chat_request,
    collect,
    collect_until_error,
    summarize,
)
from tests.shared import FIXTURES_DIR, shared_fixture, shared_fixtures
from tests.upstream import (
    DEFAULT_TEXT,
    LOCAL_FIXTURES_DIR,
    FakeUpstream,
    openai_chunks,
    split_events,
    sse,
)

MODEL = "fake-model"

SHARED = shared_fixtures("openai_chat_*.sse")
LOCAL = sorted(path.name for path in LOCAL_FIXTURES_DIR.glob("openai_*.sse"))

EXCEPTIONS: dict[str, type[Exception]] = {
    "UpstreamProtocolError": UpstreamProtocolError,
    "UpstreamConnectionError": UpstreamConnectionError,
    "UpstreamStreamError": UpstreamStreamError,
}


def make(base_url: str = "http://127.0.0.1:9/v1", **config: Any) -> OpenAIProvider:
    options = config.pop("transport", None)
    return OpenAIProvider(
        "openai", {"BASE_URL": base_url, "MODELS": [MODEL], **config}, transport=options
    )


def fixture_path(name: str) -> Path:
    local = LOCAL_FIXTURES_DIR / name
    return local if local.is_file() else shared_fixture(name)


def expected_for(name: str) -> dict[str, Any]:
    path = fixture_path(name)
    expected: dict[str, Any] = json.loads(
        path.with_name(path.name + ".expected.json").read_text("utf-8")
    )
    return expected


class ChunkStream(httpx.AsyncByteStream):
    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def mock_transport(
    chunks: Sequence[bytes], *, status: int = 200, seen: list[httpx.Request] | None = None
) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(
            status, headers={"content-type": "text/event-stream"}, stream=ChunkStream(chunks)
        )

    return httpx.MockTransport(handler)


def rechunk(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def check_against_expected(
    summary: Summary, error: BaseException | None, expected: dict[str, Any]
) -> None:
    assert summary.text == expected["text"]
    assert summary.reasoning_text == expected["reasoning_text"]
    assert summary.tool_calls == [
        {k: call[k] for k in ("index", "id", "name", "arguments")}
        for call in expected["tool_calls"]
    ]
    raises = expected.get("raises") or ("UpstreamStreamError" if expected.get("error") else None)
    if raises:
        assert isinstance(error, EXCEPTIONS[raises]), error
        assert summary.finish is None
        if expected.get("error"):
            assert isinstance(error, UpstreamStreamError)
            assert error.retryable is expected.get("retryable", True)
            # The provider's own message, scrubbed of anything shaped like a key.
            words = [w for w in expected["error"]["message"].split() if not w.startswith("sk-")]
            assert all(word in str(error) for word in words)
            assert "sk-proj-" not in str(error)
        return
    assert error is None, error
    assert summary.finish is not None
    raw = expected["finish_reason"]
    assert summary.finish.raw == raw
    assert summary.finish.reason == FINISH_REASON_MAP.get(raw, "stop")
    if expected["usage"] is None:
        assert summary.usage is None
    else:
        assert summary.usage is not None
        for name in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"):
            assert getattr(summary.usage, name) == expected["usage"][name], name


# -- recorded streams --------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHARED + LOCAL)
@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64])
async def test_fixture_through_mock_transport(name: str, chunk_size: int | None) -> None:
    data = fixture_path(name).read_bytes()
    chunks = split_events(data) if chunk_size is None else rechunk(data, chunk_size)
    provider = make(transport=mock_transport(chunks))
    try:
        events, error = await collect_until_error(provider.stream(chat_request(model=MODEL)))
    finally:
        await provider.aclose()
    check_against_expected(summarize(events), error, expected_for(name))


@pytest.mark.parametrize("name", SHARED + LOCAL)
async def test_fixture_through_a_real_socket(name: str, upstream: FakeUpstream) -> None:
    upstream.respond(fixture=name)
    provider = make(upstream.base_url)
    events, error = await collect_until_error(provider.stream(chat_request(model=MODEL)))
    check_against_expected(summarize(events), error, expected_for(name))


def test_the_shared_fixtures_are_all_covered() -> None:
    if not FIXTURES_DIR.is_dir():
        pytest.skip("../shared/fixtures not found: CI provides it beside the clone")
    assert len(SHARED) >= 4
    assert "openai_chat_error.sse" in SHARED


async def test_text_arrives_piece_by_piece(upstream: FakeUpstream) -> None:
    upstream.respond(fixture="openai_chat_stream_usage.sse")
    events = await collect(make(upstream.base_url).stream(chat_request(model=MODEL)))
    texts = [event.text for event in events if isinstance(event, TextDelta)]
    assert texts[:3] == ["I'm", " unable", " to"]
    assert isinstance(events[-1], Finish)
    assert isinstance(events[-2], Usage), "usage comes once, before the Finish"


async def test_tool_call_pieces_carry_id_and_name_once() -> None:
    data = shared_fixture("openai_chat_tool_calls.sse").read_bytes()
    events, error = await run(split_events(data))
    assert error is None
    pieces = [event for event in events if isinstance(event, ToolCallDelta)]
    firsts = [piece for piece in pieces if piece.id is not None]
    assert [(p.index, p.name) for p in firsts] == [(0, "GetWeatherArgs"), (1, "get_stock_price")]
    assert all(piece.name is None for piece in pieces if piece.id is None)
    assert events[-1] == Finish("tool_calls", "tool_calls")


# -- stream edge cases -------------------------------------------------------------------------


async def run(chunks: Sequence[bytes]) -> tuple[list[Any], BaseException | None]:
    provider = make(transport=mock_transport(chunks))
    try:
        return await collect_until_error(provider.stream(chat_request(model=MODEL)))
    finally:
        await provider.aclose()


async def test_usage_null_on_every_chunk_is_ignored() -> None:
    chunk = {"choices": [{"index": 0, "delta": {"content": "x"}}], "usage": None}
    events, error = await run([sse(chunk), sse(chunk), b"data: [DONE]\n\n"])
    assert error is None
    assert summarize(events).usage is None
    assert summarize(events).text == "xx"
    assert events[-1] == Finish("stop", None), "no finish reason named: stop"


async def test_eof_after_finish_reason_without_done_finishes_normally() -> None:
    events, error = await run(openai_chunks(["Hi"], usage=None, done=False))
    assert error is None
    assert events == [TextDelta("Hi"), Finish("stop", "stop")]


async def test_eof_before_finish_and_done_is_an_incomplete_stream() -> None:
    events, error = await run(
        openai_chunks(["Hi", " there"], finish_reason=None, usage=None, done=False)
    )
    assert isinstance(error, UpstreamConnectionError)
    assert "ended before it was complete" in str(error)
    assert summarize(events).text == "Hi there"


@pytest.mark.parametrize(
    ("raw", "mapped"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("content_filter", "content_filter"),
        ("eos", "stop"),
        ("end_turn", "stop"),
    ],
)
async def test_finish_reasons_are_mapped(raw: str, mapped: str) -> None:
    events, error = await run(openai_chunks(["a"], finish_reason=raw))
    assert error is None
    assert events[-1] == Finish(mapped, raw)


async def test_reasoning_field_variants() -> None:
    chunks = [
        sse({"choices": [{"index": 0, "delta": {"reasoning_content": "A", "reasoning": "A"}}]}),
        sse({"choices": [{"index": 0, "delta": {"reasoning": "B"}}]}),
        sse({"choices": [{"index": 0, "delta": {"content": "C"}, "finish_reason": "stop"}]}),
        b"data: [DONE]\n\n",
    ]
    events, error = await run(chunks)
    assert error is None
    summary = summarize(events)
    assert (summary.reasoning_text, summary.text) == ("AB", "C")


async def test_other_choices_are_ignored() -> None:
    chunks = [
        sse({"choices": [{"index": 1, "delta": {"content": "other"}}]}),
        sse({"choices": [{"index": 0, "delta": {"content": "mine"}, "finish_reason": "stop"}]}),
        b"data: [DONE]\n\n",
    ]
    events, _ = await run(chunks)
    assert summarize(events).text == "mine"


async def test_refusal_is_shown_as_text() -> None:
    chunks = [
        sse({"choices": [{"index": 0, "delta": {"refusal": "I can't help with that."}}]}),
        sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        b"data: [DONE]\n\n",
    ]
    events, _ = await run(chunks)
    assert summarize(events).text == "I can't help with that."


@pytest.mark.parametrize(
    ("chunk", "retryable"),
    [
        ({"error": {"message": "boom", "type": "server_error", "code": None}}, True),
        ({"error": {"message": "bad", "type": "invalid_request_error"}}, False),
        ({"error": {"message": "who", "type": "x", "code": "authentication_failed"}}, False),
        ({"error": "plain string error"}, True),
        ({"object": "error", "message": "vLLM style", "type": "BadRequestError"}, True),
    ],
)
async def test_error_objects_mid_stream(chunk: dict[str, Any], retryable: bool) -> None:
    events, error = await run(
        [*openai_chunks(["a"], finish_reason=None, usage=None, done=False), sse(chunk)]
    )
    assert isinstance(error, UpstreamStreamError)
    assert error.retryable is retryable
    assert summarize(events).text == "a"
    error_object = chunk.get("error")
    if isinstance(error_object, dict):
        message = error_object["message"]
    else:
        message = error_object or chunk["message"]
    assert message in str(error)


async def test_event_error_type_is_an_error() -> None:
    _events, error = await run([sse({"message": "overloaded"}, event="error")])
    assert isinstance(error, UpstreamStreamError)
    assert "overloaded" in str(error)


@pytest.mark.parametrize(
    "line",
    [
        b"data: {not json}\n\n",
        b"data: [1, 2]\n\n",
        b'data: {"choices": 5}\n\n',
        b"data: \xff\xfe\n\n",
    ],
)
async def test_malformed_data_is_a_protocol_error(line: bytes) -> None:
    events, error = await run(
        [*openai_chunks(["ok"], finish_reason=None, usage=None, done=False), line]
    )
    # (Invalid UTF-8 decodes to U+FFFD, which is not JSON either.)
    assert isinstance(error, UpstreamProtocolError)
    assert summarize(events).text == "ok"


# -- the request -------------------------------------------------------------------------------


async def test_request_body_and_headers(upstream: FakeUpstream) -> None:
    provider = make(upstream.base_url, API_KEY=API_KEY)
    request = ChatRequest(
        messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")),
        model=MODEL,
        params={"temperature": 0.2, "max_tokens": 50, "seed": 7},
    )
    events = await collect(provider.stream(request))
    assert summarize(events).text == DEFAULT_TEXT
    (sent,) = upstream.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["accept"] == "text/event-stream"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["user-agent"].startswith("django-llmstream/")
    assert sent.json == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "max_tokens": 50,
        "seed": 7,
    }


async def test_no_authorization_without_a_key(upstream: FakeUpstream) -> None:
    await collect(make(upstream.base_url).stream(chat_request(model=MODEL)))
    assert "authorization" not in upstream.requests[0].headers


async def test_options_stream_usage_and_max_tokens_param(upstream: FakeUpstream) -> None:
    provider = make(
        upstream.base_url,
        OPTIONS={"STREAM_USAGE": False, "MAX_TOKENS_PARAM": "max_completion_tokens"},
    )
    await collect(provider.stream(chat_request(model=MODEL, max_tokens=10)))
    body = upstream.requests[0].json
    assert "stream_options" not in body
    assert body["max_completion_tokens"] == 10
    assert "max_tokens" not in body


async def test_params_cannot_replace_the_stream_keys(upstream: FakeUpstream) -> None:
    await collect(
        make(upstream.base_url).stream(chat_request(model=MODEL, stream=False, model_x=1))
    )
    body = upstream.requests[0].json
    assert body["stream"] is True
    assert body["model"] == MODEL


async def test_headers_and_query_params_options(upstream: FakeUpstream) -> None:
    provider = make(
        upstream.base_url,
        HEADERS={"HTTP-Referer": "https://example.com", "X-Title": "Demo", "api-key": "azure-k1"},
        QUERY_PARAMS={"api-version": "2024-10-21"},
    )
    assert provider.check() == []
    await collect(provider.stream(chat_request(model=MODEL)))
    (sent,) = upstream.requests
    assert sent.headers["http-referer"] == "https://example.com"
    assert sent.headers["x-title"] == "Demo"
    assert sent.headers["api-key"] == "azure-k1"
    assert sent.query == {"api-version": "2024-10-21"}
    assert "azure-k1" in provider.secrets()


def test_tool_messages_are_formatted() -> None:
    provider = make()
    call = {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}
    assistant = provider.format_message(ChatMessage("assistant", "", tool_calls=(call,)))
    assert assistant == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    tool = provider.format_message(ChatMessage("tool", "18 °C", tool_call_id="call_1"))
    assert tool == {"role": "tool", "content": "18 °C", "tool_call_id": "call_1"}


async def test_401_message_quotes_the_provider(upstream: FakeUpstream) -> None:
    body = {
        "error": {
            "message": "Incorrect API key provided: sk-abc***xyz.",
            "type": "invalid_request_error",
        }
    }
    upstream.respond(status=401, body=json.dumps(body).encode())
    _, error = await collect_until_error(
        make(upstream.base_url, API_KEY=API_KEY).stream(chat_request(model=MODEL))
    )
    assert isinstance(error, UpstreamAuthError)
    assert str(error).startswith("Upstream openai answered 401: Incorrect API key provided")


# -- configuration -----------------------------------------------------------------------------


def test_api_openai_com_needs_a_key() -> None:
    provider = OpenAIProvider("openai", {"MODELS": ["gpt-4o-mini"]})
    assert provider.base_url == "https://api.openai.com/v1"
    assert [error.id for error in provider.check()] == ["llmstream.E006"]
    keyed = OpenAIProvider("openai", {"MODELS": ["gpt-4o-mini"], "API_KEY": "sk-x"})
    assert keyed.check() == []


def test_compatible_servers_need_no_key() -> None:
    assert make("http://127.0.0.1:11434/v1").check() == []


def test_bad_options_fail_the_checks() -> None:
    provider = make(OPTIONS={"STREAM_USAGE": "no", "MAX_TOKENS_PARAM": 3, "IDLE_TIMEOUT": -1})
    assert [error.id for error in provider.check()] == ["llmstream.E011"] * 3


def test_base_url_must_be_http() -> None:
    errors = make("ftp://example.com/v1").check()
    assert [error.id for error in errors] == ["llmstream.E011"]


# -- the contract ------------------------------------------------------------------------------


class TestOpenAIContract(ProviderContract):
    model = MODEL

    def make_provider(self, base_url: str, **config: Any) -> BaseProvider:
        return make(base_url, **config)

    def prepare_slow_answer(self, upstream: FakeUpstream) -> dict[str, Any]:
        upstream.respond(chunks=openai_chunks(["Hello", " slowly"]), stall_after=2)
        return {}


async def test_legacy_function_call_is_a_tool_call() -> None:
    chunks = [
        sse(
            {"choices": [{"index": 0, "delta": {"function_call": {"name": "f", "arguments": ""}}}]}
        ),
        sse({"choices": [{"index": 0, "delta": {"function_call": {"arguments": '{"a"'}}}]}),
        sse({"choices": [{"index": 0, "delta": {"function_call": {"arguments": ":1}"}}}]}),
        sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "function_call"}]}),
        b"data: [DONE]\n\n",
    ]
    events, error = await run(chunks)
    assert error is None
    summary = summarize(events)
    assert summary.tool_calls == [{"index": 0, "id": None, "name": "f", "arguments": '{"a":1}'}]
    assert summary.finish == Finish("tool_calls", "function_call")

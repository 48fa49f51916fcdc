"""Hostile upstream bodies against every HTTP backend, in process (httpx.MockTransport).

Property (hypothesis): whatever a server answers with status 200 — any bytes under any
content type cut into any chunks, or well-framed SSE / NDJSON whose JSON has any shape
built from the keys the backends look at — ``stream()`` yields only events and then exactly
one ``Finish``, or raises a :class:`ProviderError` (``upstream_protocol``,
``upstream_connection`` …) with a message; never another exception, never a hang.

The same inputs through a real server and a real turn are in tests/e2e/test_upstream.py.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from django_llmstream.events import Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta
from django_llmstream.exceptions import ProviderError, UpstreamHTTPError, UpstreamProtocolError
from django_llmstream.providers.anthropic import AnthropicProvider
from django_llmstream.providers.http import HTTPProvider
from django_llmstream.providers.ollama import OllamaProvider
from django_llmstream.providers.openai import OpenAIProvider
from django_llmstream.providers.openai_responses import OpenAIResponsesProvider
from tests.providers.contract import chat_request, llmstream_settings

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given  # noqa: E402
from hypothesis import settings as hsettings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

BACKENDS: dict[str, tuple[type[HTTPProvider], str]] = {
    "openai": (OpenAIProvider, "http://upstream.test/v1"),
    "responses": (OpenAIResponsesProvider, "http://upstream.test/v1"),
    "anthropic": (AnthropicProvider, "http://upstream.test"),
    "ollama": (OllamaProvider, "http://upstream.test"),
}
CONTENT_TYPES = [
    "text/event-stream",
    "text/event-stream; charset=utf-8",
    "application/x-ndjson",
    "application/json",
    "application/json; charset=utf-8",
    "text/html",
    "text/plain",
    "application/octet-stream",
    "",
]
PROPERTIES = hsettings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def make(
    backend: str, chunks: list[bytes], content_type: str, status: int = 200, **options: Any
) -> HTTPProvider:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": content_type} if content_type else {}
        return httpx.Response(status, headers=headers, stream=Chunks(chunks))

    cls, base_url = BACKENDS[backend]
    config = {"BASE_URL": base_url, "API_KEY": "k", "MODELS": ["fake-model"], "OPTIONS": options}
    return cls(backend, config, transport=httpx.MockTransport(handler))


async def outcome(provider: HTTPProvider) -> tuple[list[Event], ProviderError | None]:
    events: list[Event] = []
    error: ProviderError | None = None
    try:
        async with asyncio.timeout(10):  # never a hang
            async for event in provider.stream(chat_request()):
                events.append(event)
    except ProviderError as exc:  # anything else fails the test
        error = exc
    finally:
        await provider.aclose()
    return events, error


def check(
    backend: str, chunks: list[bytes], content_type: str, status: int = 200
) -> ProviderError | None:
    with llmstream_settings(MAX_RETRIES=0, MAX_UPSTREAM_EVENT_BYTES=4096):
        events, error = asyncio.run(outcome(make(backend, chunks, content_type, status)))
    finishes = [event for event in events if isinstance(event, Finish)]
    if error is None:
        assert len(finishes) == 1 and events[-1] is finishes[0], events
    else:
        assert not finishes
        assert isinstance(error.message, str) and error.message
        assert error.type.startswith("upstream_")
    for event in events:
        if isinstance(event, TextDelta | ReasoningDelta):
            assert isinstance(event.text, str)
        elif isinstance(event, ToolCallDelta):
            assert isinstance(event.arguments, str) and event.index >= 0
    return error


def cut(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(raw) + 1) for cut in cuts} | {0, len(raw)})
    return [raw[a:b] for a, b in itertools.pairwise(points)] or [b""]


# -- any bytes -------------------------------------------------------------------------------

backends = st.sampled_from(sorted(BACKENDS))
cuts = st.lists(st.integers(min_value=0), max_size=6)


@PROPERTIES
@given(backends, st.binary(max_size=400), cuts, st.sampled_from(CONTENT_TYPES))
def test_any_bytes_end_in_a_finish_or_a_provider_error(
    backend: str, raw: bytes, where: list[int], content_type: str
) -> None:
    check(backend, cut(raw, where), content_type)


# -- well-framed data of any shape -----------------------------------------------------------

KEYS = [
    "type", "index", "choices", "delta", "message", "content", "reasoning_content",
    "reasoning", "refusal", "tool_calls", "function", "function_call", "name", "arguments",
    "id", "call_id", "finish_reason", "usage", "error", "object", "content_block", "text",
    "thinking", "partial_json", "input", "stop_reason", "item", "item_id", "response",
    "status", "incomplete_details", "reason", "summary_index", "done", "done_reason",
    "prompt_eval_count", "eval_count", "prompt_tokens", "completion_tokens",
    "input_tokens", "output_tokens", "cache_read_input_tokens", "prompt_tokens_details",
]  # fmt: skip
KINDS = [
    "message_start", "content_block_start", "content_block_delta", "message_delta",
    "message_stop", "text", "thinking", "tool_use", "text_delta", "thinking_delta",
    "input_json_delta", "error", "overloaded_error", "function_call",
    "response.output_text.delta", "response.reasoning_summary_text.delta",
    "response.output_item.added", "response.function_call_arguments.delta",
    "response.function_call_arguments.done", "response.output_item.done",
    "response.completed", "response.incomplete", "response.failed", "stop", "length",
    "tool_calls", "end_turn", "tool_use",
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-3, max_value=3)
    | st.integers()
    | st.floats(allow_nan=False)
    | st.sampled_from(KINDS)
    | st.text(max_size=8)
)
shaped = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=25,
)
payloads = st.dictionaries(st.sampled_from(KEYS), shaped, max_size=6) | shaped


def frame(backend: str, items: list[Any], tail: bytes) -> bytes:
    if backend == "ollama":
        return b"".join(json.dumps(item).encode() + b"\n" for item in items) + tail
    events = []
    for item in items:
        kind = item.get("type") if isinstance(item, dict) else None
        head = f"event: {kind}\n" if isinstance(kind, str) else ""
        events.append(f"{head}data: {json.dumps(item)}\n\n".encode())
    return b"".join(events) + tail


tails = st.sampled_from(
    [b"", b"data: [DONE]\n\n", b'data: {"cut', b"[" * 3000 + b"\n\n", b"x" * 5000, b"\n\n"]
)


@PROPERTIES
@given(backends, st.lists(payloads, max_size=6), tails, cuts)
def test_any_shape_ends_in_a_finish_or_a_provider_error(
    backend: str, items: list[Any], tail: bytes, where: list[int]
) -> None:
    content_type = "application/x-ndjson" if backend == "ollama" else "text/event-stream"
    check(backend, cut(frame(backend, items, tail), where), content_type)


@PROPERTIES
@given(
    backends,
    st.sampled_from([301, 304, 400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 529]),
    st.binary(max_size=200) | payloads.map(lambda item: json.dumps(item).encode()),
    st.sampled_from(CONTENT_TYPES),
)
def test_any_error_status_and_body_is_an_upstream_error(
    backend: str, status: int, body: bytes, content_type: str
) -> None:
    error = check(backend, [body], content_type, status)
    assert isinstance(error, UpstreamHTTPError), error
    assert error.status_code == status


# -- the cases the properties rely on, spelled out -------------------------------------------

SSE_BACKENDS = ["openai", "responses", "anthropic"]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize(
    ("chunks", "content_type", "words"),
    [
        ([b"<html><title>Portal</title></html>"], "text/html", "an HTML page"),
        ([b"data: " + b"[" * 3000 + b"\n\n"], "text/event-stream", "JSON"),
        ([b"\x1f\x8b\x08\x00garbage\xff\xfe"], "text/event-stream", ""),
        ([b"y" * 3000, b"y" * 3000], "text/event-stream", "more than 4096 bytes"),
    ],
)
def test_protocol_errors(backend: str, chunks: list[bytes], content_type: str, words: str) -> None:
    if backend == "ollama" and content_type == "text/event-stream":
        content_type = "application/x-ndjson"
    error = check(backend, chunks, content_type)
    assert isinstance(error, UpstreamProtocolError), error
    assert words in error.message
    assert error.retryable is False


@pytest.mark.parametrize("backend", SSE_BACKENDS)
def test_a_body_that_is_no_event_stream_is_quoted(backend: str) -> None:
    error = check(backend, [b"Internal Server Error"], "text/plain")
    assert isinstance(error, UpstreamProtocolError)
    assert "not an event stream (Content-Type 'text/plain')" in error.message
    assert "'Internal Server Error'" in error.message


@pytest.mark.parametrize("backend", SSE_BACKENDS)
def test_comments_only_is_a_stream_cut_short_not_garbage(backend: str) -> None:
    error = check(backend, [b": keep-alive\n\n"], "text/event-stream")
    assert error is not None and error.type == "upstream_connection"


def openai_completion(**message: Any) -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    return json.dumps({"object": "chat.completion", "choices": [choice], "usage": usage}).encode()


def run(provider_factory: Callable[[], HTTPProvider]) -> tuple[list[Event], ProviderError | None]:
    with llmstream_settings(MAX_RETRIES=0):
        return asyncio.run(outcome(provider_factory()))


def test_openai_reads_a_whole_json_answer() -> None:
    body = openai_completion(
        content="Whole answer",
        reasoning_content="thought",
        tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    )
    events, error = run(lambda: make("openai", [body[:7], body[7:]], "application/json"))
    assert error is None
    assert events[:3] == [
        ReasoningDelta("thought"),
        TextDelta("Whole answer"),
        ToolCallDelta(index=0, arguments="{}", id="c1", name="f"),
    ]
    assert events[-1] == Finish("stop", "stop")
    assert events[-2].input_tokens == 3  # type: ignore[union-attr]


@pytest.mark.parametrize("backend", ["anthropic", "responses"])
def test_other_backends_refuse_a_whole_json_answer(backend: str) -> None:
    error = check(backend, [openai_completion(content="x")], "application/json")
    assert isinstance(error, UpstreamProtocolError)
    assert "JSON instead of a stream" in error.message


def test_a_json_error_with_status_200_is_quoted() -> None:
    body = b'{"error": {"message": "model overloaded, try later"}}'
    error = check("openai", [body], "application/json")
    assert isinstance(error, UpstreamProtocolError)
    assert "model overloaded, try later" in error.message


def test_the_cap_is_a_provider_option() -> None:
    chunks = [b'{"message": {"content": "' + b"z" * 3000]
    _, error = run(lambda: make("ollama", chunks, "", MAX_UPSTREAM_EVENT_BYTES=2048))
    assert isinstance(error, UpstreamProtocolError)
    assert "a line of more than 2048 bytes" in error.message


# -- the settings are checked at start-up ----------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "bad"),
    [
        ({"MAX_UPSTREAM_EVENT_BYTES": 100}, True),
        ({"MAX_UPSTREAM_EVENT_BYTES": 4096.0}, True),
        ({"MAX_UPSTREAM_EVENT_BYTES": None}, True),
        ({"MAX_UPSTREAM_EVENT_BYTES": 4096}, False),
        ({"MAX_OUTPUT_CHARS": 0}, True),
        ({"MAX_OUTPUT_CHARS": "lots"}, True),
        ({"MAX_OUTPUT_CHARS": None}, False),
        ({"MAX_OUTPUT_CHARS": 5000}, False),
    ],
)
def test_the_settings_are_checked(overrides: dict[str, Any], bad: bool) -> None:
    from django_llmstream.checks import check_settings

    with llmstream_settings(**overrides):
        ids = [message.id for message in check_settings()]
    assert ("llmstream.E012" in ids) is bad, ids


@pytest.mark.parametrize(
    ("value", "bad"), [(100, True), (2048.5, True), ("big", True), (2048, False)]
)
def test_the_entry_option_is_checked(value: Any, bad: bool) -> None:
    provider = make("openai", [], "", MAX_UPSTREAM_EVENT_BYTES=value)
    messages = [m for m in provider.check() if "MAX_UPSTREAM_EVENT_BYTES" in m.msg]
    assert bool(messages) is bad, messages
    if bad:
        assert messages[0].id == "llmstream.E011"
        assert messages[0].hint == "Use a whole number of bytes >= 1024."

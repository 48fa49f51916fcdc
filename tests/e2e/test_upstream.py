"""Hostile upstreams end to end: real uvicorn, real sockets, the fake upstream sending what a
broken or malicious server sends — malformed SSE, NDJSON and JSON, binary garbage, HTML pages
with status 200, a whole JSON answer instead of a stream, gzip with and without its header,
endless lines, endless answers, connections cut in the middle of an event or of an HTTP
chunk.

Each must end the turn ``failed`` with the right ``error`` event type, the text streamed
so far kept (in the events and in the database), within seconds (never a hang) — and the
worker must go on serving: a normal turn right after succeeds. The few inputs that are
accepted on purpose (a compressed body with its ``Content-Encoding``, an odd content type
carrying a valid stream, a whole Chat Completions JSON answer) complete normally.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from django_llmstream.exceptions import is_retryable
from django_llmstream.models import Message
from tests.e2e.conftest import SECRET, llm_settings
from tests.live import Client, SSEResult
from tests.upstream import FakeUpstream, openai_chunks, sse

pytestmark = pytest.mark.e2e

KEPT = "Hello"
# A turn must end within this many seconds, whatever the upstream does (IDLE_TIMEOUT is 3).
PROMPT_END = 8.0


# -- the four wire formats, each starting with "Hel" + "lo" ----------------------------------

OPENAI_START = openai_chunks(["Hel", "lo"], usage=None, finish_reason=None, done=False)
ANTHROPIC_START = [
    sse(
        {"type": "message_start", "message": {"usage": {"input_tokens": 3}}}, event="message_start"
    ),
    sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        event="content_block_start",
    ),
    *(
        sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
            event="content_block_delta",
        )
        for t in ("Hel", "lo")
    ),
]
RESPONSES_START = [
    sse({"type": "response.output_text.delta", "delta": t}, event="response.output_text.delta")
    for t in ("Hel", "lo")
]
OLLAMA_START = [
    json.dumps({"message": {"role": "assistant", "content": t}, "done": False}).encode() + b"\n"
    for t in ("Hel", "lo")
]
START = {
    "openai": OPENAI_START,
    "anthropic": ANTHROPIC_START,
    "responses": RESPONSES_START,
    "ollama": OLLAMA_START,
}
GARBAGE = bytes(range(256)) * 4  # binary: NUL, control bytes, invalid UTF-8
HTML = b"<!doctype html><html><head><title>Captive portal</title></head><body>Log in</body>"


def providers(upstream: FakeUpstream, **ollama_options: Any) -> dict[str, Any]:
    """The ``openai`` entry of the e2e settings and one entry per native backend."""
    entries: dict[str, Any] = dict(llm_settings(upstream.base_url)["PROVIDERS"])
    native = "django_llmstream.providers."
    entries["anthropic"] = {
        "BACKEND": native + "anthropic.AnthropicProvider",
        "BASE_URL": upstream.url,
        "API_KEY": SECRET,
        "MODELS": ["claude-test"],
    }
    entries["responses"] = {
        "BACKEND": native + "openai_responses.OpenAIResponsesProvider",
        "BASE_URL": upstream.base_url,
        "API_KEY": SECRET,
        "MODELS": ["gpt-test"],
    }
    entries["ollama"] = {
        "BACKEND": native + "ollama.OllamaProvider",
        "BASE_URL": upstream.url,
        "MODELS": ["llama-test"],
        "OPTIONS": ollama_options,
    }
    return entries


@pytest.fixture
def backends(configure: Callable[..., None], upstream: FakeUpstream) -> Callable[..., None]:
    """``backends(**settings)``: all four HTTP backends pointed at the fake upstream."""

    def apply(ollama_options: dict[str, Any] | None = None, **overrides: Any) -> None:
        configure(PROVIDERS=providers(upstream, **(ollama_options or {})), **overrides)

    apply()
    return apply


def turn(client: Client, provider: str = "openai") -> tuple[SSEResult, float]:
    started = time.monotonic()
    result = client.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "hi", "provider": provider}
    )
    return result, time.monotonic() - started


def assert_failed(
    result: SSEResult, elapsed: float, error_type: str, kept: str, words: str = ""
) -> dict[str, Any]:
    assert result.status == 200
    assert elapsed < PROMPT_END, f"the turn took {elapsed:.1f} s"
    assert result.events[0].event == "start"
    assert result.terminal.event == "error", result.events[-3:]
    error: dict[str, Any] = result.terminal.json()
    assert error["type"] == error_type, error
    assert error["retryable"] is is_retryable(error_type)
    assert words in error["message"], error["message"]
    assert "Traceback" not in error["message"]
    assert result.text == kept
    stored = Message.objects.get(pk=result.events[0].json()["turn"])
    assert (stored.status, stored.error_type, stored.content) == ("failed", error_type, kept)
    assert stored.error_message == error["message"]
    return error


def assert_still_serving(client: Client, upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(["still ", "serving"]))
    result, _ = turn(client)
    assert result.terminal.event == "done", result.events[-2:]
    assert result.text == "still serving"


# -- malformed data after some text ----------------------------------------------------------

MALFORMED = [
    ("openai", [b"data: {not json\n\n"], "data that is not JSON"),
    ("openai", [b"data: [1, 2]\n\n"], "a chunk that is not a JSON object"),
    ("openai", [b'data: {"choices": 5}\n\n'], "data it could not read (TypeError"),
    ("openai", [b"data: " + b"[" * 5000 + b"\n\n"], "data that is not JSON"),
    ("openai", [b"data: \xff\xfe\x00\x01\x02\n\n"], "data that is not JSON"),
    ("openai", [b"data: " + GARBAGE + b"\n\n"], "data that is not JSON"),
    (
        "anthropic",
        [sse({"type": "content_block_start", "content_block": {}}, event="content_block_start")],
        "data it could not read (KeyError",
    ),
    ("anthropic", [b"event: content_block_delta\ndata: {oops\n\n"], "data that is not JSON"),
    ("anthropic", [b'data: "just a string"\n\n'], "an event that is not a JSON object"),
    ("responses", [b"data: nope\n\n"], "data that is not JSON"),
    ("responses", [b"data: " + b"{" * 3000 + b"\n\n"], "data that is not JSON"),
    ("ollama", [b"{broken\n"], "data that is not JSON"),
    ("ollama", [b"[1]\n"], "a line that is not a JSON object"),
    ("ollama", [GARBAGE + b"\n"], "data that is not JSON"),
]


@pytest.mark.parametrize(
    ("provider", "rest", "words"),
    MALFORMED,
    ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(MALFORMED)],
)
def test_malformed_data_fails_the_turn_and_keeps_the_text(
    client_e2e: Client,
    backends: Any,
    upstream: FakeUpstream,
    provider: str,
    rest: list[bytes],
    words: str,
) -> None:
    # The rest is followed by a stall: only the error can end the turn before IDLE_TIMEOUT.
    upstream.respond(
        chunks=[*START[provider], *rest, b": more\n\n"],
        stall_after=len(START[provider]) + len(rest),
    )
    result, elapsed = turn(client_e2e, provider)
    assert_failed(result, elapsed, "upstream_protocol", KEPT, words)
    assert upstream.wait_for_disconnect(2.0), "the upstream connection was left open"
    assert_still_serving(client_e2e, upstream)


# -- bodies that are no stream at all --------------------------------------------------------

NOT_A_STREAM: list[tuple[str, dict[str, Any], str]] = [
    ("openai", {"chunks": [GARBAGE]}, "a body that is not an event stream"),
    ("anthropic", {"chunks": [GARBAGE]}, "a body that is not an event stream"),
    ("responses", {"chunks": [b"\x00" * 100]}, "a body that is not an event stream"),
    ("ollama", {"chunks": [GARBAGE]}, "data that is not JSON"),
    (
        "openai",
        {"chunks": [b"Internal Server Error"], "headers": {"Content-Type": "text/plain"}},
        "a body that is not an event stream (Content-Type 'text/plain'), starting "
        "'Internal Server Error'",
    ),
    (
        "openai",
        {"body": HTML, "headers": {"Content-Type": "text/html; charset=utf-8"}},
        "an HTML page instead of a stream (status 200): Captive portal",
    ),
    (
        "ollama",
        {"body": HTML, "headers": {"Content-Type": "text/html"}},
        "an HTML page instead of a stream (status 200): Captive portal",
    ),
    (
        "openai",
        {"body": b'{"error": {"message": "streaming is not supported"}}'},
        "JSON instead of a stream (status 200): streaming is not supported",
    ),
    ("openai", {"body": b'{"choices": "none"}'}, "JSON instead of a stream (status 200)"),
    (
        "anthropic",
        {"body": b'{"type": "message", "content": [{"type": "text", "text": "x"}]}'},
        "JSON instead of a stream (status 200)",
    ),
    (
        "openai",
        {"chunks": [b"not gzip at all"], "headers": {"Content-Encoding": "gzip"}},
        "a body that cannot be decoded",
    ),
    (
        "openai",
        # Compressed, but without the Content-Encoding that says so.
        {"chunks": [gzip.compress(b"".join(openai_chunks(["zipped"])))]},
        "a body that is not an event stream",
    ),
]


@pytest.mark.parametrize(
    ("provider", "respond", "words"),
    NOT_A_STREAM,
    ids=[f"{p}-{i}" for i, (p, _, _) in enumerate(NOT_A_STREAM)],
)
def test_a_body_that_is_no_stream_fails_the_turn(
    client_e2e: Client,
    backends: Any,
    upstream: FakeUpstream,
    provider: str,
    respond: dict[str, Any],
    words: str,
) -> None:
    upstream.respond(**respond)
    result, elapsed = turn(client_e2e, provider)
    assert_failed(result, elapsed, "upstream_protocol", "", words)
    assert len(upstream.requests) == 1  # a protocol error is not retried
    assert_still_serving(client_e2e, upstream)


def test_odd_but_valid_bodies_are_accepted(
    client_e2e: Client, backends: Any, upstream: FakeUpstream
) -> None:
    # A compressed stream with its Content-Encoding (although we asked for identity).
    zipped = gzip.compress(b"".join(openai_chunks(["zip", "ped"])))
    upstream.respond(chunks=[zipped[:20], zipped[20:]], headers={"Content-Encoding": "gzip"})
    # A valid stream under a content type that does not say so.
    upstream.respond(
        chunks=openai_chunks(["octet ", "stream"]),
        headers={"Content-Type": "application/octet-stream"},
    )
    # A server that ignores "stream": true and sends one chat.completion.
    completion = {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "one piece"},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
    }
    upstream.respond(body=json.dumps(completion).encode())
    texts = []
    for _ in range(3):
        result, elapsed = turn(client_e2e)
        assert result.terminal.event == "done", result.events[-2:]
        assert elapsed < PROMPT_END
        texts.append(result.text)
    assert texts == ["zipped", "octet stream", "one piece"]
    done = result.terminal.json()
    assert done["finish_reason"] == "length"
    assert (done["usage"]["input_tokens"], done["usage"]["output_tokens"]) == (4, 2)
    stored = Message.objects.get(pk=result.events[0].json()["turn"])
    assert (stored.status, stored.content, stored.output_tokens) == ("completed", "one piece", 2)


# -- endless lines ---------------------------------------------------------------------------


def test_an_endless_event_is_refused_at_the_cap(
    client_e2e: Client, backends: Any, upstream: FakeUpstream
) -> None:
    backends(MAX_UPSTREAM_EVENT_BYTES=4096)
    endless = [b"data: " + b"x" * 1000] + [b"x" * 1000] * 20
    upstream.respond(chunks=[*OPENAI_START, *endless], stall_after=len(OPENAI_START) + 21)
    result, elapsed = turn(client_e2e)
    assert_failed(result, elapsed, "upstream_protocol", KEPT, "an event of more than 4096 bytes")
    assert upstream.wait_for_disconnect(2.0)
    # One whole event over the cap is refused too.
    upstream.respond(chunks=[*OPENAI_START, b"data: " + b"y" * 10_000 + b"\n\n"])
    result, elapsed = turn(client_e2e)
    assert_failed(result, elapsed, "upstream_protocol", KEPT, "an event of more than 4096 bytes")
    assert_still_serving(client_e2e, upstream)


def test_an_endless_line_is_refused_at_the_entry_cap(
    client_e2e: Client, backends: Any, upstream: FakeUpstream
) -> None:
    backends(ollama_options={"MAX_UPSTREAM_EVENT_BYTES": 2048})
    endless = [b'{"message": {"content": "' + b"z" * 1000] + [b"z" * 1000] * 20
    upstream.respond(chunks=[*OLLAMA_START, *endless], stall_after=len(OLLAMA_START) + 21)
    result, elapsed = turn(client_e2e, "ollama")
    assert_failed(result, elapsed, "upstream_protocol", KEPT, "a line of more than 2048 bytes")
    assert upstream.wait_for_disconnect(2.0)
    assert_still_serving(client_e2e, upstream)


# -- endless answers -------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "ollama"])
def test_an_endless_answer_stops_at_max_output_chars(
    client_e2e: Client, backends: Any, upstream: FakeUpstream, provider: str
) -> None:
    backends(MAX_OUTPUT_CHARS=100)
    if provider == "openai":
        endless = openai_chunks(["0123456789"] * 3000, usage=None, finish_reason=None, done=False)
    else:
        line = {"message": {"role": "assistant", "content": "0123456789"}, "done": False}
        endless = [json.dumps(line).encode() + b"\n"] * 3000
    upstream.respond(chunks=endless, delay=0.002)
    result, elapsed = turn(client_e2e, provider)
    error = assert_failed(result, elapsed, "output_too_long", "0123456789" * 10)
    assert error["retryable"] is False
    assert "100 characters (MAX_OUTPUT_CHARS)" in error["message"]
    assert upstream.wait_for_disconnect(2.0), "the upstream kept streaming"
    assert_still_serving(client_e2e, upstream)


def test_max_output_chars_counts_reasoning_and_tool_arguments(
    client_e2e: Client, backends: Any, upstream: FakeUpstream
) -> None:
    backends(MAX_OUTPUT_CHARS=25)
    base = {"object": "chat.completion.chunk", "model": "fake-model"}

    def delta(**fields: Any) -> bytes:
        return sse({**base, "choices": [{"index": 0, "delta": fields, "finish_reason": None}]})

    call = {"index": 0, "id": "call_1", "function": {"name": "lookup", "arguments": '{"q": "'}}
    more = {"index": 0, "function": {"arguments": "abc"}}
    upstream.respond(
        chunks=[
            delta(reasoning_content="thinking.."),  # 10
            delta(tool_calls=[call]),  # 7
            delta(tool_calls=[more]),  # 3
            *[delta(content="abcdefgh") for _ in range(50)],  # 5 of these fit
        ],
        stall_after=53,
    )
    result, elapsed = turn(client_e2e)
    assert_failed(result, elapsed, "output_too_long", "abcde")
    stored = Message.objects.get(pk=result.events[0].json()["turn"])
    assert stored.reasoning == "thinking.."
    assert stored.tool_calls[0]["arguments"] == '{"q": "abc'
    assert upstream.wait_for_disconnect(2.0)
    assert_still_serving(client_e2e, upstream)


# -- connections cut short -------------------------------------------------------------------


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


CUT: list[tuple[str, dict[str, Any], str, str]] = [
    # The connection closes in the middle of an SSE event (chunked encoding left unfinished).
    (
        "openai",
        {
            "chunks": [*OPENAI_START, b'data: {"choices": [{"delta": {"content": "mo'],
            "close_after": len(OPENAI_START) + 1,
        },
        KEPT,
        "was cut mid-stream",
    ),
    # ... in the middle of an HTTP chunk: its size line promises 1024 bytes, 12 arrive.
    (
        "openai",
        {
            "chunks": [*map(_http_chunk, OPENAI_START), b'400\r\ndata: {"cho'],
            "chunked": False,
            "headers": {"Transfer-Encoding": "chunked"},
        },
        KEPT,
        "was cut mid-stream",
    ),
    # ... before the Content-Length it announced.
    (
        "openai",
        {"chunks": OPENAI_START, "chunked": False, "headers": {"Content-Length": "100000"}},
        KEPT,
        "was cut mid-stream",
    ),
    # A body delimited by the close, ending inside an event: complete as HTTP, not as SSE.
    (
        "openai",
        {"chunks": [*OPENAI_START, b'data: {"cho'], "chunked": False},
        KEPT,
        "ended before it was complete",
    ),
    ("openai", {"chunks": []}, "", "ended before it was complete"),
    (
        "anthropic",
        {"chunks": [*ANTHROPIC_START, b"event: content_block_delta\ndata: {"], "close_after": 5},
        KEPT,
        "was cut mid-stream",
    ),
    (
        "ollama",
        {"chunks": [*OLLAMA_START, b'{"message": {"content": "mo'], "close_after": 3},
        KEPT,
        "was cut mid-stream",
    ),
]


@pytest.mark.parametrize(
    ("provider", "respond", "kept", "words"),
    CUT,
    ids=[f"{p}-{i}" for i, (p, _, _, _) in enumerate(CUT)],
)
def test_a_connection_cut_short_fails_the_turn_and_keeps_the_text(
    client_e2e: Client,
    backends: Any,
    upstream: FakeUpstream,
    provider: str,
    respond: dict[str, Any],
    kept: str,
    words: str,
) -> None:
    upstream.respond(**respond)
    result, elapsed = turn(client_e2e, provider)
    assert_failed(result, elapsed, "upstream_connection", kept, words)
    assert_still_serving(client_e2e, upstream)

"""The shared HTTP plumbing (providers/http.py), through real sockets against the fake
upstream: status mapping, retries, timeouts, cut connections, cancellation, pooling, secrets."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from django_llmstream.events import Event, Finish, TextDelta
from django_llmstream.exceptions import (
    ProviderError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamConnectionError,
    UpstreamHTTPError,
    UpstreamOverloaded,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from django_llmstream.providers.base import ChatRequest
from django_llmstream.providers.http import (
    HTTPProvider,
    StreamState,
    aclose_clients,
    get_client,
    parse_retry_after,
)
from django_llmstream.providers.openai import OpenAIProvider
from tests.providers.contract import (
    API_KEY,
    chat_request,
    collect,
    collect_until_error,
    llmstream_settings,
    secret_leaks,
    summarize,
)
from tests.upstream import DEFAULT_TEXT, FakeUpstream, echo_error, openai_chunks

MODEL = "fake-model"


def make(base_url: str, **config: Any) -> OpenAIProvider:
    return OpenAIProvider("openai", {"BASE_URL": base_url, "MODELS": [MODEL], **config})


def request() -> ChatRequest:
    return chat_request(model=MODEL)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(autouse=True)
async def _close_shared_clients() -> AsyncIterator[None]:
    # Tests without the upstream fixture create the loop's shared client too.
    yield
    await aclose_clients()


class LinesProvider(HTTPProvider):
    """A minimal NDJSON backend: lines of ``{"text": ...}`` then ``{"done": true}``."""

    accept = "application/x-ndjson"

    def endpoint(self, request: ChatRequest) -> str:
        return "api/lines"

    def build_body(self, request: ChatRequest) -> Mapping[str, Any]:
        return {"model": request.model}

    async def parse_stream(
        self, response: httpx.Response, state: StreamState
    ) -> AsyncIterator[Event]:
        async for line in self.iter_lines(state):
            data = self.decode_json(line)
            if data.get("done"):
                yield Finish("stop", "done")
                return
            yield TextDelta(data["text"])


# -- status codes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, UpstreamBadRequest, False),
        (401, UpstreamAuthError, False),
        (403, UpstreamAuthError, False),
        (404, UpstreamBadRequest, False),
        (408, UpstreamBadRequest, True),
        (422, UpstreamBadRequest, False),
        (429, UpstreamRateLimited, True),
        (500, UpstreamServerError, True),
        (502, UpstreamServerError, True),
        (503, UpstreamOverloaded, True),
        (529, UpstreamOverloaded, True),
    ],
)
async def test_status_mapping(
    status: int, kind: type[UpstreamHTTPError], retryable: bool, upstream: FakeUpstream
) -> None:
    message = {"error": {"message": f"The provider says {status}.", "type": "x"}}
    upstream.respond(status=status, body=json.dumps(message).encode())
    events, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert events == []
    assert type(error) is kind
    assert error.status_code == status
    assert error.retryable is retryable
    assert str(error) == f"Upstream openai answered {status}: The provider says {status}."
    assert len(upstream.requests) == 1, "MAX_RETRIES is 0 in the test settings"


async def test_429_retry_after(upstream: FakeUpstream) -> None:
    upstream.respond(status=429, headers={"Retry-After": "17"})
    _, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_after == 17
    assert "fake upstream error 429" in str(error)


async def test_long_error_messages_are_cut(upstream: FakeUpstream) -> None:
    upstream.respond(status=400, body=b"x" * 5000)
    _, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert isinstance(error, UpstreamBadRequest)
    assert 500 < len(str(error)) < 600


async def test_html_error_pages_fall_back_to_the_reason(upstream: FakeUpstream) -> None:
    upstream.respond(status=502, body=b"<html><body>Bad gateway</body></html>")
    _, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert str(error) == "Upstream openai answered 502: Bad Gateway"


async def test_redirects_are_not_followed(upstream: FakeUpstream) -> None:
    upstream.respond(status=301, body=b"", headers={"Location": "https://elsewhere/v1"})
    _, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert isinstance(error, UpstreamBadRequest)
    assert "redirect to https://elsewhere/v1: check BASE_URL" in str(error)


async def test_json_instead_of_a_stream(upstream: FakeUpstream) -> None:
    upstream.respond(body=b'{"error": {"message": "stream not supported"}}')
    _, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert isinstance(error, UpstreamProtocolError)
    assert "stream not supported" in str(error)


async def test_undecodable_body_is_a_protocol_error(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=[b"this is not gzip at all"], headers={"Content-Encoding": "gzip"})
    _, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert isinstance(error, UpstreamProtocolError)
    assert isinstance(error.__cause__, httpx.DecodingError)


async def test_compressed_streams_are_decoded(upstream: FakeUpstream) -> None:
    body = gzip.compress(b"".join(openai_chunks(["zipped"])))
    upstream.respond(chunks=[body[:10], body[10:]], headers={"Content-Encoding": "gzip"})
    events = await collect(make(upstream.base_url).stream(request()))
    assert summarize(events).text == "zipped"


# -- retries -----------------------------------------------------------------------------------


async def test_retry_before_the_first_token(upstream: FakeUpstream) -> None:
    upstream.respond(status=500)
    with llmstream_settings(MAX_RETRIES=1, RETRY_BACKOFF=0.01):
        events = await collect(make(upstream.base_url).stream(request()))
    assert summarize(events).text == DEFAULT_TEXT
    assert len(upstream.requests) == 2


async def test_retries_are_bounded(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        upstream.respond(status=503)
    with llmstream_settings(MAX_RETRIES=2, RETRY_BACKOFF=0.01), caplog.at_level(logging.WARNING):
        _, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert isinstance(error, UpstreamOverloaded)
    assert len(upstream.requests) == 3
    messages = [r.getMessage() for r in caplog.records if r.name == "django_llmstream.providers"]
    assert sum("Retrying" in m for m in messages) == 2
    assert "[upstream_overloaded, retryable=True]" in messages[-1]


async def test_retry_after_is_honoured(upstream: FakeUpstream) -> None:
    upstream.respond(status=429, headers={"Retry-After": "0.3"})
    loop = asyncio.get_running_loop()
    started = loop.time()
    with llmstream_settings(MAX_RETRIES=1, RETRY_BACKOFF=0.01):
        events = await collect(make(upstream.base_url).stream(request()))
    assert loop.time() - started >= 0.3
    assert summarize(events).text == DEFAULT_TEXT


async def test_a_long_retry_after_fails_at_once(upstream: FakeUpstream) -> None:
    upstream.respond(status=429, headers={"Retry-After": "3600"})
    with llmstream_settings(MAX_RETRIES=3, RETRY_BACKOFF=0.01):
        _, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert isinstance(error, UpstreamRateLimited)
    assert error.retry_after == 3600
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_client_errors_are_not_retried(status: int, upstream: FakeUpstream) -> None:
    upstream.respond(status=status)
    with llmstream_settings(MAX_RETRIES=2, RETRY_BACKOFF=0.01):
        _, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert isinstance(error, UpstreamHTTPError)
    assert len(upstream.requests) == 1


async def test_no_retry_after_the_first_event(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(["Hello", " world"]), close_after=2)
    with llmstream_settings(MAX_RETRIES=2, RETRY_BACKOFF=0.01):
        events, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert isinstance(error, UpstreamConnectionError)
    assert summarize(events).text == "Hello"
    assert len(upstream.requests) == 1


async def test_a_cut_before_any_event_is_retried(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(["lost"]), close_after=1)  # only the role chunk
    with llmstream_settings(MAX_RETRIES=1, RETRY_BACKOFF=0.01):
        events = await collect(make(upstream.base_url).stream(request()))
    assert summarize(events).text == DEFAULT_TEXT
    assert len(upstream.requests) == 2


async def test_retries_with_connect_errors() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with llmstream_settings(MAX_RETRIES=2, RETRY_BACKOFF=0.05):
        provider = make(f"http://127.0.0.1:{closed_port()}/v1")
        _, error = await collect_until_error(provider.stream(request()))
    assert isinstance(error, UpstreamConnectionError)
    assert loop.time() - started >= 0.05 + 0.1  # two backoffs: 0.05, then 0.1


def test_retry_after_parsing() -> None:
    assert parse_retry_after({"Retry-After": "12"}) == 12
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": "-3"}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    when = datetime.now(UTC) + timedelta(seconds=30)
    seconds = parse_retry_after({"Retry-After": format_datetime(when, usegmt=True)})
    assert seconds is not None and 28 <= seconds <= 30
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert parse_retry_after({"Retry-After": past}) == 0


# -- transport failures ------------------------------------------------------------------------


async def test_connection_refused() -> None:
    provider = make(f"http://127.0.0.1:{closed_port()}/v1", API_KEY=API_KEY)
    events, error = await collect_until_error(provider.stream(request()))
    assert events == []
    assert isinstance(error, UpstreamConnectionError)
    assert error.retryable is True
    assert str(error).startswith("Cannot connect to upstream openai (http://127.0.0.1:")
    assert isinstance(error.__cause__, httpx.ConnectError)
    assert secret_leaks(API_KEY, error, []) == []


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (
            httpx.ConnectTimeout("timed out"),
            UpstreamTimeout,
            "did not accept a connection within 2 s",
        ),
        (httpx.PoolTimeout("timed out"), UpstreamTimeout, "MAX_CONNECTIONS reached"),
        (httpx.ConnectError("refused"), UpstreamConnectionError, "Cannot connect"),
        (httpx.UnsupportedProtocol("no"), UpstreamConnectionError, "Cannot send"),
    ],
)
async def test_connect_failures_are_mapped_and_retried(
    exc: httpx.HTTPError, kind: type[ProviderError], text: str
) -> None:
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        raise exc

    provider = OpenAIProvider(
        "openai",
        {
            "BASE_URL": "http://upstream.test/v1",
            "MODELS": [MODEL],
            "OPTIONS": {"CONNECT_TIMEOUT": 2, "MAX_RETRIES": 1, "RETRY_BACKOFF": 0.01},
        },
        transport=httpx.MockTransport(handler),
    )
    _, error = await collect_until_error(provider.stream(request()))
    await provider.aclose()
    assert type(error) is kind
    assert isinstance(error, ProviderError)
    assert text in str(error)
    assert error.__cause__ is exc
    retried = not isinstance(exc, httpx.UnsupportedProtocol)
    assert len(calls) == (2 if retried else 1)
    assert error.retryable is retried


async def test_idle_timeout(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(["Hello", " never"]), stall_after=2)
    loop = asyncio.get_running_loop()
    with llmstream_settings(IDLE_TIMEOUT=0.5):
        started = loop.time()
        events, error = await collect_until_error(make(upstream.base_url).stream(request()))
        elapsed = loop.time() - started
    assert isinstance(error, UpstreamTimeout)
    assert str(error) == "No data from upstream openai for 0.5 s."
    assert isinstance(error.__cause__, httpx.ReadTimeout)
    assert summarize(events).text == "Hello"
    assert 0.45 <= elapsed < 0.5 + 1.0
    assert await upstream.await_for_disconnect(1.0)


async def test_idle_timeout_per_provider(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(["Hello"]), stall_after=1)
    provider = make(upstream.base_url, OPTIONS={"IDLE_TIMEOUT": 0.3})
    _, error = await collect_until_error(provider.stream(request()))
    assert isinstance(error, UpstreamTimeout)
    assert "0.3 s" in str(error)


async def test_total_timeout(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(["tick"] * 50), delay=0.05)
    loop = asyncio.get_running_loop()
    with llmstream_settings(TOTAL_TIMEOUT=0.4):
        started = loop.time()
        events, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert isinstance(error, UpstreamTimeout)
    assert "TOTAL_TIMEOUT (0.4 s)" in str(error)
    assert loop.time() - started < 1.0
    assert 0 < len(events) < 50
    assert await upstream.await_for_disconnect(1.0)


async def test_cut_connection_mid_stream(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(["one", " two", " three"]), close_after=3)
    events, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert isinstance(error, UpstreamConnectionError)
    assert "was cut mid-stream" in str(error)
    assert isinstance(error.__cause__, httpx.RemoteProtocolError)
    assert summarize(events).text == "one two"


async def test_close_delimited_stream_that_ends_early(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(["one", " two"]), close_after=3, chunked=False)
    events, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert isinstance(error, UpstreamConnectionError)
    assert "ended before it was complete" in str(error)
    assert summarize(events).text == "one two"


async def test_close_delimited_stream(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(["whole"]), chunked=False)
    events = await collect(make(upstream.base_url).stream(request()))
    assert summarize(events).text == "whole"


async def test_garbage_is_a_protocol_error(upstream: FakeUpstream) -> None:
    upstream.respond(fixture="openai_garbage.sse")
    events, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert isinstance(error, UpstreamProtocolError)
    assert error.retryable is False
    assert summarize(events).text == "Partial"


async def test_an_endless_line_is_refused(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=[b"data: " + b"x" * 600, b"x" * 600])
    with llmstream_settings(MAX_UPSTREAM_EVENT_BYTES=1024):
        _, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert isinstance(error, UpstreamProtocolError)
    assert "an event of more than 1024 bytes" in str(error)


# -- cancellation and connection reuse ---------------------------------------------------------


async def test_aclose_closes_the_upstream_at_once(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(["a", "b", "c"])[1:], delay=5)  # no role chunk
    events = make(upstream.base_url).stream(request())
    assert await anext(events) == TextDelta("a")
    await events.aclose()  # type: ignore[attr-defined]
    assert await upstream.await_for_disconnect(1.0)


async def test_cancelled_during_the_request(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(["late"]), stall_after=0)
    task = asyncio.create_task(collect(make(upstream.base_url).stream(request())))
    assert await asyncio.to_thread(upstream.wait_for_requests, 1, 2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await upstream.await_for_disconnect(1.0)


async def test_connections_are_reused(upstream: FakeUpstream) -> None:
    provider = make(upstream.base_url)
    for _ in range(3):
        events = await collect(provider.stream(request()))
        assert summarize(events).text == DEFAULT_TEXT
    assert upstream.connections == 1
    assert upstream.disconnects == 0


async def test_the_pool_recovers_after_a_cancellation(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(["x"]), stall_after=2)  # the role chunk, then "x"
    provider = make(upstream.base_url)
    events = provider.stream(request())
    await anext(events)
    await events.aclose()  # type: ignore[attr-defined]
    assert summarize(await collect(provider.stream(request()))).text == DEFAULT_TEXT


async def test_more_than_100_concurrent_streams(upstream: FakeUpstream) -> None:
    count = 120
    for _ in range(count):
        upstream.respond(chunks=openai_chunks(["a", "b"]), delay=0.3)
    provider = make(upstream.base_url)
    results = await asyncio.gather(*(collect(provider.stream(request())) for _ in range(count)))
    assert all(summarize(events).text == "ab" for events in results)
    assert upstream.peak_connections >= count  # httpx's default pool would stop at 100


# -- the shared client -------------------------------------------------------------------------


async def test_pool_limits_and_timeouts() -> None:
    with llmstream_settings(MAX_CONNECTIONS=5000, CONNECT_TIMEOUT=3, IDLE_TIMEOUT=42):
        await aclose_clients()
        client = get_client()
    pool = client._transport._pool  # type: ignore[attr-defined]
    assert pool._max_connections == 5000 > 100
    assert pool._max_keepalive_connections == 100
    assert client.timeout.connect == 3
    assert client.timeout.read == 42
    assert client.timeout.pool == 3


async def test_default_pool_is_far_above_httpx_default() -> None:
    pool = get_client()._transport._pool  # type: ignore[attr-defined]
    assert pool._max_connections > 100


async def test_one_client_per_event_loop() -> None:
    client = get_client()
    assert get_client() is client
    other: list[httpx.AsyncClient] = []

    async def in_another_loop() -> None:
        other.append(get_client())
        await aclose_clients()

    thread = threading.Thread(target=asyncio.run, args=(in_another_loop(),))
    thread.start()
    thread.join()
    assert other and other[0] is not client
    assert other[0].is_closed
    await aclose_clients()
    assert client.is_closed
    assert get_client() is not client


async def test_requests_carry_the_provider_timeouts() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=b"")

    provider = OpenAIProvider(
        "openai",
        {
            "BASE_URL": "http://upstream.test/v1",
            "MODELS": [MODEL],
            "OPTIONS": {"IDLE_TIMEOUT": 7, "CONNECT_TIMEOUT": 2},
        },
        transport=httpx.MockTransport(handler),
    )
    await collect_until_error(provider.stream(request()))
    await provider.aclose()
    assert seen[0].extensions["timeout"] == {"connect": 2, "read": 7, "write": 2, "pool": 2}


# -- secrets -----------------------------------------------------------------------------------


async def test_echoed_credentials_are_scrubbed(
    upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    secret_header = "azure-header-secret-77"
    secret_param = "query-secret-88"
    provider = make(
        upstream.base_url,
        API_KEY=API_KEY,
        HEADERS={"api-key": secret_header, "X-Title": "Visible"},
        QUERY_PARAMS={"key": secret_param, "api-version": "2024-10-21"},
    )
    upstream.respond(status=401, body=echo_error)
    with caplog.at_level(logging.DEBUG, logger="django_llmstream"):
        _, error = await collect_until_error(provider.stream(request()))
    assert isinstance(error, UpstreamAuthError)
    for secret in (API_KEY, secret_header, secret_param):
        assert secret_leaks(secret, error, caplog.records) == [], secret
    assert "x-title: Visible" in str(error)
    sent = upstream.requests[0]
    assert sent.headers["api-key"] == secret_header
    assert sent.query == {"key": secret_param, "api-version": "2024-10-21"}


async def test_credentials_in_the_base_url_are_hidden() -> None:
    port = closed_port()
    provider = make(f"http://user:url-password-99@127.0.0.1:{port}/v1")
    assert "url-password-99" not in repr(provider)
    _, error = await collect_until_error(provider.stream(request()))
    assert error is not None
    assert secret_leaks("url-password-99", error, []) == []


async def test_key_shaped_strings_are_scrubbed(upstream: FakeUpstream) -> None:
    upstream.respond(status=401, body=b'{"error": {"message": "Bad key sk-abcdefghijklmnop1234"}}')
    _, error = await collect_until_error(make(upstream.base_url).stream(request()))
    assert "sk-abcdefghijklmnop1234" not in str(error)
    assert "[redacted]" in str(error)


# -- a non-SSE backend through the same plumbing -----------------------------------------------


async def test_ndjson_backend(upstream: FakeUpstream) -> None:
    lines = [b'{"text": "Hel"}\n', b'{"text": "lo"}\r\n', b"\n", b'{"done": true}\n']
    upstream.respond(chunks=lines, headers={"Content-Type": "application/x-ndjson"})
    provider = LinesProvider("lines", {"BASE_URL": upstream.url, "MODELS": ["m"]})
    events = await collect(provider.stream(chat_request(model="m")))
    assert events == [TextDelta("Hel"), TextDelta("lo"), Finish("stop", "done")]
    sent = upstream.requests[0]
    assert (sent.path, sent.headers["accept"]) == ("/api/lines", "application/x-ndjson")


async def test_ndjson_backend_without_its_end(upstream: FakeUpstream) -> None:
    upstream.respond(chunks=[b'{"text": "Hel"}\n'])
    provider = LinesProvider("lines", {"BASE_URL": upstream.url, "MODELS": ["m"]})
    events, error = await collect_until_error(provider.stream(chat_request(model="m")))
    assert events == [TextDelta("Hel")]
    assert isinstance(error, UpstreamConnectionError)


def test_base_url_query_strings_are_kept() -> None:
    provider = LinesProvider(
        "lines", {"BASE_URL": "https://x.test/openai/deployments/d?api-version=1", "MODELS": ["m"]}
    )
    assert str(provider.url("chat/completions")) == (
        "https://x.test/openai/deployments/d/chat/completions?api-version=1"
    )


@pytest.mark.parametrize("url", ["http://[::1/v1", "http://", "localhost:8000/v1", "ftp://x/v1"])
def test_bad_base_urls_fail_the_checks(url: str) -> None:
    errors = make(url).check()
    assert [error.id for error in errors] == ["llmstream.E011"]


async def test_an_unparseable_base_url_is_a_provider_error() -> None:
    _, error = await collect_until_error(make("http://[::1/v1").stream(request()))
    assert isinstance(error, UpstreamConnectionError)
    assert error.retryable is False


def test_check_of_http_options() -> None:
    ok = LinesProvider(
        "lines",
        {
            "BASE_URL": "https://x.test",
            "MODELS": ["m"],
            "HEADERS": {"a": "b"},
            "QUERY_PARAMS": {"c": "d"},
            "OPTIONS": {"TOTAL_TIMEOUT": None, "MAX_RETRIES": 0},
        },
    )
    assert ok.check() == []
    bad = LinesProvider(
        "lines",
        {
            "BASE_URL": "localhost:8000",
            "MODELS": ["m"],
            "HEADERS": {"a": 1},
            "OPTIONS": {"MAX_RETRIES": 1.5},
        },
    )
    errors = bad.check()
    assert [error.id for error in errors] == ["llmstream.E011"] * 3
    assert "is not an http:// or https:// URL" in errors[0].msg


async def test_total_timeout_while_waiting_for_the_headers() -> None:
    async def handler(req: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    provider = OpenAIProvider(
        "openai",
        {
            "BASE_URL": "http://upstream.test/v1",
            "MODELS": [MODEL],
            "OPTIONS": {"TOTAL_TIMEOUT": 0.2, "MAX_RETRIES": 0},
        },
        transport=httpx.MockTransport(handler),
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    _, error = await collect_until_error(provider.stream(request()))
    await provider.aclose()
    assert isinstance(error, UpstreamTimeout)
    assert "TOTAL_TIMEOUT (0.2 s)" in str(error)
    assert loop.time() - started < 1

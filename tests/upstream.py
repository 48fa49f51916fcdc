"""A fake LLM provider: a real HTTP/1.1 server on 127.0.0.1 that replays provider streams.

Unit tests of the provider backends and the end-to-end tests (uvicorn + a provider pointed at
this server) use it to get real sockets: real chunked transfer-encoding, real keep-alive, real
disconnects. It runs in a background thread with its own asyncio loop (raw
``asyncio.start_server``, no framework), so it works for sync and async tests alike.

Register it with ``pytest_plugins = ["tests.upstream"]``; then::

    async def test_something(upstream: FakeUpstream) -> None:
        upstream.respond(fixture="openai_chat_stream_usage.sse", delay=0.01)
        provider = OpenAIProvider("openai", {"BASE_URL": upstream.base_url, "MODELS": ["m"]})
        ...
        assert upstream.requests[0].json["stream"] is True

Responses are queued with :meth:`FakeUpstream.respond` and served first in, first out, one
per request, whatever the path; with an empty queue every request gets a default OpenAI Chat
Completions stream saying :data:`DEFAULT_TEXT`. Fixtures are read from
``tests/fixtures/upstream/`` or the shared ``../shared/fixtures`` (see :mod:`tests.shared`).

Fixtures: ``fake_upstream`` (session-scoped server) and ``upstream`` (the same server,
``reset()`` before each test; after the test it closes the test loop's shared httpx client
so no socket outlives the test's event loop).

Providers share one httpx client per event loop (``django_llmstream.providers.http``): a
server thread that streams through them (uvicorn in the end-to-end tests) should run
``await aclose_clients()`` in its own loop before that loop ends, or its keep-alive
connections to this server are collected unclosed (``ResourceWarning``).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import re
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any
from urllib.parse import parse_qsl

import pytest

from tests.shared import shared_fixture

__all__ = [
    "DEFAULT_PIECES",
    "DEFAULT_TEXT",
    "DEFAULT_USAGE",
    "LOCAL_FIXTURES_DIR",
    "FakeUpstream",
    "RecordedRequest",
    "echo_error",
    "fake_upstream",
    "load_fixture",
    "openai_chunks",
    "split_events",
    "sse",
    "upstream",
]

LOCAL_FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures" / "upstream"

#: What the default response (empty queue) streams, piece by piece.
DEFAULT_PIECES: tuple[str, ...] = ("Hello", " from", " the", " fake", " upstream.")
DEFAULT_TEXT = "".join(DEFAULT_PIECES)
#: The usage chunk of :func:`openai_chunks` unless told otherwise.
DEFAULT_USAGE: Mapping[str, Any] = MappingProxyType(
    {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
)

_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024


# -- building responses ----------------------------------------------------------------------


def sse(data: str | Mapping[str, Any] | Sequence[Any], *, event: str | None = None) -> bytes:
    """One SSE event: ``data`` (a string, or JSON for anything else) and an optional type."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return (head + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n").encode()


def openai_chunks(
    pieces: Sequence[str],
    *,
    usage: Mapping[str, Any] | None = DEFAULT_USAGE,
    finish_reason: str | None = "stop",
    model: str = "fake-model",
    reasoning: Sequence[str] = (),
    done: bool = True,
) -> list[bytes]:
    """An OpenAI Chat Completions stream, one SSE event per element: a role chunk, the
    ``reasoning`` pieces (as ``reasoning_content``, like vLLM and llama.cpp), the text
    ``pieces``, a chunk with ``finish_reason`` (``None``: none), a usage chunk
    (``choices: []``; ``None``: none) and ``data: [DONE]`` (``done=False``: none).

    The role chunk yields no event: with ``respond(stall_after=1 + k)`` (or ``close_after``)
    a client receives the first ``k`` pieces."""
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000}
    base["model"] = model

    def chunk(delta: Mapping[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}
        return sse({**base, "choices": [choice]})

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"reasoning_content": piece}) for piece in reasoning]
    out += [chunk({"content": piece}) for piece in pieces]
    if finish_reason is not None:
        out.append(chunk({}, finish_reason))
    if usage is not None:
        out.append(sse({**base, "choices": [], "usage": dict(usage)}))
    if done:
        out.append(b"data: [DONE]\n\n")
    return out


def echo_error(request: RecordedRequest) -> bytes:
    """An OpenAI-style error body that quotes every request header back, credentials
    included (as careless servers and proxies do): for testing that errors are scrubbed.
    Use it as ``respond(status=401, body=echo_error)``."""
    quoted = "; ".join(f"{name}: {value}" for name, value in request.headers.items())
    error = {"message": f"Rejected request with headers {quoted}", "type": "invalid_request_error"}
    return json.dumps({"error": {**error, "code": "invalid_api_key"}}).encode()


_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def split_events(data: bytes, *, ndjson: bool = False) -> list[bytes]:
    """``data`` cut after each SSE event (after its blank line; CR, LF and CRLF line ends) or,
    with ``ndjson``, after each line. The pieces concatenate to ``data`` exactly."""
    if ndjson:
        return [line for line in re.split(rb"(?<=\n)", data) if line]
    events: list[bytes] = []
    current = b""
    has_fields = False
    for match in _LINE.finditer(data):
        line = match.group()
        current += line
        if line.strip(b"\r\n"):
            has_fields = True
        elif has_fields:
            events.append(current)
            current, has_fields = b"", False
    if current:
        events.append(current)
    return events


def load_fixture(name: str) -> bytes:
    """The bytes of fixture ``name``: a path, a file of ``tests/fixtures/upstream/`` or a
    shared fixture (skipping the test when the shared directory is absent)."""
    path = Path(name)
    if not path.is_absolute():
        local = LOCAL_FIXTURES_DIR / name
        path = local if local.is_file() else shared_fixture(name)
    return path.read_bytes()


@dataclass(frozen=True)
class RecordedRequest:
    """A request the fake upstream received. ``path`` has no query string; ``query`` holds
    its parameters; ``headers`` has lowercased names; ``json`` is the parsed body or
    ``None``."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any


@dataclass(frozen=True)
class _Response:
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    chunks: tuple[bytes, ...] | None = None
    body: bytes | Callable[[RecordedRequest], bytes] | None = None
    delay: float = 0.0
    stall_after: int | None = None
    close_after: int | None = None
    chunked: bool = True


# -- the server ------------------------------------------------------------------------------


class _Connection:
    """A socket with our own read buffer, so that bytes read while watching for a disconnect
    are never lost."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()

    async def fill(self) -> bool:
        """Read more; ``False`` at the end of the stream (the client closed)."""
        data = await self.reader.read(65536)
        self.buffer += data
        return bool(data)

    async def read_until(self, separator: bytes, limit: int) -> bytes | None:
        while (end := self.buffer.find(separator)) < 0:
            if len(self.buffer) > limit or not await self.fill():
                return None
        return self.take(end + len(separator))

    async def read_exactly(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            if not await self.fill():
                return None
        return self.take(size)

    def take(self, size: int) -> bytes:
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


class FakeUpstream:
    """The fake provider server; see the module docstring. Start it with ``start()`` or a
    ``with`` block; all methods are safe to call from any thread."""

    def __init__(self) -> None:
        self.port = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queue: deque[_Response] = deque()
        self._requests: list[RecordedRequest] = []
        self._disconnects = 0
        self._connections = 0
        self._active = 0
        self._peak = 0
        # Bumped by reset(): a disconnect of an earlier test's response is not counted.
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- addresses -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's root, ``http://127.0.0.1:PORT`` (Anthropic and Ollama style)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: an OpenAI-style base URL."""
        return f"{self.url}/v1"

    # -- what tests look at --------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received since the last ``reset()``, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def disconnects(self) -> int:
        """How many times a client closed a connection while a response was still
        streaming (since the last ``reset()``)."""
        with self._lock:
            return self._disconnects

    @property
    def connections(self) -> int:
        """TCP connections accepted since the last ``reset()`` (keep-alive reuses one)."""
        with self._lock:
            return self._connections

    @property
    def peak_connections(self) -> int:
        """The most connections open at the same time since the last ``reset()``."""
        with self._lock:
            return self._peak

    def wait_for_disconnect(self, timeout: float, count: int = 1) -> bool:
        """Block until ``count`` disconnects were seen (``True``) or ``timeout`` passed."""
        with self._changed:
            return self._changed.wait_for(lambda: self._disconnects >= count, timeout)

    async def await_for_disconnect(self, timeout: float, count: int = 1) -> bool:
        """:meth:`wait_for_disconnect` without blocking the calling event loop."""
        return await asyncio.to_thread(self.wait_for_disconnect, timeout, count)

    def wait_for_requests(self, count: int, timeout: float) -> bool:
        """Block until ``count`` requests were received (``True``) or ``timeout`` passed."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._requests) >= count, timeout)

    # -- what tests set ------------------------------------------------------------

    def respond(
        self,
        *,
        status: int = 200,
        chunks: Sequence[bytes] | None = None,
        fixture: str | None = None,
        body: bytes | Callable[[RecordedRequest], bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        stall_after: int | None = None,
        close_after: int | None = None,
        chunked: bool = True,
    ) -> None:
        """Queue the response to the next request (first in, first out).

        - ``chunks``: the body, streamed one element per write (and per HTTP chunk);
        - ``fixture``: a recorded stream (see :func:`load_fixture`), streamed one SSE event
          or NDJSON line (``.ndjson``) per chunk;
        - ``body``: a whole body sent at once with ``Content-Length`` (an error body, say), or
          a function of the :class:`RecordedRequest` returning it (see :func:`echo_error`);
        - none of these: a JSON error body for an error ``status``, else the default stream.

        ``delay``: seconds between two chunks. ``stall_after=N``: send N chunks, then nothing
        (the connection stays open) until the client goes away. ``close_after=N``: send N
        chunks, then close the connection without ending the body. ``chunked=False``: a body
        delimited by closing the connection instead of chunked transfer-encoding.
        ``headers`` add to or replace the response headers (``Content-Type`` defaults to
        ``text/event-stream``, ``application/x-ndjson`` for ``.ndjson`` fixtures, and
        ``application/json`` for a JSON ``body``).
        """
        if sum(x is not None for x in (chunks, fixture, body)) > 1:
            raise ValueError("respond() takes at most one of chunks, fixture and body")
        response_headers: dict[str, str] = {}
        if fixture is not None:
            ndjson = fixture.endswith((".ndjson", ".jsonl"))
            chunks = split_events(load_fixture(fixture), ndjson=ndjson)
            if ndjson:
                response_headers["content-type"] = "application/x-ndjson"
        elif chunks is None and body is None:
            if status >= 300:
                error = {"message": f"fake upstream error {status}", "type": "fake_error"}
                body = json.dumps({"error": {**error, "code": None}}).encode()
            else:
                chunks = openai_chunks(DEFAULT_PIECES)
        for name, value in (headers or {}).items():
            response_headers[name.lower()] = value
        spec = _Response(
            status=status,
            headers=response_headers,
            chunks=tuple(chunks) if chunks is not None else None,
            body=body,
            delay=delay,
            stall_after=stall_after,
            close_after=close_after,
            chunked=chunked,
        )
        with self._lock:
            self._queue.append(spec)

    def reset(self) -> None:
        """Forget queued responses, received requests and counted disconnects."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._disconnects = 0
            self._connections = 0
            self._peak = self._active
            self._generation += 1

    # -- life cycle ----------------------------------------------------------------

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._error is not None:
            raise RuntimeError("the fake upstream did not start") from self._error
        return self

    def stop(self) -> None:
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        if thread is not None:
            thread.join(10)
        self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()

    # -- serving -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Connection(reader, writer)
        with self._lock:
            self._connections += 1
            self._active += 1
            self._peak = max(self._peak, self._active)
        try:
            while True:
                request = await self._read_request(conn)
                if request is None:
                    break
                with self._changed:
                    spec = (
                        self._queue.popleft()
                        if self._queue
                        else _Response(chunks=tuple(openai_chunks(DEFAULT_PIECES)))
                    )
                    generation = self._generation
                    self._requests.append(request)
                    self._changed.notify_all()
                keep_alive = await self._send(conn, request, spec, generation)
                if not keep_alive or request.headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, ValueError):  # a client gone, or a request we cannot parse
            pass
        except asyncio.CancelledError:
            # The server is stopping. Ending normally keeps asyncio's stream protocol from
            # logging the cancellation as an unhandled error.
            pass
        finally:
            self._tasks.discard(task)
            with self._lock:
                self._active -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_request(self, conn: _Connection) -> RecordedRequest | None:
        head = await conn.read_until(b"\r\n\r\n", _MAX_HEAD)
        if head is None:
            return None
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                value = value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        body = b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                size_line = await conn.read_until(b"\r\n", _MAX_HEAD)
                if size_line is None:
                    return None
                size = int(size_line.split(b";")[0].strip(), 16)
                data = await conn.read_exactly(size + 2)
                if data is None:
                    return None
                if size == 0:
                    break
                body += data[:-2]
        elif headers.get("content-length"):
            size = int(headers["content-length"])
            if size > _MAX_BODY:
                raise ValueError("request body too large")
            data = await conn.read_exactly(size)
            if data is None:
                return None
            body = data
        path, _, query = target.partition("?")
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        return RecordedRequest(
            method=method,
            path=path,
            query=dict(parse_qsl(query, keep_blank_values=True)),
            headers=headers,
            body=body,
            json=parsed,
        )

    async def _send(
        self, conn: _Connection, request: RecordedRequest, spec: _Response, generation: int
    ) -> bool:
        """Write one response; ``True`` if the connection may serve another request."""
        writer = conn.writer
        try:
            reason = http.HTTPStatus(spec.status).phrase
        except ValueError:
            reason = "Unknown"
        headers = {"server": "fake-upstream"}
        if spec.chunks is None:
            body = spec.body(request) if callable(spec.body) else (spec.body or b"")
            headers["content-type"] = "application/json" if _is_json(body) else "text/plain"
            headers["content-length"] = str(len(body))
            headers.update(spec.headers)
            writer.write(_head(spec.status, reason, headers) + body)
            await writer.drain()
            return True
        headers["content-type"] = "text/event-stream"
        headers["cache-control"] = "no-cache"
        if spec.chunked:
            headers["transfer-encoding"] = "chunked"
        else:
            headers["connection"] = "close"
        headers.update(spec.headers)
        writer.write(_head(spec.status, reason, headers))
        await writer.drain()
        chunks = [chunk for chunk in spec.chunks if chunk]
        # The client sends nothing while a response streams (no pipelining), so a read that
        # returns means it went away; a read that brings data keeps the data (conn.buffer).
        watcher: asyncio.Task[bool] = asyncio.ensure_future(conn.fill())
        try:
            for index in range(len(chunks) + 1):
                if spec.stall_after is not None and index >= spec.stall_after:
                    while await watcher:
                        watcher = asyncio.ensure_future(conn.fill())
                    self._disconnected(generation)
                    return False
                if spec.close_after is not None and index >= spec.close_after:
                    return False  # closed by _serve, without the terminating chunk
                if index == len(chunks):
                    break
                if spec.delay and index:
                    await asyncio.wait({watcher}, timeout=spec.delay)
                while watcher.done():
                    if not watcher.result():
                        self._disconnected(generation)
                        return False
                    watcher = asyncio.ensure_future(conn.fill())
                chunk = chunks[index]
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if spec.chunked else chunk)
                await writer.drain()
            if not spec.chunked:
                return False  # the body ends when the connection closes
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
        except ConnectionError:
            self._disconnected(generation)
            return False
        finally:
            if not watcher.done():
                watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await watcher

    def _disconnected(self, generation: int) -> None:
        with self._changed:
            if generation == self._generation:
                self._disconnects += 1
                self._changed.notify_all()


def _head(status: int, reason: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return bool(body.strip())


# -- pytest fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[FakeUpstream]:
    """The fake upstream server, one for the whole session."""
    with FakeUpstream() as server:
        yield server


@pytest.fixture
async def upstream(fake_upstream: FakeUpstream) -> AsyncIterator[FakeUpstream]:
    """The fake upstream, reset for this test. Afterwards the test loop's shared httpx client
    is closed, so that no connection outlives the loop (that would warn, and warnings fail)."""
    from django_llmstream.providers.http import aclose_clients

    fake_upstream.reset()
    yield fake_upstream
    await aclose_clients()

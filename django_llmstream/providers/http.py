"""Shared httpx plumbing for every provider backend that speaks HTTP.

:class:`HTTPProvider` owns what all HTTP backends need, so that a backend module only says how
to build its request and how to read its stream:

- one shared :class:`httpx.AsyncClient` per process *and* event loop (httpcore's pools and
  sockets belong to the loop that created them), with pool limits sized for many concurrent
  streams (httpx's default of 100 connections silently queues the 101st stream);
- timeouts: ``CONNECT_TIMEOUT`` to connect, ``IDLE_TIMEOUT`` between two chunks of the body
  (httpx's *read* timeout applies per socket read, which is exactly an idle gap), and an
  optional ``TOTAL_TIMEOUT`` for the whole request;
- retries with exponential backoff and equal jitter (:func:`backoff_delay`) or the
  upstream's ``Retry-After``, only before the first event was yielded (after that the
  caller has shown text and a retry would duplicate it);
- cancellation: closing the iterator or cancelling its task closes the upstream connection
  at once, so the provider stops generating (and billing) tokens;
- status codes and transport failures mapped onto :mod:`django_llmstream.exceptions`, every
  message scrubbed of secrets (:meth:`BaseProvider.scrub`) and logged at WARNING on the
  ``django_llmstream.providers`` logger.

A backend subclasses :class:`HTTPProvider` and implements :meth:`~HTTPProvider.endpoint`,
:meth:`~HTTPProvider.build_body` and :meth:`~HTTPProvider.parse_stream` (and, where the
provider differs, :meth:`~HTTPProvider.headers` and :meth:`~HTTPProvider.map_error_body`).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import random
import re
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
from django.core import checks

from django_llmstream import __version__
from django_llmstream.conf import app_settings
from django_llmstream.events import Event, Finish, Usage
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
    UpstreamStreamError,
    UpstreamTimeout,
)
from django_llmstream.providers import network
from django_llmstream.providers.base import BaseProvider, ChatRequest
from django_llmstream.sse import ServerSentEvent, SSEParser

__all__ = [
    "MAX_RETRY_AFTER",
    "RETRYABLE_STATUSES",
    "HTTPProvider",
    "StreamState",
    "aclose_clients",
    "backoff_delay",
    "get_client",
    "parse_retry_after",
    "retry_delay",
]

logger = logging.getLogger("django_llmstream.providers")

#: Statuses worth another try before the first token: timeout, conflict (OpenAI's "lock
#: timeout"), rate limit, any 5xx, and Anthropic's 529 "overloaded".
RETRYABLE_STATUSES = frozenset({408, 409, 429}) | frozenset(range(500, 600))
#: Longest ``Retry-After`` we wait for; a longer one fails at once (with ``retry_after`` set)
#: rather than hold the turn for minutes.
MAX_RETRY_AFTER = 30.0
#: Connections kept open between streams. Bigger pools mostly hold idle sockets; the cap on
#: concurrent streams is ``MAX_CONNECTIONS``, not this.
MAX_KEEPALIVE_CONNECTIONS = 100
#: Longest error body read (error bodies are small; a hostile one is not read to the end).
MAX_ERROR_BODY = 64 * 1024
#: Longest SSE event or NDJSON line is the ``MAX_UPSTREAM_EVENT_BYTES`` setting (an entry may
#: override it in ``OPTIONS``); it may not be set below this.
MIN_EVENT_BYTES = 1024
#: A JSON error body nested deeper than this is not searched for its message.
MAX_ERROR_DEPTH = 20
#: Error messages quote at most this much of the provider's own message.
MAX_MESSAGE_CHARS = 500
#: After the stream's end, the rest of the body (normally just the chunked terminator) is read
#: for at most this long so that the connection goes back to the pool instead of being closed.
DRAIN_SECONDS = 1.0
DRAIN_BYTES = 64 * 1024

USER_AGENT = f"django-llmstream/{__version__}"

# Header and query parameter names whose values are credentials (scrubbed like API_KEY).
_SECRET_NAME = re.compile(r"(?i)(auth|key|token|secret|password|signature|cookie|credential)")


# -- the shared client -----------------------------------------------------------------------

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)
_clients_lock = threading.Lock()


def _new_client() -> httpx.AsyncClient:
    max_connections = int(app_settings.MAX_CONNECTIONS)
    connect = float(app_settings.CONNECT_TIMEOUT)
    client = httpx.AsyncClient(
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=min(MAX_KEEPALIVE_CONNECTIONS, max_connections),
        ),
        # Each request carries its own timeouts (they may differ per provider entry); these
        # are only the defaults of a request built without them.
        timeout=httpx.Timeout(
            connect=connect,
            read=float(app_settings.IDLE_TIMEOUT),
            write=connect,
            pool=connect,
        ),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,
    )
    # The default transport and the proxies' (from the environment), whichever a URL uses.
    for transport in (client._transport, *client._mounts.values()):
        network.install(transport)
    return client


def get_client() -> httpx.AsyncClient:
    """The process's shared client for the running event loop, created on first use.

    httpcore binds its connections to the loop that opened them, so each loop (the ASGI
    server's, a test's, a management command's ``asyncio.run``) gets its own client; the
    mapping holds loops weakly and forgets a loop's client when :func:`aclose_clients` runs.
    """
    loop = asyncio.get_running_loop()
    with _clients_lock:
        client = _clients.get(loop)
        if client is None or client.is_closed:
            client = _new_client()
            _clients[loop] = client
        return client


async def aclose_clients() -> None:
    """Close the running loop's shared client (tests, shutdown).

    Call it from every event loop that streamed through an :class:`HTTPProvider` before that
    loop closes (e.g. at the end of a server thread's ``asyncio.run``): a client cannot be
    closed from another loop, and sockets left open warn ``ResourceWarning`` when collected.
    Clients of loops that are already closed are forgotten. A new client is created lazily
    by the next stream.
    """
    loop = asyncio.get_running_loop()
    with _clients_lock:
        client = _clients.pop(loop, None)
        for stale in [other for other in _clients if other.is_closed()]:
            _clients.pop(stale, None)
    if client is not None:
        await client.aclose()


# -- per-stream state ------------------------------------------------------------------------


@dataclass
class StreamState:
    """What a backend's :meth:`HTTPProvider.parse_stream` keeps while reading one response.

    ``chunks`` is the body's one byte iterator: read it through :meth:`HTTPProvider.iter_sse`
    or :meth:`HTTPProvider.iter_lines` (the base reads what is left of it after the end so the
    connection can be reused). Backends that need more put it in ``extra`` or subclass this
    and override :meth:`HTTPProvider.new_state`.
    """

    request: ChatRequest
    chunks: AsyncIterator[bytes]
    #: The response's ``Content-Type`` (for error messages).
    content_type: str = ""
    usage: Usage | None = None
    finish_reason: str | None = None
    finish_raw: str | None = None
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    _tool_calls: dict[object, int] = field(default_factory=dict)

    def add_usage(self, usage: Usage) -> None:
        """Record a usage report (later reports win, field by field)."""
        self.usage = usage if self.usage is None else self.usage.merged(usage)

    def tool_call_index(self, key: object) -> tuple[int, bool]:
        """Our index (0, 1 … in order of appearance) of the provider's tool call ``key``, and
        whether this is the call's first piece (which carries its ``id`` and ``name``)."""
        index = self._tool_calls.get(key)
        if index is None:
            index = self._tool_calls[key] = len(self._tool_calls)
            return index, True
        return index, False

    def final_events(self) -> list[Event]:
        """``Usage`` (if any was reported) and the one ``Finish``: what a backend yields at the
        end of a complete stream. No finish reason from the upstream means ``stop``."""
        events: list[Event] = [self.usage] if self.usage is not None else []
        events.append(Finish(self.finish_reason or "stop", self.finish_raw))
        return events

    def tool_call_keys(self) -> list[object]:
        """The provider's tool call keys seen so far, in order of appearance."""
        return list(self._tool_calls)


# -- the provider base -----------------------------------------------------------------------


def status_error(status: int, message: str, retry_after: float | None) -> UpstreamHTTPError:
    """The exception for an error status of the upstream; ``message`` is already scrubbed."""
    kind: type[UpstreamHTTPError]
    retryable: bool | None = None
    if status in (401, 403):
        kind = UpstreamAuthError
    elif status == 429:
        kind = UpstreamRateLimited
    elif status in (503, 529):
        kind = UpstreamOverloaded
    elif status >= 500:
        kind = UpstreamServerError
    else:
        kind = UpstreamBadRequest
        if status in RETRYABLE_STATUSES:  # 408, 409
            retryable = True
    return kind(message, status_code=status, retryable=retryable, retry_after=retry_after)


def base_url_password(base_url: str | None) -> str | None:
    """The password of a ``BASE_URL`` such as ``https://user:secret@host/v1``: a secret too."""
    if not base_url:
        return None
    with contextlib.suppress(httpx.InvalidURL, TypeError, ValueError):
        return httpx.URL(base_url).password or None
    return None


def is_openai_host(base_url: str | None) -> bool:
    """Whether ``base_url`` is OpenAI's own API (which needs a key), not a compatible server."""
    try:
        host = httpx.URL(base_url or "").host
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    return host.lower() == "api.openai.com"


class HTTPProvider(BaseProvider):
    """Base of the backends that stream over HTTP (see the module docstring).

    Options (``LLMSTREAM["PROVIDERS"][alias]``): ``HEADERS`` (extra request headers, e.g.
    OpenRouter's ``HTTP-Referer`` or Azure's ``api-key``) and ``QUERY_PARAMS`` (e.g. Azure's
    ``api-version``). Header and parameter values whose names look like credentials
    (``authorization``, ``api-key``, ``x-api-key``, ``token`` …) are scrubbed like the API key.
    ``OPTIONS`` may override ``CONNECT_TIMEOUT``, ``IDLE_TIMEOUT``, ``TOTAL_TIMEOUT``,
    ``MAX_RETRIES``, ``RETRY_BACKOFF`` and ``MAX_UPSTREAM_EVENT_BYTES`` for this entry.

    A subclass must implement :meth:`endpoint`, :meth:`build_body` and :meth:`parse_stream`,
    and keep :meth:`parse_stream`'s contract: yield events as they arrive, end with exactly one
    :class:`~django_llmstream.events.Finish`, and raise
    :class:`~django_llmstream.exceptions.ProviderError` subclasses for what the stream itself
    reports. Transport errors (httpx), timeouts, JSON/``ValueError`` and shape errors raised
    while it runs are mapped by the base.

    ``transport`` (tests) makes this instance use a private client over that transport, e.g.
    an :class:`httpx.MockTransport`, instead of the shared one.
    """

    extra_options: ClassVar[frozenset[str]] = frozenset({"HEADERS", "QUERY_PARAMS"})
    #: Settings an entry may override in its ``OPTIONS``.
    overridable_settings: ClassVar[frozenset[str]] = frozenset(
        {
            "CONNECT_TIMEOUT",
            "IDLE_TIMEOUT",
            "TOTAL_TIMEOUT",
            "MAX_RETRIES",
            "RETRY_BACKOFF",
            "MAX_UPSTREAM_EVENT_BYTES",
        }
    )
    #: The ``Accept`` header: what the body of a successful answer is.
    accept: ClassVar[str] = "text/event-stream"
    #: HTTP method of the streaming request.
    method: ClassVar[str] = "POST"

    def __init__(
        self,
        alias: str,
        config: Mapping[str, Any],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(alias, config)
        self.extra_headers: dict[str, str] = _str_mapping(config.get("HEADERS"))
        self.query_params: dict[str, str] = _str_mapping(config.get("QUERY_PARAMS"))
        self._transport = transport
        self._private_client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        # A BASE_URL may carry credentials (https://user:password@host); show neither.
        return f"<{type(self).__name__} alias={self.alias!r} base_url={self.display_url!r}>"

    @property
    def display_url(self) -> str | None:
        """``base_url`` without credentials and query string, safe for messages and logs."""
        if not self.base_url:
            return None
        try:
            url = httpx.URL(self.base_url)
            return str(url.copy_with(userinfo=b"", query=None, fragment=None))
        except (httpx.InvalidURL, TypeError, ValueError):
            return self.scrub(self.base_url)

    # -- configuration -----------------------------------------------------------------

    def setting(self, name: str) -> Any:
        """``name`` from this entry's ``OPTIONS`` if it overrides it, else ``LLMSTREAM``."""
        if name in self.overridable_settings and name in self.options:
            return self.options[name]
        return getattr(app_settings, name)

    def check(self) -> list[checks.CheckMessage]:
        errors = super().check()
        where = f'LLMSTREAM["PROVIDERS"]["{self.alias}"]'
        if self.base_url and not _is_http_url(self.base_url):
            errors.append(
                checks.Error(
                    f'{where}["BASE_URL"] = {self.display_url!r} is not an http:// or '
                    "https:// URL with a host.",
                    hint="Set it to the API root, e.g. https://api.openai.com/v1.",
                    id="llmstream.E011",
                )
            )
        for name in ("HEADERS", "QUERY_PARAMS"):
            value = self.config.get(name)
            if value is not None and not (
                isinstance(value, Mapping)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
            ):
                errors.append(
                    checks.Error(
                        f'{where}["{name}"] must be a dict of strings to strings.',
                        hint=f'For example {where}["{name}"] = {{"name": "value"}}.',
                        id="llmstream.E011",
                    )
                )
        for name in sorted(self.overridable_settings & set(self.options)):
            value = self.options[name]
            nullable = name == "TOTAL_TIMEOUT"
            whole = name in {"MAX_RETRIES", "MAX_UPSTREAM_EVENT_BYTES"}
            minimum = MIN_EVENT_BYTES if name == "MAX_UPSTREAM_EVENT_BYTES" else 0
            ok = (value is None and nullable) or (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and (
                    value >= minimum
                    if name in {"MAX_RETRIES", "RETRY_BACKOFF", "MAX_UPSTREAM_EVENT_BYTES"}
                    else value > 0
                )
                and (isinstance(value, int) or not whole)
            )
            if not ok:
                if minimum:
                    hint = f"Use a whole number of bytes >= {minimum}."
                elif whole:
                    hint = "Use a whole number >= 0."
                elif nullable:
                    hint = "Use a positive number of seconds, or None for no limit."
                else:
                    hint = "Use a number of seconds (> 0, or >= 0 for RETRY_BACKOFF)."
                errors.append(
                    checks.Error(
                        f'{where}["OPTIONS"]["{name}"] = {value!r} is not valid.',
                        hint=hint,
                        id="llmstream.E011",
                    )
                )
        return errors

    # -- secrets -----------------------------------------------------------------------

    def secrets(self) -> list[str]:
        found = super().secrets()
        for values in (self.extra_headers, self.query_params):
            found += [v for k, v in values.items() if v and _SECRET_NAME.search(k)]
        password = base_url_password(self.base_url)
        return [*found, password] if password else found

    def missing_openai_key(self, where: str, elsewhere: str) -> list[checks.CheckMessage]:
        """E006 when ``BASE_URL`` is OpenAI's own API and neither ``API_KEY`` nor an
        ``Authorization`` header is set (compatible servers may need no key)."""
        has_auth_header = any(k.lower() == "authorization" for k in self.extra_headers)
        if not is_openai_host(self.base_url) or self._api_key or has_auth_header:
            return []
        return [
            checks.Error(
                f"{where} uses api.openai.com but has no API_KEY.",
                hint=f'Set {where}["API_KEY"] (e.g. from OPENAI_API_KEY), or set BASE_URL '
                f"to {elsewhere} that needs no key.",
                id="llmstream.E006",
            )
        ]

    # -- subclass hooks ----------------------------------------------------------------

    def endpoint(self, request: ChatRequest) -> str:
        """The request path relative to ``BASE_URL`` (e.g. ``"chat/completions"``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement endpoint()")

    def build_body(self, request: ChatRequest) -> Mapping[str, Any]:
        """The JSON body of the streaming request."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_body()")

    def headers(self) -> dict[str, str]:
        """Authentication headers. Default: ``Authorization: Bearer <API_KEY>`` if a key is set."""
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def url(self, path: str) -> httpx.URL:
        """``BASE_URL`` joined with ``path`` (a query string in ``BASE_URL`` is kept)."""
        if not self.base_url:
            raise UpstreamConnectionError(
                f"Upstream {self.alias} has no BASE_URL.", retryable=False
            )
        base = httpx.URL(self.base_url)
        return base.copy_with(path=base.path.rstrip("/") + "/" + path.lstrip("/"))

    def build_request(self, request: ChatRequest) -> httpx.Request:
        """The streaming request. Headers: defaults, then :meth:`headers`, then ``HEADERS``
        (so an entry can replace the auth header, e.g. Azure's ``api-key``)."""
        headers = {
            "Accept": self.accept,
            # Compression would make proxies and decoders buffer the stream.
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
            **self.headers(),
        }
        headers.update(self.extra_headers)
        return httpx.Request(
            self.method,
            self.url(self.endpoint(request)),
            params=self.query_params or None,
            headers=headers,
            json=self.build_body(request),
        )

    def new_state(self, request: ChatRequest, response: httpx.Response) -> StreamState:
        """A fresh :class:`StreamState` for one response (one attempt)."""
        return StreamState(
            request=request,
            chunks=_read_body(response),
            content_type=response.headers.get("content-type", ""),
        )

    def parse_stream(self, response: httpx.Response, state: StreamState) -> AsyncIterator[Event]:
        """Read the body (through :meth:`iter_sse` / :meth:`iter_lines`) and yield events."""
        raise NotImplementedError(f"{type(self).__name__} must implement parse_stream()")

    def parse_json_answer(self, data: Mapping[str, Any], state: StreamState) -> list[Event] | None:
        """The events of a whole JSON answer sent with ``Content-Type: application/json``
        instead of the stream that was asked for (a server that ignores ``"stream": true``),
        usage and finish reason recorded in ``state``; or ``None`` if this is not an answer
        this backend can read (the turn then fails with ``upstream_protocol``, quoting the
        body's message). Default: ``None``."""
        return None

    def map_error_body(self, status: int, body: bytes) -> str:
        """The provider's own message from an error body (JSON ``error.message``, ``error``,
        ``message`` or ``detail``, else the text), or ``""``. Scrubbed and cut by the caller."""
        text = body.decode("utf-8", "replace").strip()
        try:
            data = json.loads(text) if text else None
        except (ValueError, RecursionError):  # RecursionError: nested absurdly deep
            data = None
        message = _error_message(data) if data is not None else None
        if message is None:
            if text.lstrip()[:1] == "<":  # an HTML error page from a proxy says nothing useful
                return ""
            message = text
        return " ".join(message.split())

    def is_retryable_failure(self, error: ProviderError) -> bool:
        """Whether ``error``, raised before the first event, is worth another try.

        Connect failures, connections cut before any event (a stale keep-alive connection),
        :data:`RETRYABLE_STATUSES` and retryable mid-stream error objects are; read timeouts
        are not (another idle wait would double the time to the error).
        """
        if isinstance(error, UpstreamHTTPError):
            return error.status_code in RETRYABLE_STATUSES
        if isinstance(error, UpstreamTimeout):
            return isinstance(error.__cause__, httpx.ConnectTimeout | httpx.PoolTimeout)
        if isinstance(error, UpstreamConnectionError | UpstreamStreamError):
            return error.retryable
        return False

    # -- reading helpers for parse_stream ----------------------------------------------

    def max_event_bytes(self) -> int:
        """``MAX_UPSTREAM_EVENT_BYTES`` for this entry: the longest SSE event or NDJSON line
        read before the stream is refused as malformed."""
        return max(int(self.setting("MAX_UPSTREAM_EVENT_BYTES")), MIN_EVENT_BYTES)

    async def iter_sse(self, state: StreamState) -> AsyncGenerator[ServerSentEvent, None]:
        """The body as Server-Sent Events (our WHATWG parser, any chunking).

        An event longer than :meth:`max_event_bytes`, and a body in which no event could be
        found although it does not begin like an event stream (an HTML or plain text page,
        binary data, a compressed body without its ``Content-Encoding``), raise
        :class:`UpstreamProtocolError`."""
        limit = self.max_event_bytes()
        parser = SSEParser()
        pending = 0
        head = b""  # the first bytes, to tell "not an event stream" from "cut short"
        seen = False
        async for chunk in state.chunks:
            if len(head) < _HEAD_BYTES:
                head += chunk[: _HEAD_BYTES - len(head)]
            events = parser.feed(chunk)
            if not events:
                pending += len(chunk)
                if pending > limit:
                    raise self.protocol_error(f"an event of more than {limit} bytes")
                continue
            pending = 0
            seen = True
            for event in events:
                if len(event.data) > limit:  # characters: never more than its bytes
                    raise self.protocol_error(f"an event of more than {limit} bytes")
                yield event
        parser.close()
        if not seen and head.strip() and not _SSE_START.match(head):
            raise self.protocol_error(
                f"a body that is not an event stream (Content-Type "
                f"{state.content_type or 'none'!r}), starting {_quote(head)}"
            )

    async def iter_lines(self, state: StreamState) -> AsyncGenerator[bytes, None]:
        """The body split into lines (NDJSON), without their ``\\n`` / ``\\r\\n``; blank lines
        are skipped and a last line without its end is still yielded. A line longer than
        :meth:`max_event_bytes` raises :class:`UpstreamProtocolError`."""
        limit = self.max_event_bytes()
        buffer = bytearray()  # appending to bytes would be quadratic for long lines
        async for chunk in state.chunks:
            buffer += chunk
            if b"\n" not in chunk:
                if len(buffer) > limit:
                    raise self.protocol_error(f"a line of more than {limit} bytes")
                continue
            *lines, rest = bytes(buffer).split(b"\n")
            buffer = bytearray(rest)
            for line in lines:
                if len(line) > limit:
                    raise self.protocol_error(f"a line of more than {limit} bytes")
                line = line.rstrip(b"\r")
                if line.strip():
                    yield line
        if buffer.strip():
            yield bytes(buffer).rstrip(b"\r")

    def decode_json(self, data: str | bytes) -> Any:
        """``data`` parsed as JSON, or :class:`UpstreamProtocolError` quoting its start."""
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:  # RecursionError: nested absurdly deep
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
            raise self.protocol_error(f"data that is not JSON: {text[:200]!r}") from exc

    def protocol_error(self, what: str) -> UpstreamProtocolError:
        return UpstreamProtocolError(self._message(f"Upstream {self.alias} sent {what}"))

    def stream_error(self, message: str, *, retryable: bool = True) -> UpstreamStreamError:
        """An error object reported inside the stream."""
        return UpstreamStreamError(
            self._message(f"Upstream {self.alias} reported an error: {message}"),
            retryable=retryable,
        )

    # -- the client --------------------------------------------------------------------

    def get_client(self) -> httpx.AsyncClient:
        """The client requests go through: the shared one of the running loop, or a private
        one over the transport given to the constructor."""
        if self._transport is None:
            return get_client()
        if self._private_client is None or self._private_client.is_closed:
            self._private_client = httpx.AsyncClient(transport=self._transport)
        return self._private_client

    async def aclose(self) -> None:
        """Close this instance's private client if it has one, else the running loop's shared
        client (which every HTTP provider of the loop uses; the next stream makes a new one)."""
        if self._private_client is not None:
            await self._private_client.aclose()
            self._private_client = None
        else:
            await aclose_clients()

    def timeout(self) -> httpx.Timeout:
        connect = float(self.setting("CONNECT_TIMEOUT"))
        return httpx.Timeout(
            connect=connect, read=float(self.setting("IDLE_TIMEOUT")), write=connect, pool=connect
        )

    # -- streaming ---------------------------------------------------------------------

    def stream(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        """Stream the answer; see the class docstring and :class:`BaseProvider`. (The
        retrying generator itself: no generator of our own in between, per event.)"""
        return with_retries(
            lambda deadline: self._attempt(request, deadline),
            max_retries=int(self.setting("MAX_RETRIES")),
            backoff=float(self.setting("RETRY_BACKOFF")),
            total_timeout=self.setting("TOTAL_TIMEOUT"),
            is_retryable=self.is_retryable_failure,
        )

    async def _attempt(
        self, request: ChatRequest, deadline: float | None
    ) -> AsyncGenerator[Event, None]:
        """One request: its events up to and including the one ``Finish``."""
        response = await self._open(request, deadline)
        try:
            state = self.new_state(request, response)
            events: AsyncIterator[Event]
            if self._json_instead_of_stream(response):
                events = self._parse_json_answer(response, state)
            else:
                events = self.parse_stream(response, state)
            try:
                while True:
                    event = await self._next(events, deadline)
                    if event is None:
                        # parse_stream ended without a Finish: the body ended too early.
                        raise UpstreamConnectionError(
                            self._message(
                                f"Upstream {self.alias}: the upstream stream ended before it "
                                "was complete."
                            )
                        )
                    if isinstance(event, Finish):
                        await self._drain(state)
                        yield event
                        return
                    yield event
            finally:
                await _aclose(events)
                await _aclose(state.chunks)
        finally:
            # Always, also on cancellation and aclose(): an unfinished response closes its
            # connection, which tells the upstream to stop generating (and billing).
            await response.aclose()

    async def _open(self, request: ChatRequest, deadline: float | None) -> httpx.Response:
        """Send the request; return the streaming response of a 2xx, raise for anything else."""
        client = self.get_client()
        try:
            http_request = self.build_request(request)
        except (httpx.InvalidURL, ValueError, TypeError) as exc:
            # A BASE_URL the checks should have refused, or unserializable params.
            raise UpstreamConnectionError(
                self._message(f"Cannot build the request to upstream {self.alias}: {exc}"),
                retryable=False,
            ) from exc
        http_request.extensions.setdefault("timeout", self.timeout().as_dict())
        try:
            async with _deadline_scope(deadline):
                response = await client.send(http_request, stream=True)
        except TimeoutError as exc:
            raise self._total_timeout() from exc
        except httpx.HTTPError as exc:
            raise self.map_transport_error(exc, started=False) from exc
        if response.is_success and _media_type(response) != "text/html":
            # A JSON answer where a stream was asked for is read by _parse_json_answer.
            return response
        try:
            body = await self._read_error_body(response, deadline)
        finally:
            await response.aclose()
        if response.is_success:
            # A proxy's or captive portal's page: the body is no stream of any backend.
            title = _html_title(body)
            raise self.protocol_error(
                f"an HTML page instead of a stream (status {response.status_code})"
                + (f": {title}" if title else "")
            )
        raise self.error_for_status(response, body)

    def _json_instead_of_stream(self, response: httpx.Response) -> bool:
        return _media_type(response) == "application/json" and "json" not in self.accept

    async def _parse_json_answer(
        self, response: httpx.Response, state: StreamState
    ) -> AsyncGenerator[Event, None]:
        """A whole JSON body where a stream was asked for: the events of
        :meth:`parse_json_answer`, or :class:`UpstreamProtocolError` quoting its message."""
        limit = self.max_event_bytes()
        body = bytearray()
        async for chunk in state.chunks:
            body += chunk
            if len(body) > limit:
                raise self.protocol_error(f"a JSON answer of more than {limit} bytes")
        try:
            data = json.loads(body) if body.strip() else None
        except (ValueError, RecursionError):
            data = None
        events = self.parse_json_answer(data, state) if isinstance(data, dict) else None
        if events is None:
            detail = self.map_error_body(response.status_code, bytes(body[:MAX_ERROR_BODY]))
            raise self.protocol_error(
                f"JSON instead of a stream (status {response.status_code}): {detail}"
            )
        logger.debug("%s: the upstream sent one JSON answer instead of a stream.", self.alias)
        for event in events:
            yield event
        for event in state.final_events():
            yield event

    async def _read_error_body(self, response: httpx.Response, deadline: float | None) -> bytes:
        body = b""
        try:
            async with _deadline_scope(deadline):
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= MAX_ERROR_BODY:
                        break
        except (httpx.HTTPError, TimeoutError):
            pass  # the status says enough
        return body[:MAX_ERROR_BODY]

    async def _next(self, events: AsyncIterator[Event], deadline: float | None) -> Event | None:
        """The next event of ``parse_stream``, ``None`` at its end; errors mapped.

        The total timeout covers only this await (never a ``yield``: a timeout armed across
        a yield would cancel the *consumer's* code)."""
        try:
            if deadline is None:
                return await anext(events)
            async with asyncio.timeout_at(deadline):
                return await anext(events)
        except StopAsyncIteration:
            return None
        except ProviderError:
            raise
        except TimeoutError as exc:
            raise self._total_timeout() from exc
        except httpx.HTTPError as exc:
            raise self.map_transport_error(exc, started=True) from exc
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            # json errors, UnicodeDecodeError, and data of an unexpected shape.
            raise self.protocol_error(
                f"data it could not read ({type(exc).__name__}: {exc})"
            ) from exc

    async def _drain(self, state: StreamState) -> None:
        """Read what is left of the body (normally nothing but the chunked terminator) so
        that httpcore returns the connection to the pool instead of closing it."""
        received = 0
        with contextlib.suppress(Exception):
            async with asyncio.timeout(min(DRAIN_SECONDS, float(self.setting("IDLE_TIMEOUT")))):
                async for chunk in state.chunks:
                    received += len(chunk)
                    if received > DRAIN_BYTES:
                        break

    # -- error mapping -----------------------------------------------------------------

    def _message(self, text: str) -> str:
        """Scrub first, then cut (cutting first could leave half a key unscrubbed)."""
        text = self.scrub(text)
        if len(text) > MAX_MESSAGE_CHARS + 80:
            text = text[: MAX_MESSAGE_CHARS + 80].rstrip() + "…"
        return text

    def error_for_status(self, response: httpx.Response, body: bytes) -> UpstreamHTTPError:
        """The exception for a non-2xx answer (before any event)."""
        status = response.status_code
        detail = self.scrub(self.map_error_body(status, body))
        if len(detail) > MAX_MESSAGE_CHARS:
            detail = detail[:MAX_MESSAGE_CHARS].rstrip() + "…"
        if not detail:
            detail = response.reason_phrase or "no message"
        if 300 <= status < 400:
            location = response.headers.get("location")
            detail += f" (a redirect to {location}: check BASE_URL)" if location else ""
        message = self._message(f"Upstream {self.alias} answered {status}: {detail}")
        return status_error(status, message, parse_retry_after(response.headers))

    def map_transport_error(self, exc: httpx.HTTPError, *, started: bool) -> ProviderError:
        """The exception for an httpx failure; ``started``: the response had begun."""
        where = self.display_url or self.alias
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectTimeout):
            seconds = self.setting("CONNECT_TIMEOUT")
            return UpstreamTimeout(
                self._message(
                    f"Upstream {self.alias} ({where}) did not accept a connection "
                    f"within {seconds:g} s."
                )
            )
        if isinstance(exc, httpx.PoolTimeout):
            return UpstreamTimeout(
                self._message(
                    f"No free connection to upstream {self.alias} within "
                    f"{self.setting('CONNECT_TIMEOUT'):g} s (MAX_CONNECTIONS reached)."
                )
            )
        if isinstance(exc, httpx.ReadTimeout):
            seconds = self.setting("IDLE_TIMEOUT")
            return UpstreamTimeout(
                self._message(f"No data from upstream {self.alias} for {seconds:g} s.")
            )
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(self._message(f"Upstream {self.alias} timed out: {detail}"))
        if isinstance(exc, httpx.ConnectError):
            return UpstreamConnectionError(
                self._message(f"Cannot connect to upstream {self.alias} ({where}): {detail}")
            )
        if isinstance(exc, httpx.DecodingError):
            return self.protocol_error(f"a body that cannot be decoded: {detail}")
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL | httpx.LocalProtocolError):
            return UpstreamConnectionError(
                self._message(f"Cannot send to upstream {self.alias} ({where}): {detail}"),
                retryable=False,
            )
        if isinstance(exc, httpx.RemoteProtocolError | httpx.NetworkError):
            what = "was cut mid-stream" if started else "failed"
            return UpstreamConnectionError(
                self._message(f"The connection to upstream {self.alias} {what}: {detail}")
            )
        return UpstreamConnectionError(self._message(f"Upstream {self.alias} failed: {detail}"))

    def _total_timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(
            self._message(
                f"Upstream {self.alias} did not finish within TOTAL_TIMEOUT "
                f"({float(self.setting('TOTAL_TIMEOUT')):g} s)."
            )
        )


# -- helpers ---------------------------------------------------------------------------------

#: Where the retry jitter's randomness comes from: a function returning a float in [0, 1).
#: Tests replace it (``monkeypatch.setattr(http, "jitter_random", lambda: 0.5)``) to make
#: the delays of :func:`backoff_delay` deterministic.
jitter_random: Callable[[], float] = random.random


def backoff_delay(backoff: float, attempt: int) -> float:
    """Seconds before retry ``attempt + 1`` (``attempt`` counts from 0) when the upstream
    said nothing: exponential backoff with *equal jitter*.

    The step doubles with each retry (``backoff``, twice that, four times that …, the
    ``RETRY_BACKOFF`` setting being the first) and the wait is drawn uniformly between the
    step and twice the step, capped at :data:`MAX_RETRY_AFTER`. Half of the window is fixed,
    so a retry never comes sooner than the step; the random half spreads the retries of many
    streams that failed together (an upstream restart, a rate limit) instead of sending
    them back in lockstep.
    """
    step = min(max(backoff, 0.0) * float(2**attempt), MAX_RETRY_AFTER / 2)
    return step + step * min(max(jitter_random(), 0.0), 1.0)


async def with_retries(
    attempt: Callable[[float | None], AsyncGenerator[Event, None]],
    *,
    max_retries: int,
    backoff: float,
    total_timeout: float | None,
    is_retryable: Callable[[ProviderError], bool],
) -> AsyncGenerator[Event, None]:
    """The events of ``attempt(deadline)``, tried again on a :class:`ProviderError` that
    ``is_retryable`` accepts, as long as no event was yielded yet (a client never sees an
    answer twice), up to ``max_retries`` times, waiting :func:`retry_delay` in between, and
    never past the total timeout (``deadline`` is the loop time it ends, or ``None``).
    The last failure is logged and raised. Shared by every backend that calls a model."""
    loop = asyncio.get_running_loop()
    deadline = None if total_timeout is None else loop.time() + float(total_timeout)
    retries = 0
    while True:
        yielded = False
        try:
            async with contextlib.aclosing(attempt(deadline)) as events:
                async for event in events:
                    yielded = True
                    yield event
            return
        except ProviderError as exc:
            delay = None
            if not yielded and retries < max_retries and is_retryable(exc):
                delay = retry_delay(exc, retries, backoff)
                if delay is not None and deadline is not None and loop.time() + delay >= deadline:
                    delay = None  # the retry could not finish in time anyway
            if delay is None:
                logger.warning("%s [%s, retryable=%s]", exc.message, exc.type, exc.retryable)
                raise
            retries += 1
            logger.warning(
                "%s Retrying in %.2f s (retry %d of %d).", exc.message, delay, retries, max_retries
            )
        await asyncio.sleep(delay)


def retry_delay(error: ProviderError, attempt: int, backoff: float) -> float | None:
    """Seconds to wait before retry ``attempt + 1`` after ``error``, or ``None`` not to
    retry: the upstream's ``Retry-After`` as given (``None`` when it asks for more than
    :data:`MAX_RETRY_AFTER`), else :func:`backoff_delay`."""
    retry_after = error.retry_after if isinstance(error, UpstreamHTTPError) else None
    if retry_after is not None:
        if retry_after > MAX_RETRY_AFTER:
            return None
        return max(float(retry_after), 0.0)
    return backoff_delay(backoff, attempt)


def parse_retry_after(headers: httpx.Headers | Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or an HTTP-date,
    RFC 9110 §10.2.3), or ``None``."""
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms:
        with contextlib.suppress(ValueError):
            value = float(raw_ms) / 1000
            if value >= 0:
                return value
    raw = lowered.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        return value if value >= 0 and value == value else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _error_message(data: Any, depth: int = 0) -> str | None:
    if depth > MAX_ERROR_DEPTH:
        return None
    if isinstance(data, list) and data:
        return _error_message(data[0], depth + 1)
    if not isinstance(data, dict):
        return data if isinstance(data, str) and data else None
    error = data.get("error")
    if isinstance(error, dict):
        found = _error_message(error, depth + 1)
        if found:
            return found
    elif isinstance(error, str) and error:
        return error
    for key in ("message", "detail", "error_message", "msg"):
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list | dict):
            found = _error_message(value, depth + 1)
            if found:
                return found
    return None


#: How much of a body that is not an event stream is quoted in the error.
_HEAD_BYTES = 120
# What an event stream begins with: blank lines, then a field or a comment (optional BOM).
_SSE_START = re.compile(rb"(?:\xef\xbb\xbf)?[\r\n]*(?:data|event|id|retry)?:")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title", re.IGNORECASE | re.DOTALL)


def _media_type(response: httpx.Response) -> str:
    content_type: str = response.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower()


def _html_title(body: bytes) -> str:
    match = _TITLE.search(body.decode("utf-8", "replace"))
    title = " ".join(match.group(1).split()) if match else ""
    return title[:100]


def _quote(head: bytes) -> str:
    """The first bytes of a body, quoted safely: text as text, anything else as bytes."""
    text = head.decode("utf-8", "replace")
    return repr(text) if "\ufffd" not in text else repr(head)


def _is_http_url(value: str) -> bool:
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    return url.scheme in ("http", "https") and bool(url.host)


def _str_mapping(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


async def _read_body(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    chunks = response.aiter_bytes()
    try:
        async for chunk in chunks:
            if chunk:
                yield chunk
    finally:
        await _aclose(chunks)


async def _aclose(iterator: object) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


@contextlib.asynccontextmanager
async def _deadline_scope(deadline: float | None) -> AsyncIterator[None]:
    if deadline is None:
        yield
    else:
        async with asyncio.timeout_at(deadline):
            yield

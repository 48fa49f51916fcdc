"""HTTP responses: the SSE event stream and the JSON errors of the protocol.

Encoding (:func:`django_llmstream.sse.encode`) is kept apart from the response class; the
response only frames a turn's events, fills silences with heartbeats and reports a client that
went away.
"""

from __future__ import annotations

import html
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.middleware.gzip import re_accepts_gzip
from django.template.loader import render_to_string

from django_llmstream.brokers import Subscription, TurnEvent
from django_llmstream.conf import app_settings
from django_llmstream.sse import encode
from django_llmstream.writer import release_connections

__all__ = ["SSEResponse", "encode_event", "error_response", "event_stream"]

logger = logging.getLogger("django_llmstream.responses")

PING = b": ping\n\n"


def error_response(
    status: int,
    error_type: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    """``{"error": {"type", "message", "field"}}`` with ``status``."""
    response = JsonResponse(
        {"error": {"type": error_type, "message": message, "field": field}}, status=status
    )
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _html_fragment(event: TurnEvent) -> str:
    data = event.data
    if event.event in {"delta", "reasoning"}:
        return html.escape(str(data.get("text", "")), quote=False)
    if event.event == "start":
        return ""
    if event.event == "tool_call":
        return html.escape(str(data.get("arguments", "")), quote=False)
    # Once per turn, so an overridable template costs nothing that matters.
    if event.event == "done":
        usage = data.get("usage") or {}
        context = {**data, "usage": usage, "cost_display": _cost_display(data.get("cost"))}
        return render_to_string("django_llmstream/events/done.html", context).strip()
    return render_to_string("django_llmstream/events/error.html", dict(data)).strip()


def _cost_display(cost: Any) -> str:
    """``"0.00001500"`` as ``"$0.000015"``; empty when the cost is unknown."""
    if cost is None or cost == "":
        return ""
    text = str(cost)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"${text}"


#: What ``?format=html`` streams right after the terminal event: the one event name that
#: ends both a completed and a failed turn, for ``sse-close="close"``. The htmx SSE extension
#: takes a single name for ``sse-close``; closing on ``done`` alone leaves a failed turn's
#: connection to the browser, which reconnects, gets 204, and the extension then opens a
#: fresh EventSource without Last-Event-ID and replays the turn, again and again. No ``id``:
#: it is not an event of the turn, and the last id in effect stays the terminal event's.
HTML_CLOSE = encode("", event="close")


def encode_event(event: TurnEvent, fmt: str = "json") -> bytes:
    """One event on the wire: JSON data, or an HTML fragment for ``?format=html``."""
    data: Any = _html_fragment(event) if fmt == "html" else dict(event.data)
    return encode(data, event=event.event, id=event.id)


def _encode_batch(batch: list[TurnEvent], fmt: str) -> bytes:
    chunk = b"".join(encode_event(e, fmt) for e in batch)
    if fmt == "html" and batch and batch[-1].terminal:
        chunk += HTML_CLOSE  # in the same write as the terminal event
    return chunk


async def event_stream(
    events: Iterable[TurnEvent] = (),
    subscription: Subscription | None = None,
    *,
    fmt: str = "json",
    on_disconnect: Callable[[], None] | None = None,
    on_idle: Callable[[int], Awaitable[list[TurnEvent]]] | None = None,
    encoder: Callable[[list[TurnEvent]], bytes] | None = None,
) -> AsyncIterator[bytes]:
    """The bytes of an event stream: a ``retry:`` line, ``events``, then what ``subscription``
    delivers until the terminal event, with ``: ping`` after each silent heartbeat interval.

    ``on_disconnect`` runs when the client goes away before the terminal event; ``on_idle``
    after each silent interval, with the last id sent: the events it returns are sent (ending
    the stream if the last is terminal). ``encoder`` frames each batch of events instead of
    ``fmt`` (e.g. :class:`~django_llmstream.aisdk.UIMessageStreamEncoder`).
    """
    heartbeat = float(app_settings.HEARTBEAT_SECONDS)
    ended = False
    encode_batch = encoder or (lambda batch: _encode_batch(batch, fmt))
    try:
        first = encode(retry=int(app_settings.RETRY_MS))
        batch = list(events)
        if batch:
            first += encode_batch(batch)
            ended = batch[-1].terminal
        cursor = batch[-1].id if batch else 0
        yield first
        if not ended:
            # Hand back the database connection of the request's thread: it would otherwise
            # stay open for the whole stream (writer.release_connections).
            await sync_to_async(release_connections)()
        while subscription is not None and not ended:
            batch = await subscription.get(heartbeat)
            if not batch and on_idle is not None:
                batch = [e for e in await on_idle(cursor) if e.id > cursor]
            if not batch:
                yield PING
                continue
            ended = batch[-1].terminal
            cursor = batch[-1].id
            yield encode_batch(batch)
    finally:
        if not ended and on_disconnect is not None:
            on_disconnect()
        if subscription is not None:
            await subscription.aclose()


def replay_stream(
    events: Iterable[TurnEvent],
    fmt: str = "json",
    encoder: Callable[[list[TurnEvent]], bytes] | None = None,
) -> Iterator[bytes]:
    """A finished turn's events as a sync iterator (for WSGI, where Django would otherwise
    have to gather an async iterator)."""
    batch = list(events)
    body = (encoder(batch) if encoder is not None else _encode_batch(batch, fmt)) if batch else b""
    yield encode(retry=int(app_settings.RETRY_MS)) + body


def _gzip_middleware_installed() -> bool:
    return any(path.endswith("GZipMiddleware") for path in getattr(settings, "MIDDLEWARE", ()))


async def _gzip_stream(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # A small window and memory level keep the compressor at a few KB per open stream; a
    # sync flush after every chunk sends each event at once (GZipMiddleware would hold them).
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + 12, 2)
    try:
        async for chunk in chunks:
            yield compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
        yield compressor.flush(zlib.Z_FINISH)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def _gzip_stream_sync(chunks: Iterator[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + 12, 2)
    try:
        for chunk in chunks:
            yield compressor.compress(chunk) + compressor.flush(zlib.Z_SYNC_FLUSH)
        yield compressor.flush(zlib.Z_FINISH)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


class SSEResponse(StreamingHttpResponse):
    """A ``text/event-stream`` response that survives ``GZipMiddleware``.

    Django's middleware compresses each chunk of an async stream as its own gzip member (and
    a sync stream not at all until the end), which breaks SSE for most clients. Where the
    middleware is installed and the client accepts gzip, we compress here instead, as one gzip
    stream flushed after every event, and set ``Content-Encoding`` so the middleware steps
    aside.
    """

    def __init__(
        self, chunks: AsyncIterator[bytes] | Iterator[bytes], request: HttpRequest | None = None
    ) -> None:
        compress = (
            request is not None
            and _gzip_middleware_installed()
            and re_accepts_gzip.search(request.META.get("HTTP_ACCEPT_ENCODING", "")) is not None
        )
        body: AsyncIterator[bytes] | Iterator[bytes] = chunks
        if compress:
            body = (
                _gzip_stream_sync(chunks) if isinstance(chunks, Iterator) else _gzip_stream(chunks)
            )
        super().__init__(body, content_type="text/event-stream; charset=utf-8")
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"
        if compress:
            self["Content-Encoding"] = "gzip"
        if request is not None and _gzip_middleware_installed():
            self["Vary"] = "Accept-Encoding"

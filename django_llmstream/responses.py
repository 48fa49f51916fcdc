"""HTTP responses: the SSE event stream and the JSON errors of PROTOCOL.md.

Encoding (:func:`django_llmstream.sse.encode`) is kept apart from the response class; the
response only frames a turn's events, fills silences with heartbeats and reports a client that
went away.
"""

from __future__ import annotations

import html
import logging
import zlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.middleware.gzip import re_accepts_gzip
from django.utils.html import format_html

from django_llmstream.brokers import Subscription, TurnEvent
from django_llmstream.conf import app_settings
from django_llmstream.sse import encode

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
    if event.event == "done":
        usage = data.get("usage") or {}
        tokens = usage.get("output_tokens")
        return format_html(
            '<span class="llmstream-done" data-finish-reason="{}" data-output-tokens="{}"></span>',
            data.get("finish_reason"),
            "" if tokens is None else tokens,
        )
    return format_html(
        '<span class="llmstream-error" data-error-type="{}">{}</span>',
        data.get("type"),
        data.get("message", ""),
    )


def encode_event(event: TurnEvent, fmt: str = "json") -> bytes:
    """One event on the wire: JSON data, or an HTML fragment for ``?format=html``."""
    data: Any = _html_fragment(event) if fmt == "html" else dict(event.data)
    return encode(data, event=event.event, id=event.id)


async def event_stream(
    events: Iterable[TurnEvent] = (),
    subscription: Subscription | None = None,
    *,
    fmt: str = "json",
    on_disconnect: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """The bytes of an event stream: a ``retry:`` line, ``events``, then what ``subscription``
    delivers until the terminal event, with ``: ping`` after each silent heartbeat interval.

    ``on_disconnect`` runs when the client goes away before the terminal event.
    """
    heartbeat = float(app_settings.HEARTBEAT_SECONDS)
    ended = False
    try:
        first = encode(retry=int(app_settings.RETRY_MS))
        batch = list(events)
        if batch:
            first += b"".join(encode_event(e, fmt) for e in batch)
            ended = batch[-1].terminal
        yield first
        while subscription is not None and not ended:
            batch = await subscription.get(heartbeat)
            if not batch:
                yield PING
                continue
            ended = batch[-1].terminal
            yield b"".join(encode_event(e, fmt) for e in batch)
    finally:
        if not ended and on_disconnect is not None:
            on_disconnect()
        if subscription is not None:
            await subscription.aclose()


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


class SSEResponse(StreamingHttpResponse):
    """A ``text/event-stream`` response that survives ``GZipMiddleware``.

    Django's middleware compresses each chunk of an async stream as its own gzip member (and
    a sync stream not at all until the end), which breaks SSE for most clients. Where the
    middleware is installed and the client accepts gzip, we compress here instead, as one gzip
    stream flushed after every event, and set ``Content-Encoding`` so the middleware steps
    aside.
    """

    def __init__(self, chunks: AsyncIterator[bytes], request: HttpRequest | None = None) -> None:
        compress = (
            request is not None
            and _gzip_middleware_installed()
            and re_accepts_gzip.search(request.META.get("HTTP_ACCEPT_ENCODING", "")) is not None
        )
        super().__init__(
            _gzip_stream(chunks) if compress else chunks,
            content_type="text/event-stream; charset=utf-8",
        )
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"
        if compress:
            self["Content-Encoding"] = "gzip"
        if request is not None and _gzip_middleware_installed():
            self["Vary"] = "Accept-Encoding"

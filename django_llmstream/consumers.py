"""A Django Channels consumer: the turns of the protocol over one WebSocket.

Needs Channels (``pip install "django-llmstream[channels]"``). Route it inside Channels'
``AuthMiddlewareStack`` (the session and the user come from the handshake's cookies, as for
the HTTP views) and ``AllowedHostsOriginValidator`` (a browser sends any site's cookies to any
socket: the origin check is what CSRF protection is for the HTTP endpoints)::

    # asgi.py
    from channels.auth import AuthMiddlewareStack
    from channels.routing import ProtocolTypeRouter, URLRouter
    from channels.security.websocket import AllowedHostsOriginValidator
    from django.urls import path

    from django_llmstream.consumers import LLMStreamConsumer

    application = ProtocolTypeRouter({
        "http": django_application,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter([
            path("llmstream/ws/", LLMStreamConsumer.as_asgi()),
        ]))),
    })

Client messages (JSON text frames):

- ``{"type": "start", "prompt": …, "conversation": …, …}`` — the body of ``POST turns/``;
- ``{"type": "stop", "turn": id}`` — as ``POST turns/<turn>/stop/``;
- ``{"type": "resume", "turn": id, "last_event_id": n}`` — as ``GET turns/<turn>/events/``
  with ``Last-Event-ID`` (``0`` or absent: from the start).

Any of them may carry a ``"ref"``, echoed in an error it causes. Server messages:

- ``{"event": name, "id": n, "turn": id, "data": {…}}`` — the events of the turns the socket
  started or resumed, exactly as on the event stream (``start`` … ``done`` / ``error``);
- ``{"type": "error", "error": {"type", "message", "field"}, "status": n, "ref": …}`` — a
  refused message, with the type, message, field and HTTP status of the JSON error the HTTP
  endpoint would have answered (``retry_after`` too for a 429);
- ``{"type": "ended", "turn": id}`` — a resume after the terminal event (HTTP's ``204``).

Validation, ownership, permissions, quotas and the turn's rows are those of the HTTP views:
the consumer runs :attr:`LLMStreamConsumer.view_class`'s hooks (``get_queryset``,
``get_provider``, ``build_messages``, ``check_quota`` …) on a request built from the socket's
scope. A turn started here behaves as one started with ``POST turns/``: it outlives the
socket, and is cancelled ``DISCONNECT_GRACE_SECONDS`` after its last watcher left (unless
``ON_DISCONNECT`` is ``"finish"``), so a client that reconnects resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Mapping
from typing import Any

try:
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.sessions import CookieMiddleware
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without channels
    raise ImportError(
        'django_llmstream.consumers needs Django Channels: pip install "django-llmstream[channels]"'
    ) from exc

from django.conf import settings
from django.http import HttpRequest

from django_llmstream.brokers import TurnEvent, get_broker
from django_llmstream.conf import app_settings
from django_llmstream.exceptions import LLMStreamError, RequestValidationError
from django_llmstream.turns import TurnWatch, check_liveness, launch, stop_turn, watch_turn
from django_llmstream.views import Owner, TurnCreateView, TurnStartMixin, session_owner_key

__all__ = ["LLMStreamConsumer"]

logger = logging.getLogger("django_llmstream.consumers")

# The HTTP status -> error type table of the views, for errors that carry no type of their own.
_ERROR_TYPES = {
    400: "invalid_request",
    403: "forbidden",
    404: "not_found",
    409: "turn_running",
    413: "request_too_large",
    429: "rate_limited",
    503: "unavailable",
}


class LLMStreamConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]  # channels is untyped
    """Start, stop and resume turns over one WebSocket (see the module docstring).

    Subclass to adapt it: :attr:`view_class` (a :class:`~django_llmstream.views.
    TurnStartMixin` subclass: your ``get_queryset``, ``get_provider``, ``build_messages``,
    ``check_quota`` overrides apply here too) and :meth:`get_owner`.
    """

    #: The view whose hooks decide ownership, provider, messages and quotas.
    view_class: type[TurnStartMixin] = TurnCreateView

    owner: Owner | None
    watchers: dict[str, asyncio.Task[None]]

    # -- connection ----------------------------------------------------------------------

    async def connect(self) -> None:
        self.watchers = {}
        headers: list[tuple[bytes, bytes]] = []
        self.owner = await self.get_owner(headers)
        await self.accept(headers=headers or None)
        if self.owner is None:
            await self.send_error(403, "not_authenticated", "Log in to use this endpoint.")
            await self.close(code=4403)

    async def disconnect(self, code: int) -> None:
        tasks = list(self.watchers.values())
        for task in tasks:
            task.cancel()
        # Closing the subscriptions lowers the turns' watcher counts: an unwatched turn is
        # cancelled after DISCONNECT_GRACE_SECONDS, as when a browser closes an event stream.
        await asyncio.gather(*tasks, return_exceptions=True)

    async def get_owner(self, headers: list[tuple[bytes, bytes]]) -> Owner | None:
        """The caller, from the scope's ``user`` and ``session`` (Channels'
        ``AuthMiddlewareStack``), or ``None`` when they may not use the API.

        A visitor without a session (where ``ALLOW_ANONYMOUS``) gets one, its cookie set in
        the handshake's response (appended to ``headers``), so a reload finds their turns."""
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            return Owner(user=user, session_key=None)
        if not app_settings.ALLOW_ANONYMOUS:
            return None
        session = self.scope.get("session")
        if session is None:
            return None
        if not session.session_key:
            await session.aset("llmstream_visitor", True)
            await session.asave()
            message: dict[str, Any] = {"headers": headers}
            CookieMiddleware.set_cookie(
                message,
                settings.SESSION_COOKIE_NAME,
                session.session_key,
                max_age=session.get_expiry_age(),
                domain=settings.SESSION_COOKIE_DOMAIN,
                path=settings.SESSION_COOKIE_PATH,
                secure=settings.SESSION_COOKIE_SECURE or None,
                httponly=settings.SESSION_COOKIE_HTTPONLY or None,
                samesite=settings.SESSION_COOKIE_SAMESITE,
            )
        return Owner(user=None, session_key=session_owner_key(session.session_key))

    # -- messages ------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.owner is None:
            return
        ref: Any = None
        try:
            if text_data is None:
                raise RequestValidationError("Send JSON text messages.", status=400)
            limit = int(app_settings.MAX_BODY_BYTES)
            if len(text_data.encode("utf-8", "surrogatepass")) > limit:
                raise RequestValidationError(
                    f"The message is larger than {limit} bytes.", status=413
                )
            try:
                message = json.loads(text_data)
            except ValueError as exc:
                raise RequestValidationError(f"The message is not valid JSON: {exc}") from exc
            if not isinstance(message, dict):
                raise RequestValidationError("A message must be a JSON object.")
            ref = message.pop("ref", None)
            kind = message.pop("type", None)
            if kind == "start":
                await self.start_turn(message)
            elif kind == "stop":
                await self.stop_turn(message)
            elif kind == "resume":
                await self.resume_turn(message)
            else:
                raise RequestValidationError(
                    f"Unknown message type {kind!r}; use start, stop or resume.", field="type"
                )
        except RequestValidationError as exc:
            error_type = getattr(exc, "error_type", None) or _ERROR_TYPES.get(exc.status, "error")
            retry_after = getattr(exc, "headers", {}).get("Retry-After")
            await self.send_error(exc.status, error_type, exc.message, exc.field, ref, retry_after)
        except LLMStreamError as exc:  # e.g. a provider that cannot serve now
            await self.send_error(503, exc.type, exc.message, None, ref)

    async def start_turn(self, body: Mapping[str, Any]) -> None:
        """``{"type": "start", …}``: as ``POST turns/``; then the turn's events follow."""
        view = self.make_view("POST")
        generation = await launch(await view.plan_turn(view.request, body))
        turn_id, broker = generation.turn_id, get_broker()

        def on_idle(cursor: int) -> Awaitable[list[TurnEvent]]:
            return check_liveness(turn_id, broker, cursor)

        # From its first event: the broker holds them all (start is already published).
        self.watch(turn_id, TurnWatch([], broker.subscribe(turn_id, 0), on_idle), 0)

    async def stop_turn(self, body: Mapping[str, Any]) -> None:
        """``{"type": "stop", "turn"}``: as ``POST turns/<turn>/stop/`` (idempotent). A
        watched turn's ``done`` (``finish_reason: "cancelled"``) follows."""
        view = self.make_view("POST")
        message = await view.get_turn(_turn_id(body))
        await view.check_permission(view.request, "stop", message.conversation)
        await stop_turn(message)

    async def resume_turn(self, body: Mapping[str, Any]) -> None:
        """``{"type": "resume", "turn", "last_event_id"}``: the events after that id, as
        ``GET turns/<turn>/events/`` with ``Last-Event-ID``; ``ended`` if there are none."""
        view = self.make_view("GET")
        message = await view.get_turn(_turn_id(body))
        await view.check_permission(view.request, "view", message.conversation)
        raw = body.get("last_event_id", 0)
        if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 18:
            raw = int(raw)
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            raise RequestValidationError(
                "last_event_id must be an event id this server sent.", field="last_event_id"
            )
        turn_id = str(message.pk)
        watch = await watch_turn(message, raw)
        if watch is None:
            await self.send_json({"type": "ended", "turn": turn_id})
            return
        self.watch(turn_id, watch, raw)

    # -- plumbing ------------------------------------------------------------------------

    def make_view(self, method: str) -> TurnStartMixin:
        """An instance of :attr:`view_class` for one message, set up with a request built
        from the scope (``method`` is that of the HTTP endpoint the message stands for), so
        ``PERMISSION`` callables and view hooks see the same user and session."""
        request = HttpRequest()
        request.method = method
        request.path = request.path_info = str(self.scope.get("path", ""))
        for name, value in self.scope.get("headers", []):
            key = name.decode("latin-1").upper().replace("-", "_")
            if key not in {"CONTENT_TYPE", "CONTENT_LENGTH"}:
                key = f"HTTP_{key}"
            request.META[key] = value.decode("latin-1")
        client = self.scope.get("client")
        if client:
            request.META["REMOTE_ADDR"] = client[0]
        request.COOKIES = dict(self.scope.get("cookies", {}))
        user = self.scope.get("user")
        if user is not None:
            request.user = user

            async def auser() -> Any:
                return user

            request.auser = auser
        if "session" in self.scope:
            request.session = self.scope["session"]
        request.scope = self.scope  # type: ignore[attr-defined]
        view = self.view_class()
        view.setup(request)
        assert self.owner is not None
        view.owner = self.owner
        return view

    def watch(self, turn_id: str, watch: TurnWatch, after: int) -> None:
        """Relay a turn's events to the socket (one relay per turn: a new one replaces it)."""
        previous = self.watchers.pop(turn_id, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._relay(turn_id, watch, after))
        self.watchers[turn_id] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self.watchers.get(turn_id) is done:
                del self.watchers[turn_id]
            if not done.cancelled() and done.exception() is not None:
                # E.g. the socket closed under a send: the turn itself is not affected.
                logger.info("Relay of turn %s ended: %r", turn_id, done.exception())

        task.add_done_callback(forget)

    async def _relay(self, turn_id: str, watch: TurnWatch, cursor: int) -> None:
        heartbeat = float(app_settings.HEARTBEAT_SECONDS)
        subscription = watch.subscription
        try:
            batch = list(watch.events)
            while True:
                for event in batch:
                    await self.send_event(turn_id, event)
                    cursor = event.id
                    if event.terminal:
                        return
                if subscription is None:
                    return
                batch = await subscription.get(heartbeat)
                if not batch:
                    # Silence: a turn whose process died is ended, one finished only in the
                    # database is finished from there (as for the event stream).
                    batch = [e for e in await watch.on_idle(cursor) if e.id > cursor]
        finally:
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.aclose()

    async def send_event(self, turn_id: str, event: TurnEvent) -> None:
        await self.send_json(
            {"event": event.event, "id": event.id, "turn": turn_id, "data": dict(event.data)}
        )

    async def send_error(
        self,
        status: int,
        error_type: str,
        message: str,
        field: str | None = None,
        ref: Any = None,
        retry_after: Any = None,
    ) -> None:
        payload: dict[str, Any] = {
            "type": "error",
            "error": {"type": error_type, "message": message, "field": field},
            "status": status,
        }
        if ref is not None:
            payload["ref"] = ref
        if retry_after is not None:
            payload["retry_after"] = int(retry_after)
        await self.send_json(payload)

    async def send_json(self, content: Mapping[str, Any]) -> None:
        await self.send(text_data=json.dumps(content, separators=(",", ":"), ensure_ascii=False))


def _turn_id(body: Mapping[str, Any]) -> uuid.UUID:
    raw = body.get("turn")
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise RequestValidationError("turn must be a turn id (a UUID).", field="turn") from None

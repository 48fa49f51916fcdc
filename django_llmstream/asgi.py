"""Graceful shutdown for ASGI servers: wrap Django's application with :func:`with_lifespan`.

Django's ASGI handler does not speak the ASGI ``lifespan`` protocol, so a server stopping has
no way to tell running turns. Wrapped, a ``SIGTERM``/``SIGINT`` (or the lifespan shutdown)
gives running turns ``SHUTDOWN_DRAIN_SECONDS`` to finish, then ends the rest as
``interrupted`` — persisted, with their watchers told — so no turn is silently dropped and
event streams close, letting the server exit instead of waiting for them::

    # asgi.py
    from django.core.asgi import get_asgi_application
    from django_llmstream.asgi import with_lifespan

    application = with_lifespan(get_asgi_application())
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from types import FrameType
from typing import Any

from django_llmstream.conf import app_settings

__all__ = ["with_lifespan"]

logger = logging.getLogger("django_llmstream.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Lifespan:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._drain: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._loop = asyncio.get_running_loop()
                self._hook_signals()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.drain()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _hook_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled in the main thread (e.g. tests' servers)
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)

            def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                self._start_drain()
                if callable(previous):
                    previous(signum, frame)
                elif previous == signal.SIG_DFL and signum == signal.SIGINT:
                    raise KeyboardInterrupt

            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, handler)

    def _start_drain(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._ensure_drain)

    def _ensure_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._run_drain())

    async def _run_drain(self) -> None:
        from django_llmstream.generation import drain

        await drain(float(app_settings.SHUTDOWN_DRAIN_SECONDS))

    async def drain(self) -> None:
        self._ensure_drain()
        assert self._drain is not None
        await self._drain


def with_lifespan(app: Any) -> ASGIApp:
    """Django's ASGI application, with running turns drained and saved at shutdown."""
    return _Lifespan(app)

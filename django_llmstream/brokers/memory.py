"""The in-process broker: the default, enough for one ASGI worker process.

Events live in a list per turn; subscribers wait on an :class:`asyncio.Event` that a publish
sets and replaces when someone waits on it, so one publish wakes every watcher once, without a
queue per watcher.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django_llmstream.brokers.base import BaseBroker, Subscription, TurnEvent
from django_llmstream.conf import app_settings

__all__ = ["MemoryBroker"]


class _TurnLog:
    __slots__ = (
        "changed",
        "events",
        "expires_at",
        "first_id",
        "stop_callbacks",
        "waiting",
        "watchers",
    )

    def __init__(self) -> None:
        self.events: list[TurnEvent] = []
        self.first_id = 1
        self.changed = asyncio.Event()
        self.watchers = 0
        self.waiting = 0  # subscribers waiting on ``changed`` right now
        self.expires_at: float | None = None
        self.stop_callbacks: list[Callable[[], None]] = []

    def after(self, cursor: int) -> list[TurnEvent]:
        # Ids are 1, 2, 3 …, so the position of id n is n - first_id: no search needed.
        start = max(cursor + 1 - self.first_id, 0)
        return self.events[start:] if start < len(self.events) else []

    @property
    def finished(self) -> bool:
        return bool(self.events) and self.events[-1].terminal


class _MemorySubscription(Subscription):
    def __init__(self, broker: MemoryBroker, turn_id: str, after: int) -> None:
        self._broker = broker
        self._turn_id = turn_id
        self._cursor = after
        self._closed = False
        self._log = broker._logs.get(turn_id)
        if self._log is not None:
            self._log.watchers += 1

    async def get(self, timeout: float) -> list[TurnEvent]:
        log = self._log
        if log is None or self._closed:
            return []
        events = log.after(self._cursor)
        if not events:
            if log.finished:
                return []
            changed = log.changed
            log.waiting += 1
            try:
                # asyncio.timeout, not wait_for: wait_for wraps the wait in a task of its
                # own, which under many slow streams was a task per token per watcher.
                async with asyncio.timeout(timeout):
                    await changed.wait()
            except TimeoutError:
                return []
            finally:
                log.waiting -= 1
            events = log.after(self._cursor)
        if events:
            self._cursor = events[-1].id
        return events

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._log is not None:
                self._log.watchers -= 1


class MemoryBroker(BaseBroker):
    """Keeps events in this process only: one worker process (the default)."""

    crosses_processes = False

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self._logs: dict[str, _TurnLog] = {}
        self._stop_callbacks: dict[str, list[Callable[[], None]]] = {}

    def _expire(self) -> None:
        now = time.monotonic()
        dead = [k for k, log in self._logs.items() if log.expires_at and log.expires_at <= now]
        for key in dead:
            del self._logs[key]

    async def publish(self, turn_id: str, event: TurnEvent) -> None:
        self.publish_nowait(turn_id, event)

    async def publish_many(self, turn_id: str, events: Sequence[TurnEvent]) -> None:
        for event in events:
            self.publish_nowait(turn_id, event)

    async def flush(self, turn_id: str) -> None:
        return None  # publish_nowait has published already

    def publish_nowait(self, turn_id: str, event: TurnEvent) -> None:
        """Publish at once: nothing here waits."""
        log = self._logs.get(turn_id)
        if log is None:
            self._expire()  # amortised: only when a turn begins
            log = self._logs[turn_id] = _TurnLog()
            log.first_id = event.id
        log.events.append(event)
        if event.terminal:
            log.expires_at = time.monotonic() + float(app_settings.BROKER_TTL_SECONDS)
        if log.waiting:
            # Only when someone waits: a new Event per token is measurable (D=0 throughput).
            changed, log.changed = log.changed, asyncio.Event()
            changed.set()

    async def known(self, turn_id: str) -> bool:
        log = self._logs.get(turn_id)
        if log is not None and log.expires_at is not None and log.expires_at <= time.monotonic():
            del self._logs[turn_id]
            return False
        return log is not None

    async def last_event(self, turn_id: str) -> TurnEvent | None:
        log = self._logs.get(turn_id) if await self.known(turn_id) else None
        return log.events[-1] if log is not None and log.events else None

    def subscribe(self, turn_id: str, after: int = 0) -> Subscription:
        return _MemorySubscription(self, turn_id, after)

    async def watchers(self, turn_id: str) -> int:
        log = self._logs.get(turn_id)
        return log.watchers if log is not None else 0

    async def request_stop(self, turn_id: str) -> bool:
        callbacks = list(self._stop_callbacks.get(turn_id, ()))
        for callback in callbacks:
            callback()
        return bool(callbacks)

    def on_stop(self, turn_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        self._stop_callbacks.setdefault(turn_id, []).append(callback)

        def unregister() -> None:
            callbacks = self._stop_callbacks.get(turn_id)
            if callbacks and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
                    del self._stop_callbacks[turn_id]

        return unregister

    def forget(self, turn_id: str) -> None:
        """Drop a turn's events now (tests use it to force a replay from the database)."""
        self._logs.pop(turn_id, None)

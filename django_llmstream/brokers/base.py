"""The contract every broker keeps: carry a turn's events from its generation to watchers.

A broker keeps each turn's events, with their ids, for replay while the turn runs and for
``BROKER_TTL_SECONDS`` after its terminal event; delivers stop requests to the process that
runs the generation; and counts who is watching, so an unwatched turn can be cancelled.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from django.core import checks

__all__ = ["TERMINAL_EVENTS", "BaseBroker", "Subscription", "TurnEvent"]

TERMINAL_EVENTS = frozenset({"done", "error"})


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """One event of a turn as it goes out on the wire: ``id`` strictly increases from 1."""

    id: int
    event: str
    data: Mapping[str, Any]

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL_EVENTS


class Subscription(abc.ABC):
    """A watcher's cursor over one turn's events.

    :meth:`get` waits at most ``timeout`` seconds and returns the events after the cursor
    (all that are available, so a slow reader catches up in one write), or ``[]`` on timeout.
    It never raises on timeout, so the caller can send a heartbeat and call again.
    """

    @abc.abstractmethod
    async def get(self, timeout: float) -> list[TurnEvent]: ...

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop watching (the turn's watcher count goes down)."""

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _Outbox:
    """The events :meth:`BaseBroker.publish_nowait` queued for one turn, and their sender."""

    __slots__ = ("error", "events", "task")

    def __init__(self) -> None:
        self.events: list[TurnEvent] = []
        self.task: asyncio.Task[None] | None = None
        self.error: Exception | None = None


class BaseBroker(abc.ABC):
    """Base of the broker backends (``LLMSTREAM["BROKER"]["BACKEND"]``)."""

    #: Whether events published in one process reach subscribers in another.
    crosses_processes: ClassVar[bool] = False

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        self._outboxes: dict[str, _Outbox] = {}

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> list[checks.CheckMessage]:
        """System check messages for this configuration."""
        return []

    @abc.abstractmethod
    async def publish(self, turn_id: str, event: TurnEvent) -> None:
        """Append ``event`` to the turn's events; after a terminal event, expire them later."""

    async def publish_many(self, turn_id: str, events: Sequence[TurnEvent]) -> None:
        """Append several events in order (a backend may send them in one round trip)."""
        for event in events:
            await self.publish(turn_id, event)

    def publish_nowait(self, turn_id: str, event: TurnEvent) -> None:
        """Queue ``event`` without waiting; :meth:`flush` waits until the turn's queued events
        are published. Events queued for one turn are published in order, those queued while
        a publish is under way together (:meth:`publish_many`).

        Raises the error of an earlier publish of the turn that failed, so the generation
        stops instead of streaming into a broker that lost its events. Call it from the
        event loop that runs the turn."""
        outbox = self._outboxes.get(turn_id)
        if outbox is None:
            outbox = self._outboxes[turn_id] = _Outbox()
        if outbox.error is not None:
            raise outbox.error
        outbox.events.append(event)
        if outbox.task is None:
            outbox.task = asyncio.get_running_loop().create_task(self._send(turn_id, outbox))

    async def flush(self, turn_id: str) -> None:
        """Wait until the events queued by :meth:`publish_nowait` for the turn are published;
        raise the error of one that failed."""
        outbox = self._outboxes.get(turn_id)
        if outbox is None:
            return
        if outbox.task is not None:
            await asyncio.shield(outbox.task)
        if outbox.error is not None:
            self._outboxes.pop(turn_id, None)
            raise outbox.error

    async def _send(self, turn_id: str, outbox: _Outbox) -> None:
        try:
            while outbox.events:
                batch = list(outbox.events)
                outbox.events.clear()
                await self.publish_many(turn_id, batch)
        except Exception as exc:
            outbox.error = exc
            outbox.events.clear()
        finally:
            outbox.task = None
            if outbox.error is None and self._outboxes.get(turn_id) is outbox:
                del self._outboxes[turn_id]

    @abc.abstractmethod
    async def known(self, turn_id: str) -> bool:
        """Whether the broker holds the turn's events (its first event onwards)."""

    @abc.abstractmethod
    async def last_event(self, turn_id: str) -> TurnEvent | None:
        """The newest event the broker holds for the turn, or ``None``."""

    @abc.abstractmethod
    def subscribe(self, turn_id: str, after: int = 0) -> Subscription:
        """Watch the turn from the event after id ``after`` (``0``: from its first event)."""

    @abc.abstractmethod
    async def watchers(self, turn_id: str) -> int:
        """How many subscriptions of the turn are open now (in every process)."""

    @abc.abstractmethod
    async def request_stop(self, turn_id: str) -> bool:
        """Ask whichever process runs the turn to stop it; ``True`` if one took the request."""

    @abc.abstractmethod
    def on_stop(self, turn_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` in this process when a stop is requested for the turn.

        Returns a function that unregisters the callback (the generation calls it at its end).
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called at shutdown and in tests."""

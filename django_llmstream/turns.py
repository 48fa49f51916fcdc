"""The life of a turn outside any one request: launching it, watching it from any worker,
stopping it from anywhere, and ending turns whose process is gone.

Shared by the HTTP views, the AI SDK endpoints, the WebSocket consumer and the admin.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async

from django_llmstream.brokers import BaseBroker, Subscription, TurnEvent, get_broker
from django_llmstream.conf import app_settings
from django_llmstream.generation import Generation, running_generations
from django_llmstream.models import Message
from django_llmstream.providers.http import aclose_clients
from django_llmstream.recovery import end_orphan, is_dead
from django_llmstream.replay import replay_events, stored_last_id, terminal_event_id
from django_llmstream.responses import event_stream

__all__ = [
    "TurnWatch",
    "check_liveness",
    "end_orphan_turn",
    "is_orphan",
    "launch",
    "stop_turn",
    "watch_turn",
    "wsgi_event_stream",
]


async def launch(plan: dict[str, Any]) -> Generation:
    """Create a planned turn's generation in the running loop, publish ``start``, run it."""
    generation = Generation(**plan)
    await generation.begin()
    generation.start()
    return generation


def wsgi_event_stream(
    plan: dict[str, Any], encoder: Callable[[list[TurnEvent]], bytes] | None = None
) -> Iterator[bytes]:
    """``stream/`` under WSGI: the turn runs in an event loop of its own thread, and the
    response iterates its events synchronously (Django would buffer an async iterator under
    WSGI). A client that goes away cancels the turn, as under ASGI."""
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue()
    started: list[Generation] = []

    async def run() -> None:
        generation = await launch(plan)
        started.append(generation)
        subscription = get_broker().subscribe(generation.turn_id, 0)
        try:
            async for chunk in event_stream(subscription=subscription, encoder=encoder):
                chunks.put(chunk)
            await generation.finished.wait()
        finally:
            # This loop ends with the response: close what it opened.
            await aclose_clients()
            await get_broker().aclose()

    def thread_main() -> None:
        try:
            asyncio.run(run())
        except BaseException as exc:  # handed to the response, which raises it
            chunks.put(exc)
        finally:
            chunks.put(None)

    threading.Thread(target=thread_main, name="llmstream-wsgi-turn", daemon=True).start()
    complete = False
    try:
        while True:
            item = chunks.get()
            if item is None:
                complete = True
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if not complete and started and app_settings.ON_DISCONNECT == "cancel":
            started[0].cancel("disconnected")


@dataclass(frozen=True, slots=True)
class TurnWatch:
    """What a watcher of a turn gets (see :func:`watch_turn`): ``events`` to send first, then
    what ``subscription`` delivers (``None``: nothing more), with ``on_idle`` to call after
    each silent interval (see :func:`check_liveness`)."""

    events: list[TurnEvent]
    subscription: Subscription | None
    on_idle: Callable[[int], Awaitable[list[TurnEvent]]]


async def watch_turn(message: Message, after: int) -> TurnWatch | None:
    """Attach to a turn (ASGI) from the event after id ``after``: a running turn (here or on
    another worker) or one the broker still holds is subscribed to, a finished one is replayed
    from the database, an orphaned one is ended first. ``None`` when the caller already has
    the terminal event. Shared by ``events/``, the AI SDK's reconnect and the WebSocket
    consumer."""
    turn_id = str(message.pk)
    broker = get_broker()
    if not message.is_terminal and is_orphan(message, broker):
        message = await end_orphan_turn(message, broker)

    def on_idle(cursor: int) -> Awaitable[list[TurnEvent]]:
        return check_liveness(turn_id, broker, cursor)

    last = await broker.last_event(turn_id)
    if last is None and message.is_terminal:
        if after >= terminal_event_id(message):
            return None
        return TurnWatch(replay_events(message, after), None, on_idle)
    if last is not None and last.terminal and after >= last.id:
        return None
    # Running (here or on another worker), or finished and still in the broker.
    return TurnWatch([], broker.subscribe(turn_id, after), on_idle)


def is_orphan(message: Message, broker: BaseBroker) -> bool:
    """Whether no process runs this unfinished turn any more."""
    if str(message.pk) in running_generations():
        return False
    if not broker.crosses_processes:
        return True  # one process: if it does not run here, it runs nowhere
    return is_dead(message)


async def end_orphan_turn(
    message: Message, broker: BaseBroker, status: str = "interrupted"
) -> Message:
    """End an orphaned turn in the database and, where the broker holds it, with a terminal
    event its watchers receive; the terminal id follows every id already sent."""
    turn_id = str(message.pk)
    last = await broker.last_event(turn_id)
    terminal_id = max(last.id if last is not None else 0, stored_last_id(message)) + 1
    ended = await sync_to_async(end_orphan)(turn_id, terminal_id=terminal_id, status=status)
    await message.arefresh_from_db()
    if ended and last is not None and not last.terminal:
        for event in replay_events(message, terminal_id - 1):
            await broker.publish(turn_id, event)
    return message


async def check_liveness(turn_id: str, broker: BaseBroker, cursor: int) -> list[TurnEvent]:
    """Run while a watcher waits in silence: a turn whose process died is ended, and a turn
    the database knows as finished without the broker's terminal event is finished from the
    database, so no watcher waits forever."""
    message = await Message.objects.filter(pk=turn_id).afirst()
    if message is None:
        return []
    if not message.is_terminal:
        if is_orphan(message, broker):
            await end_orphan_turn(message, broker)
        return []
    last = await broker.last_event(turn_id)
    if last is not None and last.terminal:
        return []
    return replay_events(message, cursor)


async def stop_turn(message: Message) -> None:
    """Stop a turn wherever it runs (idempotent: a finished turn is left as it is). Shared by
    ``stop/`` and the WebSocket consumer."""
    if message.is_terminal:
        return
    broker = get_broker()
    taken = await broker.request_stop(str(message.pk))
    if not taken or is_orphan(message, broker):
        # Nobody runs it (its process is gone): end it here, text kept.
        await end_orphan_turn(message, broker, status="cancelled")

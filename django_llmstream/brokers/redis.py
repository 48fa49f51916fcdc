"""The Redis broker: several worker processes on several hosts (extra ``redis``).

Each turn is a Redis stream whose entry ids are ``0-<event id>``, so ``XREAD`` from
``0-<Last-Event-ID>`` gives exactly the events a resuming client lacks, from any worker. After
the terminal event the stream expires in ``BROKER_TTL_SECONDS``. Watchers are members of a
sorted set scored by when their presence expires (they refresh it while they wait), so every
process can count them. Stop requests are published on one channel that every process running
generations listens to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.core import checks

from django_llmstream.brokers.base import BaseBroker, Subscription, TurnEvent
from django_llmstream.conf import app_settings

try:
    import redis.asyncio as aioredis
except ImportError:  # pragma: no cover - exercised by the system check
    aioredis = None  # type: ignore[assignment]

__all__ = ["RedisBroker"]

logger = logging.getLogger("django_llmstream.brokers.redis")

# A running turn's stream expires after this long even if its terminal event never comes
# (its worker died and nobody swept it): Redis never fills up with dead turns.
RUNNING_TTL_SECONDS = 24 * 3600
# How long a watcher counts as present after its last refresh; watchers refresh at least
# every heartbeat interval while they wait.
WATCHER_TTL_SECONDS = 5.0
_MAX_BLOCK_SECONDS = 2.0
# Connections of a process's two pools (see RedisBroker.client), and how long a command
# waits for a free one before it fails (redis-py's own pools fail at once, at 100).
COMMAND_CONNECTIONS = 50
WATCH_CONNECTIONS = 10_000
POOL_TIMEOUT_SECONDS = 10.0


class _RedisSubscription(Subscription):
    def __init__(self, broker: RedisBroker, turn_id: str, after: int) -> None:
        self._broker = broker
        self._turn_id = turn_id
        self._cursor = after
        self._member = uuid.uuid4().hex
        self._present_until = 0.0
        self._finished = False
        self._closed = False

    async def _refresh_presence(self, client: Any) -> None:
        now = time.time()
        if now + WATCHER_TTL_SECONDS / 2 > self._present_until:
            self._present_until = now + WATCHER_TTL_SECONDS
            key = self._broker.key(self._turn_id, "watchers")
            async with client.pipeline(transaction=False) as pipe:
                pipe.zadd(key, {self._member: self._present_until})
                pipe.expire(key, RUNNING_TTL_SECONDS)
                await pipe.execute()

    async def get(self, timeout: float) -> list[TurnEvent]:
        if self._finished or self._closed:
            return []
        client = self._broker.client()
        reader = self._broker.client(blocking=True)
        deadline = time.monotonic() + timeout
        key = self._broker.key(self._turn_id, "events")
        while True:
            await self._refresh_presence(client)
            remaining = deadline - time.monotonic()
            # Block in slices so that presence is refreshed while a turn is silent.
            block_ms = max(1, int(min(remaining, _MAX_BLOCK_SECONDS) * 1000))
            reply = await reader.xread({key: f"0-{self._cursor}"}, count=1000, block=block_ms)
            events = _decode(reply)
            if events:
                self._cursor = events[-1].id
                self._finished = events[-1].terminal
                return events
            if time.monotonic() >= deadline:
                return []

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            client = self._broker.client()
            await client.zrem(self._broker.key(self._turn_id, "watchers"), self._member)


def _decode(reply: Any) -> list[TurnEvent]:
    events: list[TurnEvent] = []
    for _stream, entries in reply or ():
        for entry_id, fields in entries:
            raw_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            name = fields.get(b"e", fields.get("e"))
            data = fields.get(b"d", fields.get("d"))
            events.append(
                TurnEvent(
                    int(raw_id.split("-", 1)[1]),
                    name.decode() if isinstance(name, bytes) else str(name),
                    json.loads(data),
                )
            )
    return events


class RedisBroker(BaseBroker):
    """``{"BACKEND": "django_llmstream.brokers.redis.RedisBroker", "LOCATION": "redis://…"}``.

    ``OPTIONS``: ``PREFIX`` (key prefix, default ``"llmstream"``) and anything
    ``redis.asyncio.BlockingConnectionPool.from_url`` accepts (e.g. ``socket_timeout``).

    Each process keeps two pools: one for commands (publishing, counting watchers, stops:
    ``COMMAND_CONNECTIONS``) and one for the blocking reads of watchers, a connection per
    watcher while it waits (up to ``WATCH_CONNECTIONS``). Both wait up to
    ``POOL_TIMEOUT_SECONDS`` for a free connection: with one pool, a hundred watchers took
    every connection redis-py allows by default and publishing failed ("Too many
    connections"), measured at 100 streams on one worker.
    """

    crosses_processes = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.location: str = config.get("LOCATION") or "redis://127.0.0.1:6379/0"
        options = dict(config.get("OPTIONS") or {})
        self.prefix: str = options.pop("PREFIX", "llmstream")
        self._client_options = options
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._listeners: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Task[None]
        ] = weakref.WeakKeyDictionary()
        self._stop_callbacks: dict[str, list[Callable[[], None]]] = {}

    @classmethod
    def check(cls, config: Mapping[str, Any]) -> list[checks.CheckMessage]:
        if aioredis is None:
            return [
                checks.Error(
                    "The Redis broker needs the redis package.",
                    hint="pip install 'django-llmstream[redis]'",
                    id="llmstream.E018",
                )
            ]
        location = config.get("LOCATION")
        if not isinstance(location, str) or not location.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            return [
                checks.Error(
                    'LLMSTREAM["BROKER"]["LOCATION"] must be a redis:// (or rediss://, unix://) '
                    "URL.",
                    hint='For example "redis://127.0.0.1:6379/0".',
                    id="llmstream.E018",
                )
            ]
        return []

    def key(self, turn_id: str, kind: str) -> str:
        return f"{self.prefix}:turn:{turn_id}:{kind}"

    @property
    def stop_channel(self) -> str:
        return f"{self.prefix}:stop"

    def client(self, *, blocking: bool = False) -> Any:
        """The Redis client of the running event loop (clients are bound to their loop):
        for commands, or (``blocking``) for watchers' blocking reads."""
        loop = asyncio.get_running_loop()
        clients = self._clients.get(loop)
        if clients is None:
            if aioredis is None:  # pragma: no cover
                raise RuntimeError("pip install 'django-llmstream[redis]'")
            clients = self._clients[loop] = (
                self._new_client(COMMAND_CONNECTIONS),
                self._new_client(WATCH_CONNECTIONS),
            )
        return clients[1] if blocking else clients[0]

    def _new_client(self, max_connections: int) -> Any:
        options = {
            "max_connections": max_connections,
            "timeout": POOL_TIMEOUT_SECONDS,
            **self._client_options,
        }
        pool = aioredis.BlockingConnectionPool.from_url(self.location, **options)
        return aioredis.Redis(connection_pool=pool)

    async def publish(self, turn_id: str, event: TurnEvent) -> None:
        await self.publish_many(turn_id, (event,))

    async def publish_many(self, turn_id: str, events: Sequence[TurnEvent]) -> None:
        """Every event in one round trip (a pipeline)."""
        key = self.key(turn_id, "events")
        async with self.client().pipeline(transaction=False) as pipe:
            for event in events:
                payload = json.dumps(dict(event.data), separators=(",", ":"), ensure_ascii=False)
                pipe.xadd(key, {"e": event.event, "d": payload}, id=f"0-{event.id}")
                if event.terminal or event.id == 1:
                    ttl = (
                        int(app_settings.BROKER_TTL_SECONDS)
                        if event.terminal
                        else RUNNING_TTL_SECONDS
                    )
                    pipe.expire(key, max(ttl, 1))
            await pipe.execute()

    async def known(self, turn_id: str) -> bool:
        return bool(await self.client().exists(self.key(turn_id, "events")))

    async def last_event(self, turn_id: str) -> TurnEvent | None:
        reply = await self.client().xrevrange(self.key(turn_id, "events"), count=1)
        events = _decode([(b"", reply)]) if reply else []
        return events[-1] if events else None

    def subscribe(self, turn_id: str, after: int = 0) -> Subscription:
        return _RedisSubscription(self, turn_id, after)

    async def watchers(self, turn_id: str) -> int:
        key = self.key(turn_id, "watchers")
        async with self.client().pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(key, "-inf", time.time())
            pipe.zcard(key)
            _removed, count = await pipe.execute()
        return int(count)

    async def request_stop(self, turn_id: str) -> bool:
        # Local first: no round trip when this process runs the turn.
        if self._run_callbacks(turn_id):
            return True
        receivers = await self.client().publish(self.stop_channel, turn_id)
        return bool(receivers)

    def _run_callbacks(self, turn_id: str) -> bool:
        callbacks = list(self._stop_callbacks.get(turn_id, ()))
        for callback in callbacks:
            callback()
        return bool(callbacks)

    def on_stop(self, turn_id: str, callback: Callable[[], None]) -> Callable[[], None]:
        self._stop_callbacks.setdefault(turn_id, []).append(callback)
        self._ensure_listener()

        def unregister() -> None:
            callbacks = self._stop_callbacks.get(turn_id)
            if callbacks and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
                    del self._stop_callbacks[turn_id]

        return unregister

    def _ensure_listener(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._listeners.get(loop)
        if task is None or task.done():
            self._listeners[loop] = loop.create_task(self._listen(), name="llmstream-redis-stop")

    async def _listen(self) -> None:
        """Receive stop requests for the turns this process runs; reconnect on failure."""
        while True:
            pubsub = self.client().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.stop_channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message and message.get("type") == "message":
                        data = message["data"]
                        self._run_callbacks(data.decode() if isinstance(data, bytes) else data)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("Lost the Redis stop channel; reconnecting", exc_info=True)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        task = self._listeners.pop(loop, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for client in self._clients.pop(loop, ()):
            await client.aclose()
            await client.connection_pool.disconnect()

"""One contract for every broker: run against the memory broker and, where REDIS_URL is set,
against real Redis (two RedisBroker instances stand for two worker processes)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from django.test import override_settings

from django_llmstream.brokers import BaseBroker, TurnEvent
from django_llmstream.brokers.memory import MemoryBroker

REDIS_URL = os.environ.get("REDIS_URL")


def ev(n: int, name: str = "delta") -> TurnEvent:
    return TurnEvent(n, name, {"text": f"piece {n}", "n": n})


def _redis_pair() -> tuple[BaseBroker, BaseBroker]:
    from django_llmstream.brokers.redis import RedisBroker

    prefix = f"llmstream-test-{uuid.uuid4().hex[:8]}"
    config = {"LOCATION": REDIS_URL, "OPTIONS": {"PREFIX": prefix}}
    return RedisBroker(config), RedisBroker(config)


@pytest.fixture(params=["memory", "redis"])
async def brokers(request: pytest.FixtureRequest) -> AsyncIterator[tuple[BaseBroker, BaseBroker]]:
    """(producer side, watcher side): the same broker for memory; two instances for Redis."""
    if request.param == "memory":
        broker = MemoryBroker({})
        yield broker, broker
        return
    if not REDIS_URL:
        pytest.skip("REDIS_URL is not set (.ci/run sets it when Redis answers)")
    a, b = _redis_pair()
    yield a, b
    await a.aclose()
    await b.aclose()


async def collect_until_terminal(sub: Any, timeout: float = 5) -> list[TurnEvent]:
    got: list[TurnEvent] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while not got or not got[-1].terminal:
        assert asyncio.get_running_loop().time() < deadline, got
        got += await sub.get(0.5)
    return got


async def test_events_reach_every_watcher_once_in_order(brokers: Any) -> None:
    producer, watcher = brokers
    turn = uuid.uuid4().hex
    await producer.publish(turn, ev(1, "start"))
    a, b = watcher.subscribe(turn), watcher.subscribe(turn, after=1)

    async def produce() -> None:
        for n in range(2, 30):
            await producer.publish(turn, ev(n))
            if n % 5 == 0:
                await asyncio.sleep(0.01)
        await producer.publish(turn, ev(30, "done"))

    task = asyncio.create_task(produce())
    got_a, got_b = await asyncio.gather(collect_until_terminal(a), collect_until_terminal(b))
    await task
    assert [e.id for e in got_a] == list(range(1, 31))
    assert [e.id for e in got_b] == list(range(2, 31))
    assert got_a[5] == ev(6)  # data survives the trip unchanged
    assert await a.get(0.05) == []  # finished: nothing more, at once
    await a.aclose()
    await b.aclose()


async def test_resume_after_any_id_is_exact(brokers: Any) -> None:
    producer, watcher = brokers
    turn = uuid.uuid4().hex
    for n in range(1, 10):
        await producer.publish(turn, ev(n))
    await producer.publish(turn, ev(10, "done"))
    for after in range(0, 10):
        sub = watcher.subscribe(turn, after=after)
        got = await collect_until_terminal(sub)
        assert [e.id for e in got] == list(range(after + 1, 11))
        await sub.aclose()


async def test_known_and_last_event(brokers: Any) -> None:
    producer, watcher = brokers
    turn = uuid.uuid4().hex
    assert not await watcher.known(turn)
    assert await watcher.last_event(turn) is None
    await producer.publish(turn, ev(1, "start"))
    await producer.publish(turn, ev(2))
    assert await watcher.known(turn)
    assert await watcher.last_event(turn) == ev(2)


async def test_finished_turn_expires_after_ttl(brokers: Any) -> None:
    producer, watcher = brokers
    turn = uuid.uuid4().hex
    with override_settings(LLMSTREAM={"BROKER_TTL_SECONDS": 1}):
        await producer.publish(turn, ev(1, "start"))
        await producer.publish(turn, ev(2, "done"))
        assert await watcher.known(turn)
        await asyncio.sleep(1.2)
        assert not await watcher.known(turn)
        assert await watcher.last_event(turn) is None


async def test_watchers_are_counted_everywhere(brokers: Any) -> None:
    producer, watcher = brokers
    turn = uuid.uuid4().hex
    await producer.publish(turn, ev(1, "start"))
    a = watcher.subscribe(turn)
    b = watcher.subscribe(turn)
    await a.get(0.05)
    await b.get(0.05)
    assert await producer.watchers(turn) == 2
    await a.aclose()
    assert await producer.watchers(turn) == 1
    await b.aclose()
    assert await producer.watchers(turn) == 0


async def test_stop_reaches_the_process_that_runs_the_turn(brokers: Any) -> None:
    runner, other = brokers
    turn = uuid.uuid4().hex
    stopped = asyncio.Event()
    unregister: Callable[[], None] = runner.on_stop(turn, stopped.set)
    await asyncio.sleep(0.2)  # the runner's listener subscribes
    assert await other.request_stop(turn)
    await asyncio.wait_for(stopped.wait(), 2)
    unregister()


async def test_stop_for_a_turn_nobody_runs(brokers: Any) -> None:
    _runner, other = brokers
    if isinstance(other, MemoryBroker):
        assert await other.request_stop(uuid.uuid4().hex) is False


async def test_publish_nowait_keeps_order_and_flush_waits_for_it(brokers: Any) -> None:
    producer, watcher = brokers
    turn = uuid.uuid4().hex
    producer.publish_nowait(turn, ev(1, "start"))
    await producer.flush(turn)
    async with watcher.subscribe(turn) as sub:
        for n in range(2, 40):
            producer.publish_nowait(turn, ev(n))
            if n % 7 == 0:
                await asyncio.sleep(0)  # some queued while a publish is under way
        await producer.flush(turn)
        assert (await producer.last_event(turn)).id == 39
        await producer.publish(turn, ev(40, "done"))
        got = await collect_until_terminal(sub)
    assert [e.id for e in got] == list(range(1, 41))
    assert got[5].data == {"text": "piece 6", "n": 6}


class _SlowBroker(MemoryBroker):
    """A broker whose publishing waits (like a network round trip), and may fail."""

    def __init__(self) -> None:
        super().__init__({})
        self.batches: list[list[int]] = []
        self.fail_at: int | None = None

    def publish_nowait(self, turn_id: str, event: TurnEvent) -> None:
        BaseBroker.publish_nowait(self, turn_id, event)

    async def flush(self, turn_id: str) -> None:
        await BaseBroker.flush(self, turn_id)

    async def publish_many(self, turn_id: str, events: Any) -> None:
        await asyncio.sleep(0.01)
        self.batches.append([e.id for e in events])
        if self.fail_at is not None and any(e.id >= self.fail_at for e in events):
            raise ConnectionError("broker gone")
        for event in events:
            MemoryBroker.publish_nowait(self, turn_id, event)


async def test_events_queued_during_a_round_trip_go_out_together() -> None:
    broker = _SlowBroker()
    for n in range(1, 6):
        broker.publish_nowait("t", ev(n))
    await asyncio.sleep(0)  # the sender takes what is queued: 1..5
    for n in range(6, 10):
        broker.publish_nowait("t", ev(n))
    await broker.flush("t")
    assert broker.batches == [[1, 2, 3, 4, 5], [6, 7, 8, 9]]
    assert [e.id for e in broker._logs["t"].events] == list(range(1, 10))
    assert broker._outboxes == {}


async def test_a_failed_publish_is_raised_to_the_publisher() -> None:
    broker = _SlowBroker()
    broker.fail_at = 3
    for n in range(1, 5):
        broker.publish_nowait("t", ev(n))
    with pytest.raises(ConnectionError):
        await broker.flush("t")
    broker.publish_nowait("u", ev(1))  # other turns are not affected
    await broker.flush("u")
    broker.fail_at = 3
    broker.publish_nowait("v", ev(3))
    await asyncio.sleep(0.05)
    with pytest.raises(ConnectionError):
        broker.publish_nowait("v", ev(4))  # the next event of that turn hears of it


async def test_many_waiting_watchers_leave_room_to_publish() -> None:
    # One blocking read per waiting watcher: 150 of them took every connection of a single
    # redis-py pool (100 by default), and publishing then failed with "Too many connections".
    if not REDIS_URL:
        pytest.skip("REDIS_URL is not set (.ci/run sets it when Redis answers)")
    producer, watcher = _redis_pair()
    turns = [uuid.uuid4().hex for _ in range(150)]
    try:
        for turn in turns:
            await producer.publish(turn, ev(1, "start"))
        subs = [watcher.subscribe(turn, after=1) for turn in turns]
        waits = [asyncio.ensure_future(sub.get(5.0)) for sub in subs]
        await asyncio.sleep(0.3)  # every watcher is blocked in its read
        for turn in turns:
            producer.publish_nowait(turn, ev(2, "done"))
        for turn in turns:
            await producer.flush(turn)
        got = await asyncio.gather(*waits)
        assert all([e.id for e in events] == [2] for events in got)
        for sub in subs:
            await sub.aclose()
    finally:
        await producer.aclose()
        await watcher.aclose()

"""The memory broker's contract (the Redis broker will run the same suite)."""

from __future__ import annotations

import asyncio

from django.test import override_settings

from django_llmstream.brokers import TurnEvent
from django_llmstream.brokers.memory import MemoryBroker


def ev(n: int, name: str = "delta") -> TurnEvent:
    return TurnEvent(n, name, {"text": str(n)})


async def test_subscribers_get_every_event_once_in_order() -> None:
    broker = MemoryBroker({})
    await broker.publish("t", ev(1, "start"))
    a, b = broker.subscribe("t"), broker.subscribe("t", after=1)
    assert await broker.watchers("t") == 2
    assert [e.id for e in await a.get(0.1)] == [1]
    assert await b.get(0.01) == []  # timeout: nothing new

    async def producer() -> None:
        for n in range(2, 6):
            await broker.publish("t", ev(n))
            await asyncio.sleep(0)
        await broker.publish("t", ev(6, "done"))

    task = asyncio.create_task(producer())
    got_a: list[int] = []
    got_b: list[int] = []
    while not got_a or got_a[-1] != 6:
        got_a += [e.id for e in await a.get(1)]
    while not got_b or got_b[-1] != 6:
        got_b += [e.id for e in await b.get(1)]
    await task
    assert got_a == got_b == [2, 3, 4, 5, 6]
    assert await a.get(0.01) == []  # finished: returns at once
    await a.aclose()
    await b.aclose()
    assert await broker.watchers("t") == 0
    assert (await broker.last_event("t")) == ev(6, "done")


async def test_resume_after_an_id() -> None:
    broker = MemoryBroker({})
    for n in range(1, 5):
        await broker.publish("t", ev(n))
    sub = broker.subscribe("t", after=2)
    assert [e.id for e in await sub.get(0.1)] == [3, 4]


async def test_expires_after_ttl() -> None:
    broker = MemoryBroker({})
    with override_settings(LLMSTREAM={"BROKER_TTL_SECONDS": 0}):
        await broker.publish("t", ev(1, "done"))
        assert not await broker.known("t")
        assert await broker.last_event("t") is None


async def test_stop_reaches_registered_callback() -> None:
    broker = MemoryBroker({})
    calls: list[str] = []
    unregister = broker.on_stop("t", lambda: calls.append("stop"))
    assert await broker.request_stop("t") is True
    assert calls == ["stop"]
    unregister()
    assert await broker.request_stop("t") is False

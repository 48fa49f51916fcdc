"""A turn's events: pieces of one kind that arrive together go out as one event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from django_llmstream.brokers.memory import MemoryBroker
from django_llmstream.events import Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta
from django_llmstream.generation import Generation
from django_llmstream.providers.base import BaseProvider, ChatRequest
from django_llmstream.replay import StreamLog

TOGETHER = object()  # marks where the provider waits for its next read


class ReadsProvider(BaseProvider):
    """Yields its steps as if read from the network: everything between two TOGETHER
    markers in one read (no suspension), then a wait for the next read."""

    def __init__(self, steps: list[Any]) -> None:
        super().__init__("reads", {})
        self.steps = steps

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        for step in self.steps:
            if step is TOGETHER:
                await asyncio.sleep(0)
            else:
                yield step


class RecordingWriter:
    def __init__(self) -> None:
        self.snapshots: list[dict[str, Any]] = []
        self.final: dict[str, Any] = {}

    def mark_dirty(self, turn: Generation) -> None:
        self.snapshots.append(turn.snapshot())

    async def finalize(self, turn_id: str, fields: dict[str, Any]) -> None:
        self.final = dict(fields)


async def run_turn(steps: list[Any]) -> tuple[list[tuple[int, str, dict[str, Any]]], Any]:
    broker = MemoryBroker({})
    writer = RecordingWriter()
    generation = Generation(
        turn_id="t",
        conversation_id="c",
        provider=ReadsProvider(steps),
        request=ChatRequest(messages=(), model="m"),
        broker=broker,
        writer=writer,  # type: ignore[arg-type]
    )
    await generation.begin()
    await generation.start()
    events = [(e.id, e.event, dict(e.data)) for e in broker._logs["t"].events]
    return events, writer


async def test_pieces_of_one_read_become_one_event_per_kind_in_order() -> None:
    call = ToolCallDelta(0, '{"a"', id="call_1", name="f")
    events, writer = await run_turn(
        [
            TextDelta("Hel"),
            TextDelta("lo"),
            ReasoningDelta("hmm"),  # another kind: the text so far goes first
            ReasoningDelta("!"),
            TOGETHER,
            TextDelta(" you"),
            call,
            ToolCallDelta(0, ": 1"),
            TOGETHER,
            ToolCallDelta(0, "}"),
            Finish("tool_calls", "tool_calls"),
        ]
    )
    assert [(i, name, data) for i, name, data in events[1:-1]] == [
        (2, "delta", {"text": "Hello"}),
        (3, "reasoning", {"text": "hmm!"}),
        (4, "delta", {"text": " you"}),
        (5, "tool_call", {"index": 0, "id": "call_1", "name": "f", "arguments": '{"a": 1'}),
        (6, "tool_call", {"index": 0, "id": None, "name": None, "arguments": "}"}),
    ]
    assert events[-1][:2] == (7, "done")
    final = writer.final
    assert final["content"] == "Hello you" and final["reasoning"] == "hmm!"
    assert final["tool_calls"][0]["arguments"] == '{"a": 1}'
    # Every snapshot's text is covered by its stream log (a replay of it is exact).
    for snapshot in writer.snapshots:
        covered = StreamLog(snapshot["stream_log"]).runs
        text = sum(sum(r[2]) for r in covered if r[0] == "d")
        assert text == len(snapshot["content"])


async def test_one_piece_per_read_is_one_event_per_piece() -> None:
    pieces = ["a", "b", "c", "d"]
    steps: list[Any] = []
    for piece in pieces:
        steps += [TextDelta(piece), TOGETHER]
    events, _ = await run_turn([*steps, Finish("stop", "stop")])
    assert [data for _, name, data in events if name == "delta"] == [{"text": p} for p in pieces]

"""Exact resume from the database, once the broker has forgotten a turn.

While a turn streams, :class:`StreamLog` records how its events split the text: runs of
consecutive events of one kind, each run with the length of every piece. Stored with the text
(``Message.stream_log``, written in the same snapshot), it tells for any event id how much of
the text, reasoning and each tool call's arguments a client already has. A replay sends the
rest of each run as one event carrying the run's last id — so ids still strictly increase and a
client that drops mid-replay resumes exactly again.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django_llmstream.brokers.base import TurnEvent
from django_llmstream.exceptions import is_retryable

if TYPE_CHECKING:
    from django_llmstream.models import Message

__all__ = [
    "StreamLog",
    "done_data",
    "error_data",
    "replay_events",
    "stored_last_id",
    "terminal_event_id",
]

# Run kinds: "s" start, "d" text delta, "r" reasoning, "t<index>" tool call, "x" terminal.
# The terminal entry of a failed turn is ["x", id, {"retryable": bool}]: the flag of the
# exception that ended it, which may differ from its type's default (e.g. a 408).


class StreamLog:
    """Runs of ``[kind, first_id, [length, …]]`` (``[kind, id]`` for start and terminal)."""

    __slots__ = ("runs",)

    def __init__(self, runs: list[list[Any]] | None = None) -> None:
        self.runs: list[list[Any]] = runs if runs is not None else []

    def add(self, event_id: int, kind: str, length: int | None = None) -> None:
        if length is None:
            self.runs.append([kind, event_id])
            return
        self._add_piece(event_id, kind, length)

    def add_terminal(self, event_id: int, retryable: bool | None = None) -> None:
        self.runs.append(
            ["x", event_id] if retryable is None else ["x", event_id, {"retryable": retryable}]
        )

    def _add_piece(self, event_id: int, kind: str, length: int) -> None:
        last = self.runs[-1] if self.runs else None
        if last is not None and last[0] == kind and last[0] != "x" and len(last) == 3:
            lengths: list[int] = last[2]
            if last[1] + len(lengths) == event_id:
                lengths.append(length)
                return
        self.runs.append([kind, event_id, [length]])

    def copy(self) -> list[list[Any]]:
        return [
            [r[0], r[1], list(r[2])] if len(r) == 3 and r[0] != "x" else list(r) for r in self.runs
        ]

    @property
    def last_id(self) -> int:
        if not self.runs:
            return 0
        run = self.runs[-1]
        return int(run[1]) + (len(run[2]) - 1 if len(run) == 3 and run[0] != "x" else 0)


def done_data(
    *,
    finish_reason: str,
    usage: Mapping[str, int | None],
    cost: Decimal | None,
    ttft_ms: int | None,
    duration_ms: int | None,
) -> dict[str, Any]:
    """The ``done`` event's data; the live stream and a replay both build it here."""
    return {
        "finish_reason": finish_reason or "stop",
        "usage": dict(usage),
        "cost": None if cost is None else str(cost),
        "ttft_ms": ttft_ms,
        "duration_ms": duration_ms,
    }


def error_data(error_type: str, message: str, retryable: bool | None = None) -> dict[str, Any]:
    """The ``error`` event's data; ``retryable`` defaults to what the type usually means."""
    if retryable is None:
        retryable = is_retryable(error_type)
    return {"type": error_type, "message": message, "retryable": retryable}


def start_data(message: Message) -> dict[str, Any]:
    return {
        "conversation": str(message.conversation_id),
        "turn": str(message.pk),
        "provider": message.provider,
        "model": message.model,
    }


def _terminal_event(message: Message, event_id: int, log: StreamLog) -> TurnEvent:
    if message.status == "failed" or message.status == "interrupted":
        error_type = message.error_type or message.status
        retryable = None
        last = log.runs[-1] if log.runs else None
        if last is not None and last[0] == "x" and len(last) == 3:
            retryable = last[2].get("retryable")
        return TurnEvent(
            event_id, "error", error_data(error_type, message.error_message, retryable)
        )
    return TurnEvent(
        event_id,
        "done",
        done_data(
            finish_reason=message.finish_reason,
            usage=message.usage_dict(),
            cost=message.cost,
            ttft_ms=message.ttft_ms,
            duration_ms=message.duration_ms,
        ),
    )


def _synthetic_log(message: Message) -> StreamLog:
    """A log for a row that has none (written by other code): one event per field."""
    log = StreamLog()
    log.add(1, "s")
    next_id = 2
    if message.reasoning:
        log.add(next_id, "r", len(message.reasoning))
        next_id += 1
    if message.content:
        log.add(next_id, "d", len(message.content))
        next_id += 1
    for index, call in enumerate(message.tool_calls or []):
        log.add(next_id, f"t{index}", len(str(call.get("arguments", ""))))
        next_id += 1
    return log


def _stored_log(message: Message) -> StreamLog:
    runs = message.stream_log
    return StreamLog([list(r) for r in runs]) if runs else _synthetic_log(message)


def stored_last_id(message: Message) -> int:
    """The id of the last event the stored log accounts for."""
    return _stored_log(message).last_id


def terminal_event_id(message: Message) -> int:
    """The id the terminal event of a finished turn has (or gets, if it was never sent)."""
    log = _stored_log(message)
    if log.runs and log.runs[-1][0] == "x":
        return log.last_id
    return log.last_id + 1


def replay_events(message: Message, after: int) -> list[TurnEvent]:
    """The events of a finished turn after id ``after``, regrouped per run, ending with its
    terminal event."""
    log = _stored_log(message)
    fields: dict[str, str] = {"d": message.content, "r": message.reasoning}
    calls = list(message.tool_calls or [])
    for index, call in enumerate(calls):
        fields[f"t{index}"] = str(call.get("arguments", ""))
    positions: dict[str, int] = {}
    first_seen: set[str] = set()
    events: list[TurnEvent] = []
    for run in log.runs:
        kind, first_id = run[0], int(run[1])
        if kind == "s":
            if after < first_id:
                events.append(TurnEvent(first_id, "start", start_data(message)))
            continue
        if kind == "x":
            continue
        lengths: list[int] = run[2]
        last_id = first_id + len(lengths) - 1
        start = positions.get(kind, 0)
        end = start + sum(lengths)
        positions[kind] = end
        is_first_run = kind not in first_seen
        first_seen.add(kind)
        if after >= last_id:
            continue
        skip = sum(lengths[: after - first_id + 1]) if after >= first_id else 0
        piece = fields.get(kind, "")[start + skip : end]
        if kind == "d":
            events.append(TurnEvent(last_id, "delta", {"text": piece}))
        elif kind == "r":
            events.append(TurnEvent(last_id, "reasoning", {"text": piece}))
        else:
            index = int(kind[1:])
            call = calls[index] if index < len(calls) else {}
            sends_head = is_first_run and after < first_id
            events.append(
                TurnEvent(
                    last_id,
                    "tool_call",
                    {
                        "index": index,
                        "id": call.get("id") if sends_head else None,
                        "name": call.get("name") if sends_head else None,
                        "arguments": piece,
                    },
                )
            )
    terminal_id = terminal_event_id(message)
    if after < terminal_id:
        events.append(_terminal_event(message, terminal_id, log))
    return events

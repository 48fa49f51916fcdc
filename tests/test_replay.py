"""Exact resume from the database: the stream log maps any event id to text offsets."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django_llmstream.models import Message
from django_llmstream.replay import StreamLog, replay_events, terminal_event_id
from django_llmstream.text import StreamTextCleaner, clean_text


def _message(events: list[tuple[str, str]], **fields: Any) -> Message:
    """A finished turn as the generation would have stored it after ``events``."""
    log = StreamLog()
    log.add(1, "s")
    text, reasoning = "", ""
    calls: dict[int, dict[str, Any]] = {}
    seq = 1
    for kind, piece in events:
        seq += 1
        if kind == "d":
            text += piece
        elif kind == "r":
            reasoning += piece
        else:
            index = int(kind[1:])
            call = calls.setdefault(
                index, {"index": index, "id": f"call_{index}", "name": "f", "arguments": ""}
            )
            call["arguments"] += piece
        log.add(seq, kind, len(piece))
    log.add(seq + 1, "x")
    defaults: dict[str, Any] = {
        "status": "completed",
        "finish_reason": "stop",
        "input_tokens": 3,
        "output_tokens": 4,
        "cost": Decimal("0.00000100"),
    }
    defaults.update(fields)
    return Message(
        content=text,
        reasoning=reasoning,
        tool_calls=[calls[i] for i in sorted(calls)],
        stream_log=log.runs,
        role="assistant",
        provider="p",
        model="m",
        **defaults,
    )


EVENTS = [
    ("r", "think "),
    ("r", "hard"),
    ("d", "Hel"),
    ("d", "lo"),
    ("t0", '{"a"'),
    ("t0", ":1}"),
    ("d", "!"),
]


def _received(events: list[tuple[str, str]], after: int) -> dict[str, str]:
    got: dict[str, str] = {}
    for seq, (kind, piece) in enumerate(events, start=2):
        if seq <= after:
            got[kind] = got.get(kind, "") + piece
    return got


def test_log_runs_are_compact() -> None:
    message = _message(EVENTS)
    assert message.stream_log == [
        ["s", 1],
        ["r", 2, [6, 4]],
        ["d", 4, [3, 2]],
        ["t0", 6, [4, 3]],
        ["d", 8, [1]],
        ["x", 9],
    ]
    assert terminal_event_id(message) == 9


def test_replay_from_every_id_gives_exactly_the_rest() -> None:
    message = _message(EVENTS)
    for after in range(0, 9):
        replay = replay_events(message, after)
        ids = [e.id for e in replay]
        assert ids == sorted(set(ids)) and all(i > after for i in ids)
        assert replay[-1].event == "done" and replay[-1].id == 9
        got = _received(EVENTS, after)
        for event in replay:
            if event.event == "delta":
                got["d"] = got.get("d", "") + event.data["text"]
            elif event.event == "reasoning":
                got["r"] = got.get("r", "") + event.data["text"]
            elif event.event == "tool_call":
                got["t0"] = got.get("t0", "") + event.data["arguments"]
        assert got == {"r": "think hard", "d": "Hello!", "t0": '{"a":1}'}, after
        starts = [e for e in replay if e.event == "start"]
        assert bool(starts) == (after == 0)
        heads = [e for e in replay if e.event == "tool_call" and e.data["id"]]
        assert bool(heads) == (after < 6)


def test_resume_from_a_replayed_id_is_exact_again() -> None:
    message = _message(EVENTS)
    first = replay_events(message, 3)
    # The client got the first regrouped event only, then dropped.
    again = replay_events(message, first[0].id)
    text = first[0].data["text"] + "".join(e.data["text"] for e in again if e.event == "delta")
    assert text == "Hello!"


def test_terminal_of_failed_turn() -> None:
    message = _message(
        [("d", "part")], status="failed", error_type="upstream_timeout", error_message="slow"
    )
    (event,) = replay_events(message, 2)
    assert event.event == "error"
    assert dict(event.data) == {"type": "upstream_timeout", "message": "slow", "retryable": True}
    assert replay_events(message, 3) == []


def test_row_without_log_gets_a_synthetic_one() -> None:
    message = Message(
        role="assistant", content="abc", status="cancelled", finish_reason="cancelled"
    )
    events = replay_events(message, 0)
    assert [e.event for e in events] == ["start", "delta", "done"]
    assert events[-1].data["finish_reason"] == "cancelled"
    assert terminal_event_id(message) == 3


def test_clean_text() -> None:
    assert clean_text("a\x00b") == "ab"
    assert clean_text("\ud800x") == "\ufffdx"
    assert clean_text("\ud83d\ude00") == "\U0001f600"
    assert clean_text("plain") == "plain"


def test_stream_cleaner_joins_split_surrogate_pairs() -> None:
    cleaner = StreamTextCleaner()
    assert cleaner.feed("a\ud83d") == "a"
    assert cleaner.feed("\ude00b") == "\U0001f600b"
    assert cleaner.feed("c\ud800") == "c"
    assert cleaner.flush() == "\ufffd"


def test_failed_turn_keeps_the_retryable_flag_of_its_error() -> None:
    log = StreamLog()
    log.add(1, "s")
    log.add_terminal(2, retryable=True)
    message = Message(
        role="assistant",
        status="failed",
        error_type="upstream_bad_request",  # usually not retryable; a 408 is
        error_message="Request timeout",
        stream_log=log.runs,
    )
    (event,) = replay_events(message, 1)
    assert event.data["retryable"] is True
    assert terminal_event_id(message) == 2

"""End to end: real uvicorn, real sockets, a real fake upstream speaking OpenAI's format."""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from typing import Any

import pytest

from django_llmstream.brokers import get_broker
from django_llmstream.models import Conversation, Message
from django_llmstream.sse import SSEParser
from tests.e2e.conftest import SECRET, wait_for
from tests.live import Client, text_reaches
from tests.upstream import openai_chunks

pytestmark = pytest.mark.e2e

PIECES = ["Hel", "lo", ", ", "wor", "ld", "! ", "How ", "are ", "you?"]
USAGE = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}


def _assert_ids_increase(events: list[Any]) -> None:
    ids = [int(e.id) for e in events]
    assert ids == sorted(set(ids)), ids


def test_full_turn_streams_and_persists(client_e2e: Client, configure: Any, upstream: Any) -> None:
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), delay=0.01)
    result = client_e2e.read_sse("POST", "/llmstream/stream/", json={"prompt": "Say hello"})

    assert result.status == 200
    assert result.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert result.headers["cache-control"] == "no-cache"
    assert result.headers["x-accel-buffering"] == "no"
    assert "connection" not in result.headers
    assert result.raw.startswith(b"retry: ")
    names = [e.event for e in result.events]
    assert names[0] == "start" and names[-1] == "done"
    # One delta per piece, unless the relay fell behind and read several at once.
    assert 1 <= names.count("delta") <= len(PIECES)
    _assert_ids_increase(result.events)
    assert result.text == "".join(PIECES)

    start = result.events[0].json()
    turn = Message.objects.get(pk=start["turn"])
    done = result.terminal.json()
    # When done arrives, the database already holds everything it reports.
    assert turn.status == "completed"
    assert turn.content == "".join(PIECES)
    assert turn.finish_reason == done["finish_reason"] == "stop"
    assert (
        done["usage"]
        == turn.usage_dict()
        == {
            "input_tokens": 12,
            "output_tokens": 9,
            "cached_input_tokens": None,
            "reasoning_tokens": None,
        }
    )
    assert done["cost"] == str(turn.cost) == "0.00003000"
    assert done["ttft_ms"] == turn.ttft_ms and done["duration_ms"] == turn.duration_ms
    assert turn.ttft_ms is not None and turn.duration_ms >= turn.ttft_ms
    assert start["provider"] == "openai" and start["model"] == "fake-model"
    conversation = Conversation.objects.get(pk=start["conversation"])
    assert [m.role for m in conversation.messages.order_by("created_at")] == ["user", "assistant"]
    # The upstream got the prompt and was asked for usage.
    sent = upstream.requests[-1].json
    assert sent["messages"][-1] == {"role": "user", "content": "Say hello"}
    assert sent["stream_options"] == {"include_usage": True}


def test_second_turn_sends_history_and_system_prompt(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    upstream.respond(chunks=openai_chunks(["First ", "answer"], usage=USAGE))
    first = client_e2e.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "One", "system": "Be brief."}
    )
    conversation = first.events[0].json()["conversation"]
    upstream.respond(chunks=openai_chunks(["Second"], usage=USAGE))
    second = client_e2e.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "Two", "conversation": conversation}
    )
    assert second.terminal.event == "done"
    assert upstream.requests[-1].json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "One"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "Two"},
    ]
    detail = client_e2e.http.get(f"/llmstream/conversations/{conversation}/").json()
    assert detail["system_prompt"] == "Be brief."
    assert [(m["role"], m["content"]) for m in detail["messages"]] == [
        ("user", "One"),
        ("assistant", "First answer"),
        ("user", "Two"),
        ("assistant", "Second"),
    ]
    listing = client_e2e.http.get("/llmstream/conversations/").json()
    assert [c["id"] for c in listing["results"]] == [conversation]


def test_pieces_read_together_go_out_as_one_delta(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    # The whole stream in one write: the relay reads every piece at once and sends them as
    # one event; the ids stay consecutive, and a replay from the database says the same.
    upstream.respond(chunks=[b"".join(openai_chunks(PIECES, usage=USAGE))])
    result = client_e2e.read_sse("POST", "/llmstream/stream/", json={"prompt": "hi"})
    assert [(e.event, e.id) for e in result.events] == [
        ("start", "1"),
        ("delta", "2"),
        ("done", "3"),
    ]
    assert result.events[1].json() == {"text": "".join(PIECES)}
    turn_id = result.events[0].json()["turn"]
    assert Message.objects.get(pk=turn_id).content == "".join(PIECES)
    get_broker().forget(turn_id)  # type: ignore[attr-defined]
    replay = client_e2e.read_sse("GET", f"/llmstream/turns/{turn_id}/events/")
    assert [(e.event, e.id, e.data) for e in replay.events] == [
        (e.event, e.id, e.data) for e in result.events
    ]


def test_events_arrive_one_by_one_behind_gzip_middleware(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    # The upstream sends three pieces and then stalls: had the response been buffered by
    # compression, no delta could reach the client before the idle timeout.
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), stall_after=4)
    result = client_e2e.read_sse(
        "POST",
        "/llmstream/stream/",
        json={"prompt": "hi"},
        headers={"Accept-Encoding": "gzip"},
        stop_when=text_reaches("".join(PIECES[:3])),
    )
    assert result.headers["content-encoding"] == "gzip"
    assert result.events[0].event == "start"
    assert {e.event for e in result.events[1:]} == {"delta"}
    assert result.text == "".join(PIECES[:3])
    turn_id = result.events[0].json()["turn"]
    wait_for(lambda: Message.objects.get(pk=turn_id).is_terminal)


def test_gzip_body_is_one_valid_gzip_stream(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE))
    raw = b""
    with client_e2e.http.stream(
        "POST", "/llmstream/stream/", json={"prompt": "hi"}, headers={"Accept-Encoding": "gzip"}
    ) as response:
        for chunk in response.iter_raw():
            raw += chunk
    text = gzip.decompress(raw).decode()
    # One member: a plain single-member decoder (like httpx's) sees everything.
    single = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert single.decompress(raw).decode() == text
    events = SSEParser().feed(text.encode())
    assert "".join(e.json()["text"] for e in events if e.event == "delta") == "".join(PIECES)
    assert events[-1].event == "done"


def test_resume_with_last_event_id_while_running_and_after(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), delay=0.05)
    created = client_e2e.post_json("/llmstream/turns/", {"prompt": "count"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"conversation", "turn", "events_url", "stop_url"}

    first = client_e2e.read_sse("GET", body["events_url"], stop_after=3)
    last_id = first.events[-1].id
    rest = client_e2e.read_sse("GET", body["events_url"], headers={"Last-Event-ID": last_id})
    assert rest.raw.startswith(b"retry: ")
    assert int(rest.events[0].id) == int(last_id) + 1
    _assert_ids_increase(first.events + rest.events)
    assert first.text + rest.text == "".join(PIECES)
    assert rest.terminal.event == "done"
    terminal_id = rest.terminal.id

    # After the end: from the broker while it remembers, then from the database.
    again = client_e2e.read_sse("GET", f"{body['events_url']}?last_event_id=2")
    assert again.text == "".join(PIECES)[len(PIECES[0]) :]
    assert again.terminal.json() == rest.terminal.json()
    get_broker().forget(body["turn"])  # type: ignore[attr-defined]
    for after in range(int(terminal_id)):
        replay = client_e2e.read_sse(
            "GET", body["events_url"], headers={"Last-Event-ID": str(after)}
        )
        delivered = [e for e in first.events + rest.events if int(e.id) <= after]
        had = "".join(e.json()["text"] for e in delivered if e.event == "delta")
        assert had + replay.text == "".join(PIECES), after
        assert replay.terminal.json() == rest.terminal.json()
        assert replay.terminal.id == terminal_id
        _assert_ids_increase(replay.events)
        assert all(int(e.id) > after for e in replay.events)
    # A client that has the terminal event is told to stop reconnecting.
    gone = client_e2e.http.get(body["events_url"], headers={"Last-Event-ID": terminal_id})
    assert gone.status_code == 204


def test_disconnect_on_stream_cancels_upstream_and_keeps_partial_text(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), stall_after=3)
    result = client_e2e.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "hi"}, stop_when=lambda e: e.event == "delta"
    )
    turn_id = result.events[0].json()["turn"]
    assert upstream.wait_for_disconnect(2.0), "the upstream request was not closed"
    turn = wait_for(lambda: Message.objects.filter(pk=turn_id, status="cancelled").first())
    assert turn.finish_reason == "cancelled"
    assert turn.content == "".join(PIECES[:2])


def test_stop_cancels_a_running_turn(client_e2e: Client, configure: Any, upstream: Any) -> None:
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), stall_after=3)
    body = client_e2e.post_json("/llmstream/turns/", {"prompt": "hi"}).json()
    seen = client_e2e.read_sse(
        "GET", body["events_url"], stop_when=text_reaches("".join(PIECES[:2]))
    )
    assert seen.text == "".join(PIECES[:2])
    stopped = client_e2e.http.post(body["stop_url"])
    assert stopped.status_code == 202
    assert upstream.wait_for_disconnect(2.0)
    last_id = seen.events[-1].id
    rest = client_e2e.read_sse("GET", body["events_url"], headers={"Last-Event-ID": last_id})
    assert rest.terminal.event == "done"
    assert rest.terminal.json()["finish_reason"] == "cancelled"
    turn = Message.objects.get(pk=body["turn"])
    assert turn.status == "cancelled" and turn.content == "".join(PIECES[:2])
    # Stopping again, or a finished turn, changes nothing.
    assert client_e2e.http.post(body["stop_url"]).status_code == 202
    assert Message.objects.get(pk=body["turn"]).status == "cancelled"


def test_unwatched_turn_is_cancelled_after_the_grace(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    configure(DISCONNECT_GRACE_SECONDS=0.3)
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), stall_after=3)
    body = client_e2e.post_json("/llmstream/turns/", {"prompt": "hi"}).json()
    turn = wait_for(lambda: Message.objects.filter(pk=body["turn"], status="cancelled").first())
    assert turn.content == "".join(PIECES[:2])
    assert upstream.wait_for_disconnect(2.0)


def test_finish_policy_keeps_running_without_watchers(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    configure(ON_DISCONNECT="finish", DISCONNECT_GRACE_SECONDS=0.1)
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), delay=0.05)
    result = client_e2e.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "hi"}, stop_when=lambda e: e.event == "delta"
    )
    turn_id = result.events[0].json()["turn"]
    turn = wait_for(lambda: Message.objects.filter(pk=turn_id, status="completed").first())
    assert turn.content == "".join(PIECES)


@pytest.mark.parametrize(
    ("respond", "error_type", "retryable"),
    [
        ({"status": 500, "body": b'{"error": {"message": "boom"}}'}, "upstream_server_error", True),
        ({"status": 401, "body": b'{"error": {"message": "bad key"}}'}, "upstream_auth", False),
        (
            {"status": 429, "body": b'{"error": {"message": "slow down"}}'},
            "upstream_rate_limited",
            True,
        ),
        ({"chunks": [b"data: this is not json\n\n"]}, "upstream_protocol", False),
    ],
)
def test_upstream_failure_before_text(
    client_e2e: Client,
    configure: Any,
    upstream: Any,
    respond: dict[str, Any],
    error_type: str,
    retryable: bool,
) -> None:
    upstream.respond(**respond)
    result = client_e2e.read_sse("POST", "/llmstream/stream/", json={"prompt": "hi"})
    assert result.status == 200
    assert [e.event for e in result.events] == ["start", "error"]
    error = result.terminal.json()
    assert error["type"] == error_type and error["retryable"] is retryable
    assert "Traceback" not in error["message"]
    turn = Message.objects.get(pk=result.events[0].json()["turn"])
    assert turn.status == "failed" and turn.error_type == error_type


@pytest.mark.parametrize(
    ("respond", "error_type"),
    [
        ({"stall_after": 3}, "upstream_timeout"),
        ({"close_after": 3}, "upstream_connection"),
    ],
)
def test_upstream_failure_mid_stream_keeps_partial_text(
    client_e2e: Client, configure: Any, upstream: Any, respond: dict[str, Any], error_type: str
) -> None:
    configure(IDLE_TIMEOUT=0.5, HEARTBEAT_SECONDS=0.2)
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), **respond)
    result = client_e2e.read_sse("POST", "/llmstream/stream/", json={"prompt": "hi"})
    assert result.text == "".join(PIECES[:2])
    assert result.terminal.event == "error"
    assert result.terminal.json()["type"] == error_type
    assert result.terminal.json()["retryable"] is True
    turn = Message.objects.get(pk=result.events[0].json()["turn"])
    assert turn.status == "failed"
    assert turn.content == "".join(PIECES[:2])
    if error_type == "upstream_timeout":
        assert b": ping\n\n" in result.raw  # silence is filled with heartbeats


def test_api_key_never_leaves_the_server(
    client_e2e: Client, configure: Any, upstream: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("django_llmstream").propagate = True
    echoed = json.dumps({"error": {"message": f"Incorrect API key provided: {SECRET}"}}).encode()
    upstream.respond(status=401, body=echoed)
    failed = client_e2e.read_sse("POST", "/llmstream/stream/", json={"prompt": "hi"})
    upstream.respond(
        chunks=[b'data: {"error": {"message": "key ' + SECRET.encode() + b' bad"}}\n\n']
    )
    mid = client_e2e.read_sse("POST", "/llmstream/stream/", json={"prompt": "hi"})
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE))
    ok = client_e2e.read_sse("POST", "/llmstream/stream/", json={"prompt": "hi"})
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {SECRET}"

    assert failed.terminal.event == "error" and mid.terminal.event == "error"
    assert "[redacted]" in failed.terminal.json()["message"]
    listing = client_e2e.http.get("/llmstream/conversations/")
    bodies = [failed.raw, mid.raw, ok.raw, listing.content]
    for conversation in listing.json()["results"]:
        bodies.append(
            client_e2e.http.get(f"/llmstream/conversations/{conversation['id']}/").content
        )
    for body in bodies:
        assert SECRET.encode() not in body
    for record in caplog.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in str(record.exc_info)
    rows = list(Message.objects.values()) + list(Conversation.objects.values())
    assert rows
    assert SECRET not in repr(rows)


def test_demo_provider_end_to_end(client_e2e: Client, configure: Any) -> None:
    result = client_e2e.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "Tell me a story", "provider": "demo"}
    )
    assert result.terminal.event == "done"
    assert len(result.by_type("delta")) > 10
    turn = Message.objects.get(pk=result.events[0].json()["turn"])
    assert turn.content == result.text and turn.output_tokens is not None

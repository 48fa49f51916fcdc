"""A second prompt while an answer runs, turns whose process died, and the sweep."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_llmstream.models import Conversation, Message
from django_llmstream.recovery import sweep_interrupted
from django_llmstream.replay import StreamLog
from tests.e2e.conftest import wait_for
from tests.live import Client
from tests.upstream import openai_chunks

pytestmark = pytest.mark.e2e

PIECES = ["One ", "two ", "three ", "four ", "five."]
USAGE = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


def _first_turn(client: Client, upstream: Any) -> dict[str, Any]:
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), stall_after=3)
    body = client.post_json("/llmstream/turns/", {"prompt": "first"}).json()
    client.read_sse("GET", body["events_url"], stop_when=lambda e: e.event == "delta")
    return dict(body)


def test_reject_refuses_a_second_prompt_and_writes_nothing(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    configure(CONCURRENT_TURNS="reject", ON_DISCONNECT="finish")
    first = _first_turn(client_e2e, upstream)
    before = Message.objects.count()
    response = client_e2e.post_json(
        "/llmstream/turns/", {"prompt": "second", "conversation": first["conversation"]}
    )
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "turn_running"
    assert response.json()["error"]["field"] == "conversation"
    assert Message.objects.count() == before
    client_e2e.http.post(first["stop_url"])
    wait_for(lambda: Message.objects.get(pk=first["turn"]).is_terminal)


def test_cancel_previous_stops_it_and_sends_its_partial_answer(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    configure(CONCURRENT_TURNS="cancel_previous", ON_DISCONNECT="finish")
    first = _first_turn(client_e2e, upstream)
    upstream.respond(chunks=openai_chunks(["Second answer"], usage=USAGE))
    second = client_e2e.read_sse(
        "POST",
        "/llmstream/stream/",
        json={"prompt": "second", "conversation": first["conversation"]},
    )
    assert second.terminal.event == "done"
    previous = Message.objects.get(pk=first["turn"])
    assert previous.status == "cancelled"
    assert previous.content == "".join(PIECES[:2])
    assert upstream.requests[-1].json["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "".join(PIECES[:2])},
        {"role": "user", "content": "second"},
    ]


def test_queue_waits_for_the_previous_answer(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    configure(CONCURRENT_TURNS="queue", ON_DISCONNECT="finish")
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), delay=0.1)
    first = client_e2e.post_json("/llmstream/turns/", {"prompt": "first"}).json()
    upstream.respond(chunks=openai_chunks(["Second answer"], usage=USAGE))
    second = client_e2e.read_sse(
        "POST",
        "/llmstream/stream/",
        json={"prompt": "second", "conversation": first["conversation"]},
    )
    assert second.terminal.event == "done" and second.text == "Second answer"
    previous = Message.objects.get(pk=first["turn"])
    assert previous.status == "completed" and previous.content == "".join(PIECES)
    # The second request left only after the first answer was complete, and carried it.
    assert upstream.requests[-1].json["messages"][1] == {
        "role": "assistant",
        "content": "".join(PIECES),
    }
    assert Message.objects.get(pk=second.events[0].json()["turn"]).started_at < previous.finished_at


def _orphan(conversation: Conversation, *, lease: timedelta, text: str = "Half an ans") -> Message:
    """A running turn as a killed worker leaves it: text saved so far, no process."""
    log = StreamLog()
    log.add(1, "s")
    log.add(2, "d", 5)
    log.add(3, "d", len(text) - 5)
    return Message.objects.create(
        conversation=conversation,
        role="assistant",
        status="streaming",
        content=text,
        provider="openai",
        model="fake-model",
        stream_log=log.runs,
        lease_expires_at=timezone.now() + lease,
    )


def _conversation(client: Client) -> Conversation:
    # Anything the client's session owns: start (and finish) one turn with the demo provider.
    result = client.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "hi", "provider": "demo"}
    )
    return Conversation.objects.get(pk=result.events[0].json()["conversation"])


def test_dead_turn_is_interrupted_when_its_events_are_asked_for(
    client_e2e: Client, configure: Any
) -> None:
    conversation = _conversation(client_e2e)
    dead = _orphan(conversation, lease=timedelta(seconds=-1))
    result = client_e2e.read_sse("GET", f"/llmstream/turns/{dead.pk}/events/")
    assert result.text == "Half an ans"
    assert result.terminal.event == "error"
    assert result.terminal.json() == {
        "type": "interrupted",
        "message": "The server stopped before the answer was complete.",
        "retryable": True,
    }
    dead.refresh_from_db()
    assert dead.status == "interrupted" and dead.content == "Half an ans"
    # Reconnecting with the terminal id: nothing more.
    again = client_e2e.http.get(
        f"/llmstream/turns/{dead.pk}/events/", headers={"Last-Event-ID": result.terminal.id}
    )
    assert again.status_code == 204


def test_stop_of_an_orphan_cancels_it(client_e2e: Client, configure: Any) -> None:
    conversation = _conversation(client_e2e)
    orphan = _orphan(conversation, lease=timedelta(seconds=60))
    assert client_e2e.http.post(f"/llmstream/turns/{orphan.pk}/stop/").status_code == 202
    orphan.refresh_from_db()
    assert orphan.status == "cancelled" and orphan.finish_reason == "cancelled"
    replay = client_e2e.read_sse("GET", f"/llmstream/turns/{orphan.pk}/events/")
    assert replay.text == "Half an ans" and replay.terminal.json()["finish_reason"] == "cancelled"


def test_sweep_ends_only_turns_whose_lease_ran_out(client_e2e: Client, configure: Any) -> None:
    conversation = _conversation(client_e2e)
    dead = _orphan(conversation, lease=timedelta(seconds=-5))
    alive = _orphan(conversation, lease=timedelta(seconds=60))
    assert sweep_interrupted() == 1
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.status == "interrupted" and dead.content == "Half an ans"
    assert alive.status == "streaming"
    assert sweep_interrupted() == 0

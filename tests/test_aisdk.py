"""``?format=ai-sdk``: the Vercel AI SDK's UI message stream protocol (django_llmstream.aisdk).

Every stream here is also read by the AI SDK's own client, when node and the ``ai`` package
are installed (``make pytest`` installs them into tests/aisdk/node_modules): the newest 5.x
and 5.0.0, whose part schema is strict. Its DefaultChatTransport validates each part with the
package's ``uiMessageChunkSchema`` and readUIMessageStream builds the message from them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.test import AsyncClient, Client

from django_llmstream.aisdk import UIMessageStreamEncoder, turn_body
from django_llmstream.brokers import TurnEvent
from django_llmstream.events import ReasoningDelta, ToolCallDelta, Usage
from django_llmstream.exceptions import RequestValidationError
from django_llmstream.models import Conversation, Message
from django_llmstream.testing import Fail, Pause, script_provider
from tests.shared import REPO_ROOT

pytestmark = pytest.mark.django_db(transaction=True)

AISDK_DIR = REPO_ROOT / "tests" / "aisdk"
PACKAGES = ["ai", "ai-5.0.0"]
STREAM_URL = "/llmstream/stream/?format=ai-sdk"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the AI SDK's client is not run")
    if not (AISDK_DIR / "node_modules" / "ai").is_dir():
        pytest.skip(
            "the ai npm package is not installed: run `npm ci` in tests/aisdk (make pytest does)"
        )
    return node


def ai_sdk_read(body: bytes, tmp_path: Path) -> dict[str, Any]:
    """What the AI SDK's client (each package) makes of a response body; asserts that both
    versions read it the same way."""
    node = _node()
    path = tmp_path / "body.sse"
    path.write_bytes(body)
    results = []
    for package in PACKAGES:
        result = subprocess.run(
            [node, "client.mjs", package, "parse", str(path)],
            cwd=AISDK_DIR,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        read = json.loads(result.stdout)
        assert read["error"] is None, f"{package}: {read['error']}"
        results.append(read)
    assert results[0]["chunks"] == results[1]["chunks"]
    return dict(results[0])


def parts_of(body: bytes) -> list[Any]:
    """The ``data:`` payloads of a UI message stream, ``[DONE]`` as the string."""
    assert body.startswith(b"retry:")
    out = []
    for frame in body.decode().split("\n\n"):
        for line in frame.splitlines():
            if line.startswith("data: "):
                payload = line[6:]
                out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def chat_body(text: str, chat_id: str = "chat-1", **extra: Any) -> dict[str, Any]:
    """What DefaultChatTransport posts."""
    return {
        "id": chat_id,
        "messages": [
            {"id": "u0", "role": "user", "parts": [{"type": "text", "text": "earlier"}]},
            {"id": "a0", "role": "assistant", "parts": [{"type": "text", "text": "answer"}]},
            {
                "id": "u1",
                "role": "user",
                "parts": [{"type": "text", "text": text}, {"type": "file", "url": "x"}],
            },
        ],
        "trigger": "submit-message",
        "messageId": None,
        **extra,
    }


async def _read(response: Any) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


# -- the encoder ----------------------------------------------------------------------------


def test_encoder_parts() -> None:
    events = [
        TurnEvent(1, "start", {"conversation": "c", "turn": "t", "provider": "p", "model": "m"}),
        TurnEvent(2, "reasoning", {"text": "Hmm"}),
        TurnEvent(3, "delta", {"text": "Hel"}),
        TurnEvent(4, "delta", {"text": "lo"}),
        TurnEvent(5, "tool_call", {"index": 0, "id": "c1", "name": "f", "arguments": '{"a"'}),
        TurnEvent(6, "tool_call", {"index": 0, "id": None, "name": None, "arguments": ": 1}"}),
        TurnEvent(7, "delta", {"text": "!"}),
        TurnEvent(8, "done", {"finish_reason": "tool_calls", "usage": {}, "cost": None}),
    ]
    body = UIMessageStreamEncoder()(events)
    assert parts_of(b"retry: 1\n\n" + body) == [
        {
            "type": "start",
            "messageId": "t",
            "messageMetadata": {"conversation": "c", "turn": "t", "provider": "p", "model": "m"},
        },
        {"type": "start-step"},
        {"type": "reasoning-start", "id": "reasoning-1"},
        {"type": "reasoning-delta", "id": "reasoning-1", "delta": "Hmm"},
        {"type": "reasoning-end", "id": "reasoning-1"},
        {"type": "text-start", "id": "text-2"},
        {"type": "text-delta", "id": "text-2", "delta": "Hel"},
        {"type": "text-delta", "id": "text-2", "delta": "lo"},
        {"type": "text-end", "id": "text-2"},
        {"type": "tool-input-start", "toolCallId": "c1", "toolName": "f"},
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": '{"a"'},
        {"type": "tool-input-delta", "toolCallId": "c1", "inputTextDelta": ": 1}"},
        {"type": "text-start", "id": "text-3"},
        {"type": "text-delta", "id": "text-3", "delta": "!"},
        {"type": "text-end", "id": "text-3"},
        {"type": "tool-input-available", "toolCallId": "c1", "toolName": "f", "input": {"a": 1}},
        {"type": "finish-step"},
        {
            "type": "finish",
            "messageMetadata": {"finish_reason": "tool_calls", "usage": {}, "cost": None},
        },
        "[DONE]",
    ]


def test_encoder_cancelled_and_failed_turns() -> None:
    start = TurnEvent(1, "start", {"turn": "t"})
    cancelled = UIMessageStreamEncoder()(
        [
            start,
            TurnEvent(2, "delta", {"text": "a"}),
            TurnEvent(3, "done", {"finish_reason": "cancelled"}),
        ]
    )
    assert [
        p if isinstance(p, str) else p["type"] for p in parts_of(b"retry:\n\n" + cancelled)
    ] == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "message-metadata",
        "abort",
        "[DONE]",
    ]
    failed = UIMessageStreamEncoder()(
        [
            start,
            TurnEvent(
                2, "error", {"type": "upstream_timeout", "message": "Slow.", "retryable": True}
            ),
        ]
    )
    assert parts_of(b"retry:\n\n" + failed)[-2:] == [
        {"type": "error", "errorText": "Slow."},
        "[DONE]",
    ]


def test_turn_body() -> None:
    chat_id, body = turn_body(chat_body("Now this", params={"temperature": 0.1}))
    assert chat_id == "chat-1"
    assert body == {"prompt": "Now this", "params": {"temperature": 0.1}}
    # An AI SDK 4 message (content) is read too.
    assert turn_body({"messages": [{"role": "user", "content": "old"}]}) == (
        None,
        {"prompt": "old"},
    )
    for bad, field in [
        ({"messages": "x"}, "messages"),
        ({"messages": [{"role": "assistant", "parts": []}]}, "messages"),
        ({"messages": [], "id": 5}, "id"),
        ({"messages": [], "trigger": "nope"}, "trigger"),
    ]:
        with pytest.raises(RequestValidationError) as info:
            turn_body(bad)
        assert info.value.field == field


# -- through the views ------------------------------------------------------------------------


async def test_stream_endpoint_speaks_the_ui_message_stream(tmp_path: Path) -> None:
    client = AsyncClient()
    with script_provider(
        ReasoningDelta("Thinking."),
        "Hello",
        " there",
        ToolCallDelta(0, '{"q": "x"}', id="call_1", name="search"),
        Usage(input_tokens=4, output_tokens=2),
        {"finish": "tool_calls"},
    ) as script:
        response = await client.post(STREAM_URL, chat_body("Hi!"), content_type="application/json")
        body = await _read(response)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response["x-vercel-ai-ui-message-stream"] == "v1"
    assert script.requests[0].messages[-1].content == "Hi!"
    parts = parts_of(body)
    turn = await Message.objects.aget(role="assistant")
    assert parts[0]["messageId"] == str(turn.pk)
    assert parts[-2]["messageMetadata"]["usage"]["output_tokens"] == 2
    assert parts[-1] == "[DONE]"

    read = ai_sdk_read(body, tmp_path)
    assert [c for c in read["chunks"] if c["type"] not in {"start", "finish"}] == [
        p for p in parts[:-1] if p["type"] not in {"start", "finish"}
    ]
    message = read["message"]
    assert message["id"] == str(turn.pk)
    assert message["metadata"]["finish_reason"] == "tool_calls"
    assert message["metadata"]["conversation"] == str(turn.conversation_id)
    kinds = [part["type"] for part in message["parts"]]
    assert kinds == ["step-start", "reasoning", "text", "tool-search"]
    assert message["parts"][2]["text"] == "Hello there"
    assert message["parts"][3]["input"] == {"q": "x"}
    assert message["parts"][3]["state"] == "input-available"


async def test_a_failing_turn_and_the_sdk_error(tmp_path: Path) -> None:
    with script_provider("Half", Fail("upstream_server_error", "The model crashed.")):
        response = await AsyncClient().post(
            STREAM_URL, chat_body("Hi"), content_type="application/json"
        )
        body = await _read(response)
    assert parts_of(body)[-2:] == [{"type": "error", "errorText": "The model crashed."}, "[DONE]"]
    read = ai_sdk_read(body, tmp_path)
    assert read["errors"] == ["Error: The model crashed."]
    assert read["message"]["parts"][-1]["text"] == "Half"


async def test_chat_id_maps_to_a_conversation() -> None:
    client = AsyncClient()
    with script_provider(scripts=[["One."], ["Two."], ["Three."], ["Four."]]) as script:
        await _read(
            await client.post(
                STREAM_URL, chat_body("a", "my-chat"), content_type="application/json"
            )
        )
        await _read(
            await client.post(
                STREAM_URL, chat_body("b", "my-chat"), content_type="application/json"
            )
        )
        conversation = await Conversation.objects.aget()
        assert conversation.metadata == {"ai_sdk_chat_id": "my-chat"}
        # The chat id may also be the conversation's own id.
        await _read(
            await client.post(
                STREAM_URL, chat_body("c", str(conversation.pk)), content_type="application/json"
            )
        )
        # Someone else's conversation id is just an unknown chat: a new conversation.
        other = AsyncClient()
        await _read(
            await other.post(
                STREAM_URL, chat_body("d", str(conversation.pk)), content_type="application/json"
            )
        )
    assert [(m.role, m.content) for m in script.requests[2].messages] == [
        ("user", "a"),
        ("assistant", "One."),
        ("user", "b"),
        ("assistant", "Two."),
        ("user", "c"),
    ]
    assert [m.content for m in script.requests[3].messages] == ["d"]
    assert await Conversation.objects.acount() == 2


async def test_invalid_bodies_are_json_errors() -> None:
    client = AsyncClient()
    response = await client.post(STREAM_URL, {"messages": []}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "messages"
    response = await client.post(
        STREAM_URL, chat_body("x", temperature=1), content_type="application/json"
    )
    assert response.json()["error"]["field"] == "temperature"
    assert await Message.objects.acount() == 0


async def test_reconnect_route_and_events_endpoint(tmp_path: Path) -> None:
    client = AsyncClient()
    reconnect = "/llmstream/stream/chat-9/stream"
    assert (await client.get(reconnect)).status_code == 204  # no such chat
    with script_provider("Hello", Pause(None), "never"):
        created = await client.post(
            "/llmstream/turns/", {"prompt": "Hi"}, content_type="application/json"
        )
        turn = created.json()
        conversation = await Conversation.objects.aget()
        # A running turn: its whole stream, from the start, whatever the client had.
        response = await client.get(f"/llmstream/stream/{conversation.pk}/stream")
        assert response.status_code == 200
        assert response["x-vercel-ai-ui-message-stream"] == "v1"
        chunks = b""
        async for chunk in response.streaming_content:
            chunks += chunk
            if b'"delta":"Hello"' in chunks and b"stopping" not in chunks:
                await client.post(turn["stop_url"])
                chunks += b": stopping\n\n"
        types = [p if isinstance(p, str) else p["type"] for p in parts_of(chunks)]
        assert types[-3:] == ["message-metadata", "abort", "[DONE]"]
        read = ai_sdk_read(chunks, tmp_path)
        assert read["message"]["parts"][1]["text"] == "Hello"
        # Finished: nothing to resume.
        assert (await client.get(f"/llmstream/stream/{conversation.pk}/stream/")).status_code == 204
        # events/?format=ai-sdk replays a finished turn (Last-Event-ID is not for this format).
        replay = await client.get(
            turn["events_url"] + "?format=ai-sdk", headers={"Last-Event-ID": "99"}
        )
        assert parts_of(await _read(replay)) == parts_of(chunks)


def test_wsgi_stream_and_replay(tmp_path: Path) -> None:
    client = Client()
    with script_provider("Sync", " answer"):
        response = client.post(STREAM_URL, chat_body("Hi"), content_type="application/json")
        body = b"".join(response.streaming_content)
    assert response["x-vercel-ai-ui-message-stream"] == "v1"
    parts = parts_of(body)
    turn = Message.objects.get(role="assistant")
    replay = client.get(f"/llmstream/turns/{turn.pk}/events/?format=ai-sdk")
    replayed = parts_of(b"".join(replay.streaming_content))
    # A replay from the database may regroup the deltas: the same text in fewer parts.
    assert [p for p in replayed if "delta" not in p] == [p for p in parts if "delta" not in p]
    assert ai_sdk_read(body, tmp_path)["message"]["parts"][1]["text"] == "Sync answer"


# -- end to end: the AI SDK's client over real sockets ----------------------------------------


@pytest.mark.e2e
def test_ai_sdk_client_against_a_live_server(uvicorn_server: Any, llmstream_settings: Any) -> None:
    node = _node()
    # stream/ cancels a turn whose client goes away, unless ON_DISCONNECT is "finish": what a
    # site that wants the AI SDK's resume sets.
    llmstream_settings(ON_DISCONNECT="finish", FLUSH_INTERVAL=0.02)
    with script_provider(scripts=[["First ", "answer."], ["Sec", Pause(0.5), "ond ", "answer."]]):
        result = subprocess.run(
            [node, "client.mjs", "ai", "chat", f"{uvicorn_server.url}/llmstream/"],
            cwd=AISDK_DIR,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    first = out["first"]["message"]
    assert first["parts"][1]["text"] == "First answer."
    assert out["idleReconnect"] is None
    assert out["secondBeforeDrop"][-1] == "text-delta"
    resumed = out["resumed"]["message"]
    assert resumed["parts"][1]["text"] == "Second answer."
    assert resumed["metadata"]["finish_reason"] == "stop"
    assert out["afterReconnect"] is None
    conversation = Conversation.objects.get(pk=first["metadata"]["conversation"])
    assert [m.content for m in conversation.messages.order_by("created_at")] == [
        "First question",
        "First answer.",
        "Second",
        "Second answer.",
    ]
    assert uuid.UUID(resumed["id"])

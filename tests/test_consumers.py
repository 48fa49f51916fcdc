"""The WebSocket consumer (django_llmstream.consumers): Channels' WebsocketCommunicator in
process, then a real socket through uvicorn."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.test import override_settings

pytest.importorskip("channels", reason="the WebSocket consumer needs Django Channels")

from channels.testing import WebsocketCommunicator

from django_llmstream.models import Conversation, Message
from django_llmstream.testing import Fail, Pause, script_provider
from tests.live import LiveServer
from tests.shared import REPO_ROOT
from tests.ws_asgi import websocket_application

pytestmark = pytest.mark.django_db(transaction=True)

PATH = "/llmstream/ws/"


async def _session_cookie() -> bytes:
    session = SessionStore()
    session["visitor"] = True
    await session.asave()
    return f"sessionid={session.session_key}".encode()


async def _connect(cookie: bytes | None = None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver")]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    communicator = WebsocketCommunicator(websocket_application, PATH, headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def _until_terminal(communicator: WebsocketCommunicator) -> list[dict[str, Any]]:
    messages = []
    while True:
        message = await communicator.receive_json_from(timeout=5)
        messages.append(message)
        if message.get("event") in {"done", "error"} or message.get("type") == "error":
            return messages


def _text(messages: list[dict[str, Any]]) -> str:
    return "".join(m["data"]["text"] for m in messages if m.get("event") == "delta")


async def test_start_streams_the_turn_as_json_messages() -> None:
    communicator = await _connect(await _session_cookie())
    with script_provider("Hello", " socket", {"usage": {"output_tokens": 2}}):
        await communicator.send_json_to({"type": "start", "prompt": "Hi", "params": {"seed": 1}})
        messages = await _until_terminal(communicator)
    await communicator.disconnect()
    turn = await Message.objects.aget(role="assistant")
    assert [m["event"] for m in messages] == ["start", "delta", "delta", "done"]
    assert [m["id"] for m in messages] == [1, 2, 3, 4]
    assert all(m["turn"] == str(turn.pk) for m in messages)
    assert messages[0]["data"]["conversation"] == str(turn.conversation_id)
    assert _text(messages) == turn.content == "Hello socket"
    assert messages[-1]["data"]["usage"]["output_tokens"] == 2
    assert turn.status == "completed" and turn.params == {"seed": 1}


@pytest.mark.parametrize(
    ("message", "status", "error_type", "field"),
    [
        ({"type": "start"}, 400, "invalid_request", "prompt"),
        ({"type": "start", "prompt": "x", "provider": "nope"}, 400, "invalid_request", "provider"),
        ({"type": "start", "prompt": "x", "turn": "?"}, 400, "invalid_request", "turn"),
        ({"type": "start", "prompt": "x", "conversation": "bad"}, 400, None, "conversation"),
        (
            {
                "type": "start",
                "prompt": "x",
                "conversation": "7a6f4636-8bf9-4223-a379-d3c8729caeaf",
            },
            404,
            "not_found",
            "conversation",
        ),
        ({"type": "stop", "turn": "nope"}, 400, None, "turn"),
        ({"type": "resume", "turn": "7a6f4636-8bf9-4223-a379-d3c8729caeaf"}, 404, None, "turn"),
        ({"type": "dance"}, 400, None, "type"),
        ([1, 2], 400, None, None),
    ],
)
async def test_refused_messages_are_json_errors(
    message: Any, status: int, error_type: str | None, field: str | None
) -> None:
    communicator = await _connect(await _session_cookie())
    if isinstance(message, dict):
        message = {**message, "ref": 7}
    await communicator.send_json_to(message)
    reply = await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()
    assert reply["type"] == "error"
    assert reply["status"] == status
    assert set(reply["error"]) == {"type", "message", "field"}
    assert reply["error"]["field"] == field
    if error_type:
        assert reply["error"]["type"] == error_type
    assert reply.get("ref") == (7 if isinstance(message, dict) else None)
    assert await Message.objects.acount() == 0


async def test_invalid_json_and_oversized_messages() -> None:
    communicator = await _connect(await _session_cookie())
    await communicator.send_to(text_data="{not json")
    assert (await communicator.receive_json_from())["status"] == 400
    with override_settings(LLMSTREAM={"ALLOW_ANONYMOUS": True, "MAX_BODY_BYTES": 50}):
        await communicator.send_json_to({"type": "start", "prompt": "x" * 100})
        reply = await communicator.receive_json_from()
    assert (reply["status"], reply["error"]["type"]) == (413, "request_too_large")
    await communicator.disconnect()


async def test_resume_after_an_id_stop_and_ownership() -> None:
    cookie = await _session_cookie()
    first = await _connect(cookie)
    with script_provider("one ", "two ", Pause(None), "never"):
        await first.send_json_to({"type": "start", "prompt": "Hi"})
        seen = [await first.receive_json_from(timeout=5) for _ in range(3)]  # start, one, two
        assert _text(seen) == "one two "
        turn = seen[0]["turn"]
        await first.disconnect()

        # Another visitor cannot see or stop it.
        stranger = await _connect(await _session_cookie())
        for kind in ("resume", "stop"):
            await stranger.send_json_to({"type": kind, "turn": turn})
            reply = await stranger.receive_json_from(timeout=5)
            assert (reply["status"], reply["error"]["field"]) == (404, "turn")
        await stranger.disconnect()

        # The same visitor, on a new socket: the events after id 2, then a stop.
        second = await _connect(cookie)
        await second.send_json_to({"type": "resume", "turn": turn, "last_event_id": "2"})
        resumed = await second.receive_json_from(timeout=5)
        assert (resumed["event"], resumed["id"], resumed["data"]["text"]) == ("delta", 3, "two ")
        await second.send_json_to({"type": "stop", "turn": turn})
        rest = await _until_terminal(second)
        assert rest[-1]["event"] == "done"
        assert rest[-1]["data"]["finish_reason"] == "cancelled"
        # A resume after the terminal event: nothing more (HTTP's 204).
        await second.send_json_to({"type": "resume", "turn": turn, "last_event_id": rest[-1]["id"]})
        assert await second.receive_json_from(timeout=5) == {"type": "ended", "turn": turn}
        # From the start: the whole turn again (replayed from the broker or the database).
        await second.send_json_to({"type": "resume", "turn": turn})
        replay = await _until_terminal(second)
        assert _text(replay) == "one two "
        await second.disconnect()
    row = await Message.objects.aget(pk=turn)
    assert (row.status, row.content) == ("cancelled", "one two ")


async def test_a_failing_turn_ends_with_its_error_event() -> None:
    communicator = await _connect(await _session_cookie())
    with script_provider("Half", Fail("upstream_timeout", "Too slow.")):
        await communicator.send_json_to({"type": "start", "prompt": "Hi"})
        messages = await _until_terminal(communicator)
    await communicator.disconnect()
    assert messages[-1]["event"] == "error"
    assert messages[-1]["data"] == {
        "type": "upstream_timeout",
        "message": "Too slow.",
        "retryable": True,
    }


async def test_anonymous_refused_unless_allowed_and_users_own_their_turns() -> None:
    with override_settings(LLMSTREAM={"ALLOW_ANONYMOUS": False}):
        communicator = await _connect(await _session_cookie())
        reply = await communicator.receive_json_from()
        assert reply["error"]["type"] == "not_authenticated"
        assert (await communicator.receive_output())["code"] == 4403

    user = await sync_to_async(get_user_model().objects.create_user)("ada", password="pw")

    async def as_user(scope: Any, receive: Any, send: Any) -> None:
        from django_llmstream.consumers import LLMStreamConsumer

        scope = {**scope, "user": user, "session": SessionStore()}
        await LLMStreamConsumer.as_asgi()(scope, receive, send)

    communicator = WebsocketCommunicator(as_user, PATH)
    assert (await communicator.connect())[0]
    with script_provider("Mine."):
        await communicator.send_json_to({"type": "start", "prompt": "Hi"})
        await _until_terminal(communicator)
    await communicator.disconnect()
    conversation = await Conversation.objects.aget()
    assert conversation.owner_id == user.pk and conversation.session_key == ""


def refuse_start(request: Any, action: str, conversation: Any) -> bool:
    """A ``PERMISSION`` callable for the test below."""
    assert request.method == ("POST" if action in {"start", "stop"} else "GET")
    assert request.session is not None
    return action != "start"


async def test_permission_callable_sees_a_request_from_the_scope() -> None:
    communicator = await _connect(await _session_cookie())
    with override_settings(
        LLMSTREAM={"ALLOW_ANONYMOUS": True, "PERMISSION": f"{__name__}.refuse_start"}
    ):
        await communicator.send_json_to({"type": "start", "prompt": "Hi"})
        reply = await communicator.receive_json_from()
    await communicator.disconnect()
    assert (reply["status"], reply["error"]["type"]) == (403, "forbidden")


def test_import_without_channels_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "channels.generic.websocket", None)
    monkeypatch.delitem(sys.modules, "django_llmstream.consumers", raising=False)
    with pytest.raises(ImportError, match=r"django-llmstream\[channels\]"):
        importlib.import_module("django_llmstream.consumers")
    monkeypatch.delitem(sys.modules, "django_llmstream.consumers", raising=False)


async def test_sockets_from_other_sites_are_refused() -> None:
    """The routing of the docs puts the consumer behind AllowedHostsOriginValidator: a page of
    another site cannot open a socket with the visitor's cookies (cross-site WebSocket
    hijacking; the HTTP endpoints have CSRF protection for that)."""
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter
    from channels.security.websocket import AllowedHostsOriginValidator
    from django.urls import path

    from django_llmstream.consumers import LLMStreamConsumer

    with override_settings(ALLOWED_HOSTS=["testserver"]):
        application = AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter([path("llmstream/ws/", LLMStreamConsumer.as_asgi())]))
        )
    for origin, accepted in [(b"http://evil.example", False), (b"http://testserver", True)]:
        communicator = WebsocketCommunicator(
            application, PATH, headers=[(b"origin", origin), (b"cookie", await _session_cookie())]
        )
        connected, _ = await communicator.connect()
        assert connected is accepted
        await communicator.disconnect()


# -- over a real socket ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ws_server(django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveServer]:
    """Our own uvicorn server, with WebSocket support (the shared one runs ws="none")."""
    pytest.importorskip("websockets", reason="uvicorn speaks WebSocket with websockets")
    from tests.ws_asgi import application

    server = LiveServer(application, ws="websockets-sansio")
    server.start()
    yield server
    server.stop()


@pytest.mark.e2e
def test_over_a_real_socket_with_a_reconnect(ws_server: LiveServer) -> None:
    import httpx
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{ws_server.port}{PATH}"
    origin = f"http://127.0.0.1:{ws_server.port}"
    with script_provider("Over ", "the ", Pause(0.3), "wire."):
        with connect(url, origin=origin, open_timeout=5) as socket:
            # A new visitor gets their session cookie with the handshake.
            set_cookie = socket.response.headers["set-cookie"]
            cookie = set_cookie.split(";")[0]
            socket.send(json.dumps({"type": "start", "prompt": "Hi"}))
            first = [json.loads(socket.recv(timeout=5)) for _ in range(3)]
        assert [m["event"] for m in first] == ["start", "delta", "delta"]
        turn = first[0]["turn"]
        # The socket closed mid-turn: the turn runs on (DISCONNECT_GRACE_SECONDS), and the
        # same visitor resumes it on a new socket after the last id they had.
        with connect(url, origin=origin, additional_headers={"Cookie": cookie}) as socket:
            socket.send(json.dumps({"type": "resume", "turn": turn, "last_event_id": 3}))
            rest = []
            while not rest or rest[-1]["event"] not in {"done", "error"}:
                rest.append(json.loads(socket.recv(timeout=5)))
    assert _text(first + rest) == "Over the wire."
    assert [m["id"] for m in first + rest] == list(range(1, len(first + rest) + 1))
    # The HTTP endpoints know the same visitor: one owner for both transports.
    response = httpx.get(f"{origin}/llmstream/conversations/", headers={"Cookie": cookie})
    assert [c["id"] for c in response.json()["results"]] == [first[0]["data"]["conversation"]]


# -- the demo site --------------------------------------------------------------------------


@pytest.mark.e2e
def test_demo_site_serves_websocket_ai_sdk_and_static(tmp_path: Any) -> None:
    """The demo's asgi.py: WebSocket on /llmstream/ws/ beside HTTP (the chat page's static
    files, ?format=ai-sdk), under the lifespan wrapper that drains turns at shutdown."""
    import os
    import signal
    import socket as sockets
    import subprocess
    import time

    import httpx
    from websockets.sync.client import connect

    pytest.importorskip("websockets", reason="uvicorn speaks WebSocket with websockets")
    demo = REPO_ROOT / "testproject"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "ANTHROPIC_", "OLLAMA_", "LLMSTREAM_", "DJANGO_"))
        and k not in {"DATABASE_URL", "REDIS_URL"}
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        PYTHONPATH=str(REPO_ROOT),
        LLMSTREAM_LIMITS="off",
    )
    run = {"cwd": demo, "env": env, "timeout": 120, "check": True, "capture_output": True}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], **run)
    with sockets.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "testproject.asgi:application"),
            *("--port", str(port), "--lifespan", "on", "--ws", "websockets-sansio"),
            *("--log-level", "warning"),
        ],
        cwd=demo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(f"{base}/", timeout=2)
                break
            except httpx.HTTPError:
                assert server.poll() is None and time.monotonic() < deadline, "demo did not start"
                time.sleep(0.1)
        assert page.status_code == 200
        static = httpx.get(f"{base}/static/django_llmstream/llmstream.js")
        assert static.status_code == 200 and b"jsonValues" in static.content

        with connect(f"ws://127.0.0.1:{port}/llmstream/ws/", origin=base) as socket:
            socket.send(json.dumps({"type": "start", "prompt": "Hello over a socket"}))
            messages = []
            while not messages or messages[-1]["event"] not in {"done", "error"}:
                messages.append(json.loads(socket.recv(timeout=30)))
        assert messages[-1]["event"] == "done"
        assert "Hello over a socket" in _text(messages)

        with httpx.Client(base_url=base, timeout=30) as http:
            http.get("/")  # the page sets the CSRF cookie
            token = http.cookies["csrftoken"]
            body = {
                "id": "demo-chat",
                "messages": [
                    {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]}
                ],
                "trigger": "submit-message",
            }
            response = http.post(
                "/llmstream/stream/?format=ai-sdk", json=body, headers={"X-CSRFToken": token}
            )
            assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
            assert response.text.endswith("data: [DONE]\n\n")
            assert http.get("/llmstream/stream/demo-chat/stream").status_code == 204
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0].decode()
    # uvicorn re-raises the SIGTERM it handled once it has shut down cleanly.
    assert server.returncode in {0, -signal.SIGTERM}, output
    assert "Traceback" not in output, output

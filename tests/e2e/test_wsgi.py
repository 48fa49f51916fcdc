"""Under a WSGI server, POST stream/ still streams token by token (a sync iterator path), and a
client that goes away still cancels the turn. Served by wsgiref from the standard library."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from django.core.wsgi import get_wsgi_application

from django_llmstream.models import Message
from tests.e2e.conftest import wait_for
from tests.live import Client, text_reaches
from tests.upstream import openai_chunks

pytestmark = pytest.mark.e2e

PIECES = ["Plain ", "old ", "WSGI ", "still ", "streams."]
USAGE = {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}


class _ThreadingWSGIServer(WSGIServer):
    daemon_threads = True

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def wsgi_client(transactional_db: None) -> Iterator[Client]:
    server = make_server(
        "127.0.0.1", 0, get_wsgi_application(), _ThreadingWSGIServer, _QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = Client(f"http://127.0.0.1:{server.server_port}")
    yield client
    client.close()
    server.shutdown()
    server.server_close()


def test_stream_under_wsgi_arrives_token_by_token(
    wsgi_client: Client, configure: Any, upstream: Any
) -> None:
    # The upstream stalls after three pieces: the deltas must reach the client before the
    # turn could end, so nothing is buffered. A WSGI server notices a client that left only
    # when it next writes to it: heartbeats make that happen soon.
    configure(HEARTBEAT_SECONDS=0.2)
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), stall_after=4)
    seen = wsgi_client.read_sse(
        "POST",
        "/llmstream/stream/",
        json={"prompt": "hi"},
        headers={"Accept-Encoding": "gzip"},
        stop_when=text_reaches("".join(PIECES[:3])),
    )
    assert seen.headers["content-encoding"] == "gzip"
    assert seen.events[0].event == "start"
    assert {e.event for e in seen.events[1:]} == {"delta"}
    # Going away cancelled it, upstream closed, partial text kept.
    assert upstream.wait_for_disconnect(3.0)
    turn_id = seen.events[0].json()["turn"]
    turn = wait_for(lambda: Message.objects.filter(pk=turn_id, status="cancelled").first())
    assert turn.content == "".join(PIECES[:3])


def test_stream_under_wsgi_completes_and_persists(
    wsgi_client: Client, configure: Any, upstream: Any
) -> None:
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE))
    result = wsgi_client.read_sse("POST", "/llmstream/stream/", json={"prompt": "hi"})
    assert result.terminal.event == "done"
    turn = Message.objects.get(pk=result.events[0].json()["turn"])
    assert turn.status == "completed" and turn.content == result.text == "".join(PIECES)
    # Endpoints that need requests to share a running turn say what they need.
    refused = wsgi_client.post_json("/llmstream/turns/", {"prompt": "hi"})
    assert refused.status_code == 503 and "ASGI" in refused.json()["error"]["message"]
    # A finished turn replays fine.
    replay = wsgi_client.read_sse("GET", f"/llmstream/turns/{turn.pk}/events/")
    assert replay.text == turn.content, replay.raw

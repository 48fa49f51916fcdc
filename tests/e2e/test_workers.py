"""Several worker processes behind no sticky sessions: real uvicorn processes sharing Redis and
the database. Resume on another worker, stop from another worker, and a worker killed mid-turn.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from django_llmstream.models import Message
from tests.e2e.conftest import Worker, wait_for
from tests.e2e.conftest import worker_client as _client
from tests.live import text_reaches
from tests.upstream import openai_chunks

needs_redis_and_postgres = [
    pytest.mark.skipif(
        not os.environ.get("REDIS_URL"),
        reason="REDIS_URL is not set (.ci/run sets it when Redis answers)",
    ),
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
        reason="several worker processes need PostgreSQL (DATABASE_URL); SQLite locks",
    ),
]
pytestmark = [pytest.mark.e2e]

PIECES = [f"word{n} " for n in range(12)]
USAGE = {"prompt_tokens": 4, "completion_tokens": 12, "total_tokens": 16}


@needs_redis_and_postgres[0]
@needs_redis_and_postgres[1]
def test_resume_on_another_worker_is_exact(workers: tuple[Worker, Worker], upstream: Any) -> None:
    a, b = workers
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), delay=0.05)
    on_a = _client(a)
    body = on_a.post_json("/llmstream/turns/", {"prompt": "count"}).json()
    first = on_a.read_sse("GET", body["events_url"], stop_after=4)
    on_b = _client(b, on_a.http.cookies)  # the same visitor, another worker
    rest = on_b.read_sse("GET", body["events_url"], headers={"Last-Event-ID": first.events[-1].id})
    ids = [int(e.id) for e in first.events + rest.events]
    assert ids == list(range(1, len(ids) + 1))
    assert rest.terminal.event == "done"
    turn = Message.objects.get(pk=body["turn"])
    assert first.text + rest.text == turn.content == "".join(PIECES)
    # Two watchers on two workers get the same events.
    again_a = on_a.read_sse("GET", body["events_url"])
    again_b = on_b.read_sse("GET", body["events_url"])
    assert [(e.id, e.data) for e in again_a.events] == [(e.id, e.data) for e in again_b.events]


@needs_redis_and_postgres[0]
@needs_redis_and_postgres[1]
def test_stop_from_another_worker(workers: tuple[Worker, Worker], upstream: Any) -> None:
    a, b = workers
    upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), stall_after=4)
    on_a = _client(a)
    body = on_a.post_json("/llmstream/turns/", {"prompt": "count"}).json()
    seen = on_a.read_sse("GET", body["events_url"], stop_when=text_reaches("".join(PIECES[:3])))
    on_b = _client(b, on_a.http.cookies)
    started = time.monotonic()
    assert on_b.http.post(body["stop_url"]).status_code == 202
    assert upstream.wait_for_disconnect(5.0), "worker A kept the upstream request open"
    closed_after = time.monotonic() - started
    turn = wait_for(lambda: Message.objects.filter(pk=body["turn"], status="cancelled").first())
    assert turn.content == "".join(PIECES[:3])
    assert closed_after < 1.0, f"upstream closed {closed_after:.2f} s after the stop"
    end = on_b.read_sse("GET", body["events_url"], headers={"Last-Event-ID": seen.events[-1].id})
    assert end.terminal.json()["finish_reason"] == "cancelled"


@needs_redis_and_postgres[0]
@needs_redis_and_postgres[1]
def test_killed_worker_turn_ends_interrupted_with_its_text(
    workers: tuple[Worker, Worker], worker_env: dict[str, str], upstream: Any
) -> None:
    _a, b = workers
    doomed = Worker(worker_env)
    try:
        upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), stall_after=5)
        on_doomed = _client(doomed)
        created = on_doomed.post_json("/llmstream/turns/", {"prompt": "count"})
        assert created.status_code == 201, created.text[-3000:]
        body = created.json()
        seen = on_doomed.read_sse(
            "GET", body["events_url"], stop_when=text_reaches("".join(PIECES[:4]))
        )
        # Let a batched write persist the text, then kill the worker without warning.
        wait_for(lambda: Message.objects.get(pk=body["turn"]).content == "".join(PIECES[:4]))
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(5)
        # A watcher on the surviving worker is told once the lease has run out.
        on_b = _client(b, on_doomed.http.cookies)
        rest = on_b.read_sse(
            "GET", body["events_url"], headers={"Last-Event-ID": seen.events[-1].id}
        )
        assert rest.terminal.event == "error"
        assert rest.terminal.json()["type"] == "interrupted"
        turn = Message.objects.get(pk=body["turn"])
        assert turn.status == "interrupted"
        assert turn.content == "".join(PIECES[:4])
        gone = on_b.http.get(body["events_url"], headers={"Last-Event-ID": rest.terminal.id})
        assert gone.status_code == 204
    finally:
        doomed.stop()

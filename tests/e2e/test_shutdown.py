"""Graceful shutdown: SIGTERM drains running turns, then saves the rest as interrupted."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from django_llmstream.models import Message
from tests.e2e.conftest import Worker, wait_for
from tests.e2e.conftest import worker_client as _client
from tests.live import SSEResult
from tests.upstream import openai_chunks

pytestmark = pytest.mark.e2e

PIECES = [f"part{n} " for n in range(6)]
USAGE = {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}


def _watch(client: Any, url: str, into: list[SSEResult]) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.append(client.read_sse("GET", url)), daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("drain", "ends"), [("0.3", "interrupted"), ("10", "completed")])
def test_sigterm_drains_then_interrupts(
    worker_env: dict[str, str], upstream: Any, drain: str, ends: str
) -> None:
    worker = Worker({**worker_env, "LLMSTREAM_TEST_DRAIN": drain})
    try:
        if ends == "interrupted":
            upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), stall_after=3)
        else:
            upstream.respond(chunks=openai_chunks(PIECES, usage=USAGE), delay=0.2)
        client = _client(worker)
        body = client.post_json("/llmstream/turns/", {"prompt": "go"}).json()
        results: list[SSEResult] = []
        watcher = _watch(client, body["events_url"], results)
        wait_for(lambda: "part0" in Message.objects.get(pk=body["turn"]).content)
        sent = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        worker.process.wait(15)
        took = time.monotonic() - sent
        watcher.join(5)
        turn = Message.objects.get(pk=body["turn"])
        assert turn.status == ends
        assert results and results[0].terminal.event == (
            "error" if ends == "interrupted" else "done"
        )
        assert results[0].text == turn.content
        if ends == "interrupted":
            assert turn.content == "".join(PIECES[:2])
            assert results[0].terminal.json()["type"] == "interrupted"
            assert took < 5, f"the worker took {took:.1f} s to exit"
        else:
            assert turn.content == "".join(PIECES)
    finally:
        worker.stop()

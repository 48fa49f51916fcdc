"""A real uvicorn server running the test project in a thread, and an SSE client for it.

Session-scoped like httpx's own test server: one server for all end-to-end tests. The tests
talk to it over real sockets with httpx, and read its event streams with our SSEParser.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from django_llmstream.providers.http import aclose_clients
from django_llmstream.sse import ServerSentEvent, SSEParser
from django_llmstream.writer import close_db_connection


class LiveServer:
    def __init__(self, application: Any = None, ws: str = "none") -> None:
        import uvicorn

        if application is None:
            from tests.asgi import application

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            application,
            lifespan="off",
            log_level="warning",
            ws=ws,
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="uvicorn-e2e", daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            try:
                await self.server.serve(sockets=[self.sock])
            finally:
                await aclose_clients()  # the shared upstream client of this loop

        asyncio.run(serve())

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        # The test database can only be dropped once nobody is connected to it.
        close_db_connection()

    def call(self, coro: Any, timeout: float = 10) -> Any:
        """Run ``coro`` on the server's event loop (to look at its broker or generations)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture(scope="session")
def uvicorn_server(django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveServer]:
    server = LiveServer()
    server.start()
    yield server
    server.stop()


@dataclass
class SSEResult:
    status: int
    headers: httpx.Headers
    events: list[ServerSentEvent] = field(default_factory=list)
    raw: bytes = b""
    json: Any = None

    def by_type(self, name: str) -> list[ServerSentEvent]:
        return [e for e in self.events if e.event == name]

    @property
    def text(self) -> str:
        return "".join(e.json()["text"] for e in self.by_type("delta"))

    @property
    def terminal(self) -> ServerSentEvent:
        assert self.events and self.events[-1].event in {"done", "error"}, self.events[-3:]
        return self.events[-1]


def text_reaches(expected: str) -> Callable[[ServerSentEvent], bool]:
    """A ``stop_when`` for :meth:`Client.read_sse`: true once the deltas so far spell
    ``expected`` (pieces read together arrive as one delta, so count text, not events)."""
    received: list[str] = []

    def reached(event: ServerSentEvent) -> bool:
        if event.event == "delta":
            received.append(event.json()["text"])
        return "".join(received) == expected

    return reached


class Client:
    """An httpx client with a session and a CSRF token, like a browser on the demo page."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=20)
        token = "t" * 32
        self.http.cookies.set("csrftoken", token)
        self.http.headers["X-CSRFToken"] = token

    def close(self) -> None:
        self.http.close()

    def post_json(self, path: str, body: Any) -> httpx.Response:
        return self.http.post(path, json=body)

    def read_sse(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        stop_after: int | None = None,
        stop_when: Any = None,
    ) -> SSEResult:
        """Read an event stream to its end, or close it after ``stop_after`` events or when
        ``stop_when(event)`` is true (a client going away)."""
        parser = SSEParser()
        with self.http.stream(method, path, json=json, headers=headers) as response:
            result = SSEResult(response.status_code, response.headers)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                result.raw = response.read()
                if result.raw:
                    with contextlib.suppress(ValueError):
                        result.json = response.json()
                return result
            for chunk in response.iter_bytes():
                result.raw += chunk
                for event in parser.feed(chunk):
                    result.events.append(event)
                    if (stop_after is not None and len(result.events) >= stop_after) or (
                        stop_when is not None and stop_when(event)
                    ):
                        return result
        return result


@pytest.fixture
def client_e2e(uvicorn_server: LiveServer, transactional_db: None) -> Iterator[Client]:
    client = Client(uvicorn_server.url)
    yield client
    client.close()

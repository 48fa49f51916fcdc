"""The pool's liveness check (django_llmstream.providers.network) against real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpcore
import httpx
import pytest

from django_llmstream.providers import network
from django_llmstream.providers.http import _new_client


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A TCP server that answers each request with a tiny HTTP/1.1 keep-alive response and
    keeps its connections, so a test can close them."""
    connections: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    yield port, connections
    srv.close()
    for writer in connections:
        writer.close()
    await srv.wait_closed()


async def test_stream_answers_from_its_socket_and_delegates_the_rest(server: tuple) -> None:
    port, connections = server
    backend = network.PollingBackend(httpcore.AnyIOBackend())
    stream = await backend.connect_tcp("127.0.0.1", port)
    try:
        assert stream.get_extra_info("socket").fileno() >= 0
        assert stream.get_extra_info("server_addr") == ("127.0.0.1", port)
        assert stream.get_extra_info("is_readable") is False
        await stream.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.05)
        assert stream.get_extra_info("is_readable") is True  # the answer waits to be read
        assert (await stream.read(1024)).endswith(b"ok")
        assert stream.get_extra_info("is_readable") is False
        connections[0].close()  # the server hangs up: readable (b"" would follow)
        await asyncio.sleep(0.05)
        assert stream.get_extra_info("is_readable") is True
    finally:
        await stream.aclose()
    assert network.socket_readable(None) is True


async def test_shared_client_uses_it_and_drops_connections_the_server_closed(
    server: tuple,
) -> None:
    port, connections = server
    client = _new_client()
    try:
        assert isinstance(client._transport._pool._network_backend, network.PollingBackend)  # type: ignore[attr-defined]
        assert network.install(client._transport) is False  # never wrapped twice
        url = f"http://127.0.0.1:{port}/"
        assert (await client.get(url)).text == "ok"
        assert len(connections) == 1
        connections[0].close()  # an idle keep-alive connection the server closed
        await asyncio.sleep(0.05)
        # The pool sees it is gone and opens a new one instead of failing the request.
        assert (await client.get(url)).text == "ok"
        assert len(connections) == 2
        assert (await client.get(url)).text == "ok"
        assert len(connections) == 2  # and reuses the live one
    finally:
        await client.aclose()


def test_install_leaves_unknown_transports_alone() -> None:
    assert network.install(object()) is False
    assert network.install(httpx.MockTransport(lambda request: httpx.Response(200))) is False

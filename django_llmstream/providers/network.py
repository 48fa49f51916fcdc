"""A cheaper liveness check for httpcore's pooled connections.

Before every request it sends, and again when a response is closed, httpcore's connection
pool asks each idle connection whether the server has closed it (``is_readable``). Its anyio
stream answers by building a dict of every socket attribute, which makes a ``getpeername``
system call each time: with a few dozen pooled upstream connections that was 9 % of a
worker's CPU when streams were short (``make bench``, profile of ``POST stream/`` with ten
tokens per answer). The streams here find the raw socket once and poll it directly; the
answer is the same, and everything else is delegated unchanged.
"""

from __future__ import annotations

import select
import socket
import ssl
import sys
import typing

import httpcore

__all__ = ["PollingBackend", "install"]


def socket_readable(sock: socket.socket | typing.Any) -> bool:
    """Whether a read on ``sock`` would not block (data, or the server's close); a socket
    that is gone counts as readable, so the pool drops its connection."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    if sys.platform == "win32" or not hasattr(select, "poll"):  # pragma: no cover
        readable, _, _ = select.select([fd], [], [], 0)
        return bool(readable)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class PollingStream(httpcore.AsyncNetworkStream):
    """httpcore's stream with ``is_readable`` and ``socket`` answered from the raw socket."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        # A socket.socket, or asyncio's TransportSocket wrapping one: both have fileno().
        self._socket: typing.Any = stream.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return PollingStream(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable":
            return socket_readable(self._socket)
        if info == "socket":
            return self._socket
        return self._stream.get_extra_info(info)


class PollingBackend(httpcore.AsyncNetworkBackend):
    """Wraps httpcore's backend: its connections as :class:`PollingStream`."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return PollingStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover - no UDS upstream in our settings
        stream = await self._backend.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return PollingStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


def install(transport: object) -> bool:
    """Put :class:`PollingBackend` under an httpx transport's connection pool.

    httpx builds the pool itself and offers no parameter for its network backend, so this
    reaches the pool's attributes; where they are not as expected (another httpx or httpcore
    version, a custom transport) it changes nothing and returns ``False``.
    """
    pool = getattr(transport, "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if not isinstance(backend, httpcore.AsyncNetworkBackend) or isinstance(backend, PollingBackend):
        return False
    pool._network_backend = PollingBackend(backend)  # type: ignore[union-attr]
    return True

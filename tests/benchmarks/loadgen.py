"""The load generator: raw asyncio sockets, one connection per stream, cheap on purpose.

Each stream is one HTTP/1.1 request over a fresh connection; the response is de-chunked and
split into SSE events incrementally, with no JSON parsing: every relay under test sends
``delta`` events whose data is ``{"text":"..."}`` with ASCII text and no escapes, so the
number of upstream tokens an event carries is ``(len(data) - 11) / token_size`` (a relay may
coalesce several tokens into one event; tokens, not events, are what is counted). Talking to
the fake upstream directly (``direct``), a token is a chunk with non-empty ``content``.

The generator's own CPU time is measured by the runner (``time.process_time``) and reported
next to the server's, so it can be seen not to be the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

__all__ = ["StreamResult", "Target", "closed_loop", "one_stream", "open_streams", "percentile"]

_DELTA_OVERHEAD = len(b'{"text":""}')


@dataclass
class Target:
    """Where and what to POST; ``direct`` means the fake upstream itself."""

    name: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    direct: bool = False
    pid: int | None = None

    def request(self) -> bytes:
        head = [
            f"POST {self.path} HTTP/1.1",
            f"Host: 127.0.0.1:{self.port}",
            "Accept: text/event-stream",
            "Content-Type: application/json",
            f"Content-Length: {len(self.body)}",
            *(f"{k}: {v}" for k, v in self.headers.items()),
        ]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


@dataclass
class StreamResult:
    started: float
    ttft: float | None = None  # seconds to the first token
    tokens: int = 0
    gaps: list[float] = field(default_factory=list)  # seconds between reads with tokens
    token_times: list[tuple[float, int]] = field(default_factory=list)
    done: bool = False
    error: str | None = None
    status: int | None = None


class _Client(asyncio.Protocol):
    def __init__(
        self, result: StreamResult, token_size: int, direct: bool, keep_times: bool
    ) -> None:
        self.result = result
        self.size = token_size
        self.direct = direct
        self.keep_times = keep_times
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.raw = b""
        self.head_done = False
        self.chunk_left = -1  # bytes left in the current chunk (+2 for CRLF), -1: size line
        self.body = b""
        self.sep = b"\n\n"
        self.last_token_at: float | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        raw = self.raw + data
        if not self.head_done:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                self.raw = raw
                return
            self.result.status = int(raw[9:12])
            self.head_done = True
            raw = raw[end + 4 :]
        # De-chunk what is complete.
        body = self.body
        pos = 0
        size = len(raw)
        ended = False
        while pos < size:
            if self.chunk_left < 0:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                length = int(raw[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if length == 0:
                    ended = True
                    pos = size
                    break
                self.chunk_left = length + 2
            take = min(self.chunk_left, size - pos)
            body += raw[pos : pos + take]
            pos += take
            self.chunk_left -= take
            if self.chunk_left == 0:
                body = body[:-2]
                self.chunk_left = -1
        self.raw = raw[pos:]
        tokens = self._events(body)
        if tokens:
            result = self.result
            if result.ttft is None:
                result.ttft = now - result.started
            elif self.last_token_at is not None:
                result.gaps.append(now - self.last_token_at)
            self.last_token_at = now
            result.tokens += tokens
            if self.keep_times:
                result.token_times.append((now, tokens))
        if ended or self.result.done:
            self._finish()

    def _events(self, body: bytes) -> int:
        if b"\r\n" in body[:200]:
            self.sep = b"\r\n\r\n"
        sep = self.sep
        tokens = 0
        start = 0
        while True:
            end = body.find(sep, start)
            if end < 0:
                break
            block = body[start:end]
            start = end + len(sep)
            if self.direct:
                if b'"content":"' in block and b'"content":""' not in block:
                    tokens += 1
                elif b"[DONE]" in block:
                    self.result.done = True
                continue
            if block.startswith(b"event: delta"):
                data = block.rfind(b"data: ")
                tokens += (len(block) - data - 6 - _DELTA_OVERHEAD) // self.size
            elif block.startswith((b"event: done", b"event: error")):
                self.result.done = True
                if block.startswith(b"event: error"):
                    self.result.error = block.decode(errors="replace")[:200]
        self.body = body[start:]
        return tokens

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.result.done and self.result.error is None:
            self.result.error = f"connection closed ({exc or 'eof'})"
        if not self.finished.done():
            self.finished.set_result(None)


async def one_stream(
    target: Target,
    *,
    token_size: int,
    deadline: float | None = None,
    keep_times: bool = False,
    request: bytes | None = None,
) -> StreamResult:
    """Run one stream to its end (or ``deadline``, a ``perf_counter`` value)."""
    loop = asyncio.get_running_loop()
    result = StreamResult(started=time.perf_counter())
    client: _Client | None = None
    try:
        transport, client = await loop.create_connection(
            lambda: _Client(result, token_size, target.direct, keep_times), "127.0.0.1", target.port
        )
        transport.write(request or target.request())
        if deadline is None:
            await client.finished
        else:
            timeout = max(deadline - time.perf_counter(), 0)
            try:
                await asyncio.wait_for(asyncio.shield(client.finished), timeout)
            except TimeoutError:
                result.error = result.error or "cut at the deadline"
                transport.close()
    except OSError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if client is not None and client.transport is not None:
            client.transport.close()
    return result


async def closed_loop(
    target: Target, *, clients: int, seconds: float, token_size: int
) -> tuple[int, list[StreamResult], float]:
    """``clients`` loops of back-to-back streams for ``seconds``: the tokens received inside
    the window, the results, and the window's length."""
    request = target.request()
    start = time.perf_counter()
    deadline = start + seconds
    results: list[StreamResult] = []

    async def loop() -> None:
        while time.perf_counter() < deadline:
            results.append(
                await one_stream(
                    target,
                    token_size=token_size,
                    deadline=deadline,
                    keep_times=True,
                    request=request,
                )
            )

    await asyncio.gather(*(loop() for _ in range(clients)))
    tokens = sum(n for r in results for t, n in r.token_times if t <= deadline)
    return tokens, results, seconds


async def open_streams(
    target: Target,
    *,
    streams: int,
    ramp: float,
    cap: float,
    token_size: int,
    hold: asyncio.Event | None = None,
) -> list[StreamResult]:
    """Start ``streams`` streams spread evenly over ``ramp`` seconds and wait for them all
    (at most ``cap`` seconds from the first start)."""
    request = target.request()
    start = time.perf_counter()
    deadline = start + cap
    step = ramp / streams if streams else 0

    async def delayed(i: int) -> StreamResult:
        await asyncio.sleep(i * step)
        return await one_stream(target, token_size=token_size, deadline=deadline, request=request)

    tasks = [asyncio.ensure_future(delayed(i)) for i in range(streams)]
    if hold is not None:
        hold.set()
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` percentile (0-100, nearest rank) of ``values``; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]

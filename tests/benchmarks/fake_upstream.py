"""A fake OpenAI Chat Completions server for the benchmarks, written for speed.

Raw asyncio (no framework, no parser library): HTTP/1.1 with keep-alive, chunked bodies,
every token chunk encoded once per configuration. What it streams is set at run time by
``POST /_config?tokens=N&delay=D&size=T`` (so the relays under test never restart):

- ``tokens``: content chunks per answer; ``delay``: seconds between two chunks (the first
  goes out at once; ``0`` writes the whole answer as fast as the socket takes it);
- ``size``: characters per token (ASCII letters: no JSON escaping anywhere on the path).

Every answer ends like OpenAI's with ``include_usage``: a ``finish_reason`` chunk, a usage
chunk and ``data: [DONE]``. ``GET /_stats`` answers how many requests and open streams it
has seen. Run: ``python -m tests.benchmarks.fake_upstream --port 8100``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import string
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Config", "chunk_bytes", "main", "serve"]

HEAD_LIMIT = 64 * 1024


class Config:
    def __init__(self, tokens: int = 50, delay: float = 0.0, size: int = 4) -> None:
        self.tokens = tokens
        self.delay = delay
        self.size = size
        self.token_chunk = chunk_bytes(
            {"choices": [{"index": 0, "delta": {"content": token_text(size)}}]}
        )
        self.first_chunk = chunk_bytes(
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
        )
        tail = chunk_bytes({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        tail += chunk_bytes(
            {
                "choices": [],
                "usage": {
                    "prompt_tokens": 10,
                    "completion_tokens": tokens,
                    "total_tokens": 10 + tokens,
                },
            }
        )
        tail += _chunk(b"data: [DONE]\n\n")
        self.tail = tail + b"0\r\n\r\n"


def token_text(size: int) -> str:
    letters = string.ascii_letters
    return (letters * (size // len(letters) + 1))[:size]


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def chunk_bytes(fields: dict[str, Any]) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench",
        **fields,
    }
    return _chunk(b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n")


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


class Server:
    def __init__(self) -> None:
        self.config = Config()
        self.requests = 0
        self.open_streams = 0
        self.max_open_streams = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.split(b"\r\n")
                _method, target, _ = lines[0].split(b" ", 2)
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                path = urlsplit(target.decode())
                if path.path == "/_config":
                    query = dict(parse_qsl(path.query))
                    self.config = Config(
                        tokens=int(query.get("tokens", 50)),
                        delay=float(query.get("delay", 0)),
                        size=int(query.get("size", 4)),
                    )
                    self._reply(writer, b"{}")
                elif path.path == "/_stats":
                    stats = {
                        "requests": self.requests,
                        "open_streams": self.open_streams,
                        "max_open_streams": self.max_open_streams,
                    }
                    self.max_open_streams = self.open_streams
                    self._reply(writer, json.dumps(stats).encode())
                else:
                    self.requests += 1
                    await self._stream(writer, self.config)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _reply(self, writer: asyncio.StreamWriter, body: bytes) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body)
        )

    async def _stream(self, writer: asyncio.StreamWriter, config: Config) -> None:
        self.open_streams += 1
        self.max_open_streams = max(self.max_open_streams, self.open_streams)
        try:
            transport = writer.transport
            if config.delay <= 0:
                # As fast as the reader takes it: in slices, so a slow reader pushes back.
                piece = config.token_chunk * 16
                writer.write(STREAM_HEAD + config.first_chunk)
                left = config.tokens
                while left >= 16:
                    writer.write(piece)
                    left -= 16
                    if transport.get_write_buffer_size() > 256 * 1024:
                        await writer.drain()
                writer.write(config.token_chunk * left + config.tail)
                return
            writer.write(STREAM_HEAD + config.first_chunk + config.token_chunk)
            for _ in range(config.tokens - 1):
                await asyncio.sleep(config.delay)
                if transport.is_closing():
                    return
                writer.write(config.token_chunk)
            writer.write(config.tail)
        finally:
            self.open_streams -= 1


async def serve(host: str, port: int) -> None:
    server = Server()
    listener = await asyncio.start_server(server.handle, host, port, backlog=4096)
    async with listener:
        await listener.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    if os.environ.get("BENCH_UVLOOP") == "1":  # pragma: no cover - optional
        import uvloop  # type: ignore[import-not-found]

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

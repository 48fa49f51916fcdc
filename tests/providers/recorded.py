"""Feeding recorded upstream streams to a backend, and reading their sidecars.

A recorded stream is served byte for byte, either through an :class:`httpx.MockTransport` cut
into chunks of several sizes (one event or line per chunk, and 1, 7 and 64 bytes: every
awkward boundary inside UTF-8 sequences, ``\\r\\n`` pairs and JSON strings) or through the
real fake upstream server of :mod:`tests.upstream`. The backend's events are folded with
:func:`tests.providers.contract.summarize` and compared with the fixture's
``*.expected.json`` sidecar by each backend's test module, which states how the sidecar's
provider-native numbers map onto ours.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from django_llmstream.events import Event
from django_llmstream.providers.http import HTTPProvider
from tests.providers.contract import chat_request, collect_until_error
from tests.shared import shared_fixture
from tests.upstream import LOCAL_FIXTURES_DIR, split_events

__all__ = [
    "CHUNKINGS",
    "ChunkStream",
    "chunks_of",
    "expected_for",
    "fixture_path",
    "mock_transport",
    "rechunk",
    "run_chunks",
]

#: ``None``: one SSE event (or NDJSON line) per chunk; a number: chunks of that many bytes.
CHUNKINGS: list[int | None] = [None, 1, 7, 64]


def fixture_path(name: str) -> Path:
    local = LOCAL_FIXTURES_DIR / name
    return local if local.is_file() else shared_fixture(name)


def expected_for(name: str) -> dict[str, Any]:
    path = fixture_path(name)
    expected: dict[str, Any] = json.loads(
        path.with_name(path.name + ".expected.json").read_text("utf-8")
    )
    return expected


def rechunk(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def chunks_of(name: str, chunk_size: int | None) -> list[bytes]:
    data = fixture_path(name).read_bytes()
    if chunk_size is None:
        return split_events(data, ndjson=name.endswith(".ndjson"))
    return rechunk(data, chunk_size)


class ChunkStream(httpx.AsyncByteStream):
    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = list(chunks)
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def mock_transport(
    chunks: Sequence[bytes],
    *,
    content_type: str = "text/event-stream",
    seen: list[httpx.Request] | None = None,
) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(
            200, headers={"content-type": content_type}, stream=ChunkStream(chunks)
        )

    return httpx.MockTransport(handler)


async def run_chunks(
    make: Callable[..., HTTPProvider],
    chunks: Sequence[bytes],
    *,
    model: str = "fake-model",
    content_type: str = "text/event-stream",
) -> tuple[list[Event], BaseException | None]:
    """The events ``make(transport=...)``'s backend yields for ``chunks``, and its error."""
    provider = make(transport=mock_transport(chunks, content_type=content_type))
    try:
        return await collect_until_error(provider.stream(chat_request(model=model)))
    finally:
        await provider.aclose()

"""What both baseline relays share: the upstream request and reading its stream.

Written the way a typical bare proxy is: one shared httpx client per process (its pool
raised above httpx's default of 100 connections, which would silently cap the streams),
``aiter_lines`` over the upstream body, ``json.loads`` per chunk, one SSE ``delta`` event out
per upstream chunk with text, then ``done``. Nothing is persisted.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx

UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8100/v1")

_client: httpx.AsyncClient | None = None


def client() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(
            base_url=UPSTREAM,
            limits=httpx.Limits(max_connections=10_000, max_keepalive_connections=100),
            timeout=httpx.Timeout(10.0, read=60.0),
        )
    return _client


def upstream_body(prompt: str) -> dict[str, Any]:
    return {
        "model": "bench",
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def texts(prompt: str) -> AsyncIterator[str]:
    """The answer's text pieces, as the upstream streams them."""
    async with client().stream("POST", "/chat/completions", json=upstream_body(prompt)) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            chunk = json.loads(data)
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    yield content

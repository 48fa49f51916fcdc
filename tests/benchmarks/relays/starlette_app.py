"""Baseline 1: FastAPI + sse-starlette, a bare relay (``uvicorn ...relays.starlette_app:app``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from sse_starlette.sse import EventSourceResponse

from tests.benchmarks.relays.common import texts

app = FastAPI()


@app.post("/stream")
async def stream(request: Request) -> EventSourceResponse:
    prompt = (await request.json()).get("prompt", "")

    async def events() -> AsyncIterator[dict[str, str]]:
        async for text in texts(prompt):
            yield {"event": "delta", "data": json.dumps({"text": text}, separators=(",", ":"))}
        yield {"event": "done", "data": "{}"}

    return EventSourceResponse(events())

"""Baseline 2: a plain Django async view returning ``StreamingHttpResponse`` over httpx.

A one-file Django project (no database, no middleware): ``uvicorn ...relays.django_app:app``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
    )

from django.core.asgi import get_asgi_application
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from tests.benchmarks.relays.common import texts


@csrf_exempt
async def stream(request: HttpRequest) -> StreamingHttpResponse:
    prompt = json.loads(request.body or b"{}").get("prompt", "")

    async def events() -> AsyncIterator[bytes]:
        async for text in texts(prompt):
            data = json.dumps({"text": text}, separators=(",", ":"))
            yield f"event: delta\ndata: {data}\n\n".encode()
        yield b"event: done\ndata: {}\n\n"

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    return response


urlpatterns = [path("stream", stream)]

app = get_asgi_application()

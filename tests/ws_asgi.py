"""The test project with the WebSocket consumer: what tests/test_consumers.py serves over a
real socket (uvicorn with its websockets implementation)."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from django_llmstream.consumers import LLMStreamConsumer
from tests.asgi import application as http_application

websocket_application = AllowedHostsOriginValidator(
    AuthMiddlewareStack(URLRouter([path("llmstream/ws/", LLMStreamConsumer.as_asgi())]))
)

application = ProtocolTypeRouter({"http": http_application, "websocket": websocket_application})

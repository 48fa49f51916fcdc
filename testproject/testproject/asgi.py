"""ASGI entry point of the demo site: ``uvicorn testproject.asgi:application``.

Run from ``testproject/``. In DEBUG (or with DJANGO_SERVE_STATIC=on) the app serves its own
static files, so uvicorn alone is enough for the chat page.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

from django_llmstream.asgi import with_lifespan

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

django_application = get_asgi_application()

if getattr(settings, "SERVE_STATIC", settings.DEBUG):
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_application = ASGIStaticFilesHandler(django_application)

# example: websocket start
# WebSocket: the consumer at /llmstream/ws/ when Channels is installed (pip install
# "django-llmstream[channels]"); every other request goes to Django as before.
try:
    from channels.auth import AuthMiddlewareStack
    from channels.routing import ProtocolTypeRouter, URLRouter
    from channels.security.websocket import AllowedHostsOriginValidator
except ImportError:
    pass
else:
    from django.urls import path

    from django_llmstream.consumers import LLMStreamConsumer

    django_application = ProtocolTypeRouter(
        {
            "http": django_application,
            # The session and user from the handshake's cookies; only pages of this site
            # (ALLOWED_HOSTS) may open a socket with them.
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter([path("llmstream/ws/", LLMStreamConsumer.as_asgi())]))
            ),
        }
    )
# example: websocket end

# At shutdown, running answers get LLMSTREAM["SHUTDOWN_DRAIN_SECONDS"] to finish; the rest are
# saved as "interrupted" and their streams closed, so the server exits promptly.
application = with_lifespan(django_application)

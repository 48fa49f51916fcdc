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

# At shutdown, running answers get LLMSTREAM["SHUTDOWN_DRAIN_SECONDS"] to finish; the rest are
# saved as "interrupted" and their streams closed, so the server exits promptly.
application = with_lifespan(django_application)

"""The test project's ASGI application, served by uvicorn in the end-to-end tests."""

from __future__ import annotations

import os

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

from django_llmstream.asgi import with_lifespan

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

# Static files too (llmstream.js, htmx from django-htmx): the browser tests load pages here.
application = with_lifespan(ASGIStaticFilesHandler(get_asgi_application()))

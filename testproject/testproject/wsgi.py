"""WSGI entry point of the demo site (e.g. ``gunicorn testproject.wsgi``).

Under WSGI each stream holds a worker thread for its whole life and the cross-request
features (stop from another request, resume on another worker) are limited; prefer ASGI.
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")

application = get_wsgi_application()

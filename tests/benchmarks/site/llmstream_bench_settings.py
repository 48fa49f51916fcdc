"""The demo site as the benchmark serves it: the settings of ``testproject``, with only the
middleware django-llmstream's endpoints use (sessions, for visitors' ownership, and
authentication) and its log at WARNING, as uvicorn's is for every server measured.

The benchmark's ``ours_demo`` server keeps the demo's whole stack (GZip, security, common,
CSRF, messages, clickjacking as well) to show what those cost: each of Django's middleware
classes runs its sync hooks in a thread under ASGI, ~140 µs of CPU per hop on the development
machine. Kept out of ``tests`` packages (the directory itself is on ``PYTHONPATH``) so that a
``--before`` copy of the project, which may not have this file, is served with these settings
too.
"""

from testproject.settings import *  # noqa: F403
from testproject.settings import LOGGING

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

LOGGING = {
    **LOGGING,
    "loggers": {
        name: {**logger, "level": "WARNING"} for name, logger in LOGGING["loggers"].items()
    },
}

# The admin wants the messages middleware; the benchmark never opens the admin.
SILENCED_SYSTEM_CHECKS = ["admin.E409"]

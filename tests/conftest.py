from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from django_llmstream.writer import close_db_connection

# tests.upstream: the fake provider servers; tests.live: the uvicorn server and its client.
# django_llmstream.pytest_plugin: the test kit's fixtures (llmstream_script, llmstream_settings);
# registered here, not by its entry point (see addopts in pyproject.toml).
pytest_plugins = ["tests.upstream", "tests.live", "django_llmstream.pytest_plugin"]


@pytest.fixture(scope="session", autouse=True)
def _close_background_connections(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Close the connections that threads other than the main one opened (the writer's, and
    asgiref's shared thread used by async ORM calls in tests), so PostgreSQL can drop the test
    database at the end."""
    yield
    with django_db_blocker.unblock():
        close_db_connection()
        asyncio.run(sync_to_async(connections.close_all)())

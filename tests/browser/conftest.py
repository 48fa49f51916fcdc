"""Headless Chromium (Debian's ``chromium`` package) driven by Playwright's Python API.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (or
``$LLMSTREAM_CHROMIUM``). Without that binary, or without the playwright package, the
browser tests are skipped with the reason. Pages are served by the real uvicorn server of
``tests/live.py``; screenshots go to ``$LLMSTREAM_SCREENSHOTS`` (default: the temp dir).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.db import connections

from tests.e2e.conftest import configure  # noqa: F401 - a fixture, used by the tests
from tests.live import LiveServer
from tests.upstream import FakeUpstream

T = TypeVar("T")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    configured = os.environ.get("LLMSTREAM_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
def upstream(fake_upstream: FakeUpstream) -> FakeUpstream:
    """The fake upstream, reset for this test: a sync twin of ``tests.upstream.upstream``
    (an async fixture cannot run while Playwright's sync API holds this thread's loop)."""
    fake_upstream.reset()
    return fake_upstream


def in_thread(function: Callable[[], T]) -> T:
    """Run ``function`` (ORM queries) in a thread of its own: Playwright's sync API keeps an
    event loop running in the test's thread, where Django refuses synchronous queries."""

    def run() -> T:
        try:
            return function()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


SCREENSHOTS = Path(os.environ.get("LLMSTREAM_SCREENSHOTS", tempfile.gettempdir()))


@pytest.fixture
def browser(transactional_db: None) -> Iterator[Any]:
    """Chromium for one test. Not shared: Playwright's sync API marks an event loop as running
    in this thread while it is started, and the database teardown that follows each test
    must not see one."""
    executable = chromium_path()
    if executable is None:
        pytest.skip("browser tests need Chromium: apt-get install chromium (.ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip('browser tests need playwright: pip install -e ".[test]"')
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def page(
    transactional_db: None,
    uvicorn_server: LiveServer,
    configure: Any,  # noqa: F811 - the fixture imported above
    browser: Any,
) -> Iterator[Any]:
    """A fresh browser context (cookies, sessionStorage) on the live server; the provider
    ``openai`` points at the fake upstream (``configure(**overrides)`` to change settings).
    JavaScript errors of the page fail the test."""
    context = browser.new_context(
        base_url=uvicorn_server.url, viewport={"width": 1100, "height": 800}
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def screenshot(page: Any, name: str) -> Path:
    path = SCREENSHOTS / f"llmstream-{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path

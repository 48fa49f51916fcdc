"""pytest fixtures of django-llmstream's test kit (:mod:`django_llmstream.testing`).

Registered through the ``pytest11`` entry point when the package is installed, so a project's
tests can use them with no import. Django is only imported when a fixture runs, so the
plugin costs nothing in test runs that do not use it.

- ``llmstream_script(*steps, **options)`` — :func:`~django_llmstream.testing.script_provider`
  for the rest of the test: the scripted provider becomes the default; returns its handle.
- ``llmstream_settings(**keys)`` — override keys of ``LLMSTREAM`` for the rest of the test,
  the others kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from django_llmstream.testing import ScriptHandle


@pytest.fixture
def _llmstream_overrides() -> Iterator[list[Callable[[], None]]]:
    """Undo the fixtures' overrides in the reverse order of their calls (override_settings
    must be unwound last in, first out, whichever fixture made them)."""
    undo: list[Callable[[], None]] = []
    yield undo
    while undo:
        undo.pop()()


@pytest.fixture
def llmstream_script(
    _llmstream_overrides: list[Callable[[], None]],
) -> Callable[..., ScriptHandle]:
    """Play a script as the default provider for the rest of the test::

    def test_answer(client, llmstream_script):
        llmstream_script("Hello", " world")
        assert run_turn(client, "Hi").text == "Hello world"
    """
    from django_llmstream.testing import script_provider

    def apply(*steps: Any, **options: Any) -> ScriptHandle:
        handle = script_provider(*steps, **options)
        handle.__enter__()
        _llmstream_overrides.append(lambda: handle.__exit__(None, None, None))
        return handle

    return apply


@pytest.fixture
def llmstream_settings(
    _llmstream_overrides: list[Callable[[], None]],
) -> Callable[..., None]:
    """Override keys of ``LLMSTREAM`` (the others kept) for the rest of the test::

    def test_limit(client, llmstream_settings):
        llmstream_settings(MAX_PROMPT_CHARS=10)
    """
    from django.conf import settings
    from django.test import override_settings

    def apply(**keys: Any) -> None:
        current = dict(getattr(settings, "LLMSTREAM", None) or {})
        override = override_settings(LLMSTREAM={**current, **keys})
        override.enable()
        _llmstream_overrides.append(override.disable)

    return apply

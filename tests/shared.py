"""Where the shared, read-only test fixtures live: ``../shared`` beside the clone.

The recorded upstream streams (``fixtures/*.sse``, ``*.ndjson`` with their
``*.expected.json`` sidecars, see ``fixtures/SOURCES.md``) are not copied into this
repository; CI checks them out beside it. Tests that need one call :func:`shared_fixture`,
which skips the test when the directory is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["FIXTURES_DIR", "REPO_ROOT", "SHARED_DIR", "shared_fixture", "shared_fixtures"]

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
FIXTURES_DIR = SHARED_DIR / "fixtures"

_MISSING = "../shared/fixtures not found: CI provides it beside the clone"


def shared_fixture(name: str) -> Path:
    """The path of shared fixture ``name``; skips the calling test if it is not there."""
    path = FIXTURES_DIR / name
    if not path.is_file():
        pytest.skip(_MISSING if not FIXTURES_DIR.is_dir() else f"shared fixture {name} not found")
    return path


def shared_fixtures(pattern: str) -> list[str]:
    """Names of the shared fixtures matching ``pattern`` (e.g. ``"openai_chat_*.sse"``), for
    ``parametrize``. When the directory is absent it is ``[pattern]``, so that the one test
    that results calls :func:`shared_fixture` and is skipped with the reason."""
    if not FIXTURES_DIR.is_dir():
        return [pattern]
    return sorted(path.name for path in FIXTURES_DIR.glob(pattern) if path.is_file())

"""django-llmstream: stream LLM answers from Django over Server-Sent Events.

The Python API is :func:`stream`, with :func:`lines`, :func:`sentences` and
:func:`json_values` to read it by units (:mod:`django_llmstream.structured`); everything else
is reached through Django (views, models, admin) or its own module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "json_values", "lines", "sentences", "stream"]

# Pure text helpers (no Django): read a stream by lines, sentences or JSON values.
from django_llmstream.structured import json_values, lines, sentences

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Mapping

    from django_llmstream.events import Event


def stream(
    messages: Iterable[Mapping[str, Any]] | str,
    *,
    provider: str | None = None,
    model: str | None = None,
    **params: Any,
) -> AsyncIterator[Event]:
    """Stream one answer as normalized events, outside any view.

    ``messages`` is a list of ``{"role", "content"}`` dicts (roles ``system``, ``user``,
    ``assistant``) or a single prompt string. ``provider`` is an alias of
    ``LLMSTREAM["PROVIDERS"]`` (default: the default provider), ``model`` one of its models.
    Nothing is stored: use the views for persisted turns.
    """
    from django_llmstream.api import stream_events

    return stream_events(messages, provider=provider, model=model, params=params)

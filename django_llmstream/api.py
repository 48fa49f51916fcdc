"""The Python API behind :func:`django_llmstream.stream`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from django_llmstream.context import fit_context
from django_llmstream.events import Event
from django_llmstream.exceptions import InvalidProviderConfig
from django_llmstream.providers import ChatMessage, ChatRequest, get_provider
from django_llmstream.text import clean_text

__all__ = ["stream_events"]


async def stream_events(
    messages: Iterable[Mapping[str, Any]] | str,
    *,
    provider: str | None = None,
    model: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> AsyncIterator[Event]:
    backend = get_provider(provider)
    chosen = model or backend.default_model
    if not chosen:
        raise InvalidProviderConfig(
            f"Provider {backend.alias!r} has no default model; pass model=."
        )
    chat: tuple[ChatMessage, ...]
    if isinstance(messages, str):
        chat = (ChatMessage("user", clean_text(messages)),)
    else:
        chat = tuple(
            ChatMessage(str(m["role"]), clean_text(str(m.get("content", "")))) for m in messages
        )
    # The oldest turns beyond the provider's CONTEXT_BUDGET are left out, as in the views.
    chat = tuple(fit_context(chat, backend.context_budget))
    request = ChatRequest(messages=chat, model=chosen, params=dict(params or {}))
    stream = backend.stream(request)
    try:
        async for event in stream:
            yield event
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()

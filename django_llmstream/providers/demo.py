"""An offline provider: deterministic answers at a visible pace, no network, no key.

It is always there (the default ``PROVIDERS``), so a new site streams out of the box and the
test suite can run turns without an upstream. The answer depends only on the last user
message, the pace on ``OPTIONS["DELAY"]``.

``OPTIONS``: ``DELAY`` seconds before each token (default ``0.03``; ``0`` for tests),
``REPLY`` a fixed answer instead of the generated one.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

from django.core import checks

from django_llmstream.events import Event, Finish, TextDelta, Usage
from django_llmstream.providers.base import BaseProvider, ChatMessage, ChatRequest

__all__ = ["DemoProvider", "demo_reply", "split_tokens"]

DEFAULT_DELAY = 0.03

_OPENINGS = (
    "Hello! Thanks for your message.",
    "Hi there, and thanks for trying the demo.",
    "Good question, and a nice way to start.",
)

# A "token": a run of non-space characters with the whitespace after it, so that the pieces
# concatenate to the reply exactly; the alternative catches leading whitespace.
_TOKEN = re.compile(r"\S+\s*|\s+")


def split_tokens(text: str) -> list[str]:
    """``text`` cut into word pieces with their spaces: ``"".join(...) == text``."""
    return _TOKEN.findall(text)


def demo_reply(prompt: str) -> str:
    """The demo's answer to ``prompt`` (deterministic, across processes too)."""
    words = prompt.split()
    opening = _OPENINGS[zlib.crc32(prompt.encode("utf-8", "surrogatepass")) % len(_OPENINGS)]
    if words:
        quote = " ".join(words[:8]) + (" …" if len(words) > 8 else "")
        said = f"You wrote: “{quote}”."
    else:
        said = "Your message was empty."
    return (
        f"{opening} {said}\n\n"
        "This answer comes from the **offline demo provider** of django-llmstream: it streams "
        "a canned reply word by word without calling any language model, so you can try the "
        "chat page, stop a turn, reload to resume it, and see the transcript saved in the "
        "admin.\n\n"
        "To talk to a real model, set `OPENAI_BASE_URL` to any OpenAI-compatible server (for "
        "example `http://127.0.0.1:11434/v1` for Ollama) and, for api.openai.com, "
        "`OPENAI_API_KEY`; then restart the server and choose the `openai` provider."
    )


def _last_user_message(messages: Sequence[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    return ""


class DemoProvider(BaseProvider):
    """Offline, deterministic answers; see the module docstring."""

    default_base_url: ClassVar[str | None] = "demo://offline"
    default_models: ClassVar[Sequence[str]] = ("demo",)
    option_names: ClassVar[frozenset[str]] = frozenset({"DELAY", "REPLY"})

    @property
    def delay(self) -> float:
        value = self.options.get("DELAY", DEFAULT_DELAY)
        return max(float(value), 0.0) if _is_number(value) else DEFAULT_DELAY

    def check(self) -> list[checks.CheckMessage]:
        errors = super().check()
        where = f'LLMSTREAM["PROVIDERS"]["{self.alias}"]["OPTIONS"]'
        delay = self.options.get("DELAY", DEFAULT_DELAY)
        if not _is_number(delay) or delay < 0:
            errors.append(
                checks.Error(
                    f'{where}["DELAY"] = {delay!r} is not a number of seconds >= 0.',
                    hint=f"Use e.g. {DEFAULT_DELAY} (the default), or 0 in tests.",
                    id="llmstream.E011",
                )
            )
        reply = self.options.get("REPLY")
        if reply is not None and not isinstance(reply, str):
            errors.append(
                checks.Error(
                    f'{where}["REPLY"] must be a string.',
                    id="llmstream.E011",
                )
            )
        return errors

    def reply(self, request: ChatRequest) -> str:
        """The full answer to ``request`` (before any ``max_tokens`` cut)."""
        fixed = self.options.get("REPLY")
        if isinstance(fixed, str):
            return fixed
        return demo_reply(_last_user_message(request.messages))

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        tokens = split_tokens(self.reply(request))
        finish = "stop"
        limit = request.params.get("max_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < len(tokens):
            tokens = tokens[:limit]
            finish = "length"
        delay = self.delay
        for token in tokens:
            # Also with DELAY=0: a suspension point per token keeps cancellation prompt.
            await asyncio.sleep(delay)
            yield TextDelta(token)
        yield Usage(
            input_tokens=sum(len(message.content.split()) for message in request.messages),
            output_tokens=len(tokens),
            cached_input_tokens=0,
            reasoning_tokens=0,
        )
        yield Finish(finish, finish)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

"""Normalized events: what every provider backend yields and what `stream()` gives callers.

Each provider speaks its own wire format; backends translate it into these few frozen
dataclasses so that the generation, the broker, the writer and the SSE views never need to
know which provider produced a turn. They mirror the SSE events of the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FINISH_REASONS",
    "Event",
    "Finish",
    "ReasoningDelta",
    "TextDelta",
    "ToolCallDelta",
    "Usage",
]

#: The finish reasons of the public protocol; providers map their own values onto these.
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "cancelled"})


@dataclass(frozen=True, slots=True)
class TextDelta:
    """The next piece of the answer's visible text."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """The next piece of thinking text, where the provider streams it."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call.

    ``index`` numbers the calls of one turn from 0. ``id`` and ``name`` come with a call's first
    piece (``None`` afterwards); ``arguments`` is the next piece of the JSON arguments text.
    """

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the provider reported them; ``None`` where it did not (never guessed).

    ``input_tokens`` includes cached input tokens and ``output_tokens`` includes reasoning
    tokens, whatever the provider's own convention: backends convert.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }

    def merged(self, other: Usage) -> Usage:
        """Combine two reports: a value present in ``other`` wins (usage is cumulative)."""
        return Usage(
            input_tokens=_pick(other.input_tokens, self.input_tokens),
            output_tokens=_pick(other.output_tokens, self.output_tokens),
            cached_input_tokens=_pick(other.cached_input_tokens, self.cached_input_tokens),
            reasoning_tokens=_pick(other.reasoning_tokens, self.reasoning_tokens),
        )


def _pick(new: int | None, old: int | None) -> int | None:
    return old if new is None else new


@dataclass(frozen=True, slots=True)
class Finish:
    """The upstream ended the answer. ``reason`` is one of :data:`FINISH_REASONS`; ``raw`` is
    the provider's own value, kept for debugging."""

    reason: str = "stop"
    raw: str | None = None


Event = TextDelta | ReasoningDelta | ToolCallDelta | Usage | Finish

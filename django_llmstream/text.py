"""Text as we store and stream it: PostgreSQL cannot hold U+0000 and UTF-8 cannot encode lone
surrogates, so both are mended the same way everywhere (prompts, answers, replays)."""

from __future__ import annotations

import re

__all__ = ["StreamTextCleaner", "clean_text"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` without U+0000, surrogate pairs joined, lone surrogates as U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if text.isascii() or not _SURROGATE.search(text):
        return text
    # UTF-16 round trip: a high+low pair becomes its character, a lone half U+FFFD.
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class StreamTextCleaner:
    """:func:`clean_text` for a stream of pieces: a high surrogate at the end of one piece may
    pair with a low surrogate at the start of the next, so it is held back until then."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = ""

    def feed(self, piece: str) -> str:
        if self._held:
            piece, self._held = self._held + piece, ""
        if piece and "\ud800" <= piece[-1] <= "\udbff":
            piece, self._held = piece[:-1], piece[-1]
        return clean_text(piece)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return clean_text(held)

"""Structured reading of a streaming answer: by complete lines, sentences or JSON values.

An answer arrives in pieces that cut anywhere — inside a word, a line, a JSON string. The
splitters here buffer just enough to hand out whole units as soon as each is complete:

- :class:`LineSplitter` — complete lines (``\\n``, ``\\r\\n`` or ``\\r``), without the line
  break; the last line, unterminated, when the stream ends;
- :class:`SentenceSplitter` — sentences, ended by ``.``, ``!``, ``?``, ``…`` (or their CJK
  forms) followed by whitespace, or by a line break; stripped, empty ones skipped;
- :class:`JSONValueSplitter` — top-level JSON values as they complete: the elements of a
  top-level array one by one (``[{...}, {...}]`` gives each object as soon as its ``}``
  arrives), or each top-level object of NDJSON / concatenated JSON.

They are pure (no I/O, like :class:`~django_llmstream.sse.SSEParser`): ``feed(text)`` returns
the units completed by ``text``, ``close()`` those the end of the stream completes. The async
helpers :func:`lines`, :func:`sentences` and :func:`json_values` wrap them around any async
iterable of text or of :func:`django_llmstream.stream` events (only
:class:`~django_llmstream.events.TextDelta` text is read)::

    async for item in json_values(stream("List three colours as a JSON array of objects.")):
        print(item["name"])

``llmstream.js`` has the same splitters for the browser (``lines(turn)``, ``sentences(turn)``,
``jsonValues(turn)``); both are tested on the same cases.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from typing import Any, Protocol

from django_llmstream.events import TextDelta

__all__ = [
    "JSONStreamError",
    "JSONValueSplitter",
    "LineSplitter",
    "SentenceSplitter",
    "json_values",
    "lines",
    "sentences",
]


class JSONStreamError(ValueError):
    """A value of the stream is not valid JSON (``position`` counts characters from the
    start of the stream)."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at character {position})")
        self.position = position


class Splitter(Protocol):
    def feed(self, text: str) -> list[Any]: ...

    def close(self) -> list[Any]: ...


class LineSplitter:
    """Complete lines of a text that arrives in pieces (see the module docstring)."""

    def __init__(self) -> None:
        self._buffer = ""
        self._skip_lf = False  # the previous piece ended with CR: a leading LF belongs to it

    def feed(self, text: str) -> list[str]:
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        buffer = self._buffer + text
        out: list[str] = []
        start = 0
        length = len(buffer)
        # Only the new text can hold a line break: the kept buffer has none.
        index = len(self._buffer)
        while index < length:
            char = buffer[index]
            if char == "\n" or char == "\r":
                out.append(buffer[start:index])
                if char == "\r":
                    if index + 1 < length:
                        if buffer[index + 1] == "\n":
                            index += 1
                    else:
                        self._skip_lf = True
                start = index + 1
            index += 1
        self._buffer = buffer[start:]
        return out

    def close(self) -> list[str]:
        rest, self._buffer = self._buffer, ""
        return [rest] if rest else []


# Full stop, exclamation and question marks, ellipsis; and the CJK (fullwidth) three.
_CJK_ENDS = frozenset("\u3002\uff01\uff1f")
_SENTENCE_ENDS = frozenset(".!?\u2026") | _CJK_ENDS
# Closing quotes and brackets stay with the sentence they end: `He said "Hi."` is one.
_CLOSERS = frozenset("\"'\u201d\u2019\u00bb)]}")


class SentenceSplitter:
    """Sentences of a text that arrives in pieces (see the module docstring).

    A rule, not a language model: a sentence ends at ``.``, ``!``, ``?`` or ``…`` (or
    their CJK forms), with any closing quotes or brackets after it, followed by whitespace; and at
    every line break (list items, headings). ``3.14`` and ``example.com`` do not end one;
    abbreviations such as ``e.g.`` followed by a space do.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._scanned = 0

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        out: list[str] = []
        buffer = self._buffer
        start = 0
        index = self._scanned
        length = len(buffer)
        while index < length:
            char = buffer[index]
            if char in "\r\n":
                self._emit(buffer[start:index], out)
                start = index + 1
            elif char in _SENTENCE_ENDS:
                end = index + 1
                while end < length and (buffer[end] in _SENTENCE_ENDS or buffer[end] in _CLOSERS):
                    end += 1
                if end == length:
                    break  # the next piece tells whether whitespace follows
                if buffer[end].isspace() or char in _CJK_ENDS:
                    self._emit(buffer[start:end], out)
                    start = end
                index = end
                continue
            index += 1
        self._buffer = buffer[start:]
        self._scanned = min(index, length) - start
        return out

    @staticmethod
    def _emit(sentence: str, out: list[str]) -> None:
        sentence = sentence.strip()
        if sentence:
            out.append(sentence)

    def close(self) -> list[str]:
        out: list[str] = []
        self._emit(self._buffer, out)
        self._buffer = ""
        self._scanned = 0
        return out


class JSONValueSplitter:
    """Top-level JSON values of a text that arrives in pieces (see the module docstring).

    Between values, anything that does not open an object or an array is skipped: whitespace,
    commas, the lines of a Markdown code fence, a sentence of prose before the JSON. A
    top-level array is unpacked: each of its elements (of any JSON type) is handed out as soon
    as it is complete — an object or array element at its closing bracket, a number, string,
    ``true``, ``false`` or ``null`` at the ``,`` or ``]`` after it. A top-level object is handed
    out whole at its closing brace, so NDJSON gives one object per line. An element or value
    that is not valid JSON raises :class:`JSONStreamError`, and so does ``close()`` when the
    stream ends inside a value.
    """

    def __init__(self) -> None:
        self._value: list[str] = []  # the text of the value or element being read
        self._depth = 0  # bracket depth; 1 directly inside an unpacked top-level array
        self._unpack = False  # reading the elements of a top-level array
        self._after_element = False  # an element ended at its bracket: "," or "]" comes next
        self._in_string = False
        self._escape = False
        self._position = 0  # characters consumed so far, for error messages
        self._value_start = 0

    def feed(self, text: str) -> list[Any]:
        out: list[Any] = []
        for char in text:
            self._step(char, out)
            self._position += 1
        return out

    def _step(self, char: str, out: list[Any]) -> None:
        if self._in_string:
            self._value.append(char)
            if self._escape:
                self._escape = False
            elif char == "\\":
                self._escape = True
            elif char == '"':
                self._in_string = False
            return
        if self._depth == 0:
            if char == "[":
                self._depth, self._unpack, self._after_element = 1, True, False
                self._value = []
            elif char == "{":
                self._depth, self._unpack = 1, False
                self._value = [char]
                self._value_start = self._position
            return  # anything else between values is skipped
        if self._unpack and self._depth == 1:
            if char == "," or char == "]":
                if self._after_element:
                    self._after_element = False
                elif "".join(self._value).strip():
                    out.append(self._decode())
                self._value = []  # an empty element ("[]", a trailing comma) gives nothing
                if char == "]":
                    self._depth, self._unpack = 0, False
                return
            if self._after_element:
                if char.isspace():
                    return
                raise JSONStreamError("Expected ',' or ']' after an array element", self._position)
            if not self._value:
                if char.isspace():
                    return
                self._value_start = self._position
        self._value.append(char)
        if char == '"':
            self._in_string = True
        elif char == "[" or char == "{":
            self._depth += 1
        elif char == "]" or char == "}":
            self._depth -= 1
            if self._depth == 0:
                out.append(self._decode())  # a top-level object
            elif self._unpack and self._depth == 1:
                out.append(self._decode())  # an object or array element
                self._after_element = True

    def _decode(self) -> Any:
        text = "".join(self._value).strip()
        self._value = []
        try:
            return json.loads(text)
        except ValueError as exc:
            raise JSONStreamError(f"Not valid JSON: {text[:60]!r}", self._value_start) from exc

    def close(self) -> list[Any]:
        if self._depth or self._in_string:
            raise JSONStreamError("The stream ended inside a JSON value", self._position)
        return []


async def _texts(source: AsyncIterable[Any]) -> AsyncGenerator[str, None]:
    async for item in source:
        if isinstance(item, str):
            yield item
        elif isinstance(item, TextDelta):
            yield item.text


async def _split(splitter: Splitter, source: AsyncIterable[Any]) -> AsyncIterator[Any]:
    texts = _texts(source)
    try:
        async for text in texts:
            for unit in splitter.feed(text):
                yield unit
        for unit in splitter.close():
            yield unit
    finally:
        # Closing early (a break) closes the source too: for stream() that closes the
        # upstream connection at once.
        await texts.aclose()
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


def lines(source: AsyncIterable[Any]) -> AsyncIterator[str]:
    """The complete lines of ``source`` (text pieces, or :func:`~django_llmstream.stream`
    events), each as soon as its line break arrives."""
    return _split(LineSplitter(), source)


def sentences(source: AsyncIterable[Any]) -> AsyncIterator[str]:
    """The sentences of ``source`` (see :class:`SentenceSplitter`), each as soon as it ends."""
    return _split(SentenceSplitter(), source)


def json_values(source: AsyncIterable[Any]) -> AsyncIterator[Any]:
    """The top-level JSON values of ``source`` (see :class:`JSONValueSplitter`): the elements
    of a top-level array, or each value of NDJSON, each as soon as it is complete."""
    return _split(JSONValueSplitter(), source)

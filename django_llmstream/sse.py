"""Server-Sent Events: a WHATWG-exact incremental parser and a framing encoder.

Both directions live here because they must agree byte for byte. The parser reads the
providers' upstream streams (OpenAI, Anthropic, Gemini …) and the encoder writes our own
stream to browsers, so a value that survives ``encode`` must come back unchanged from
``SSEParser`` (and from a browser's ``EventSource``).

The parser follows WHATWG HTML, section 9.2.6 "Interpreting an event stream"
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
rather than what is "usually" sent: upstreams and proxies re-chunk bytes anywhere (inside a
UTF-8 sequence, between the CR and LF of a CRLF, inside the BOM), and a parser that is right
only for well-behaved chunking loses or duplicates events in production.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SSEParser", "ServerSentEvent", "encode"]

# A ``retry:`` value is "only ASCII digits" of any length (9.2.6). Python refuses to convert
# very long digit strings (sys.int_max_str_digits, at least 640 whatever the interpreter's
# setting), so a value with more significant digits than that - a reconnection time of
# more than 10**640 ms, which no server means - is ignored, deterministically.
_MAX_RETRY_DIGITS = 640

_utf8_decoder = codecs.getincrementaldecoder("utf-8")

# json.dumps() builds a new JSONEncoder whenever it gets options (half the cost of a small
# event), so encode() keeps one. Compact separators and ensure_ascii=False give the
# shortest text; json escapes control characters, so the output has no CR or LF.
_json_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event, as an ``EventSource`` would see it (9.2.6, "dispatch the event").

    ``id`` is the last event ID in effect when the event was dispatched: the spec keeps the
    last-event-ID buffer across events, so an event without an ``id:`` line carries the
    previous one (``""`` if none was ever set). ``retry`` is the latest valid ``retry:``
    value seen in the stream so far, or ``None``.
    """

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None

    def json(self) -> Any:
        """Return ``data`` parsed as JSON (raises ``json.JSONDecodeError`` if it is not)."""
        return json.loads(self.data)


class SSEParser:
    """Incremental, pure (no I/O) parser for ``text/event-stream`` bytes.

    Feed the body bytes in whatever chunks they arrive; each ``feed`` returns the events
    completed by that chunk. The result does not depend on the chunking. Implements WHATWG
    HTML 9.2.6 "Interpreting an event stream" exactly:

    - always UTF-8, invalid sequences become U+FFFD (a multibyte character may be split
      across chunks);
    - one U+FEFF BOM is stripped at the start of the stream only;
    - lines end at CR, LF or CRLF, also when the CR and the LF arrive in different chunks;
    - a line starting with ``:`` is a comment; otherwise the field name runs up to the first
      ``:`` and one leading space of the value is dropped; a line without ``:`` is a field
      with an empty value;
    - ``data`` appends to the data buffer, ``event`` sets the type, ``id`` sets the last
      event ID unless the value contains U+0000, ``retry`` applies only when the value is
      ASCII digits; other fields are ignored;
    - a blank line dispatches; with an empty data buffer nothing is dispatched (but the
      event type is reset and an ``id`` takes effect);
    - at the end of the stream (``close``) an event without its closing blank line, and a
      last line without its line end, are discarded.

    ``last_event_id`` is the last event ID in effect (what a reconnecting client sends as
    ``Last-Event-ID``); ``retry`` is the reconnection time in milliseconds the server last
    asked for, or ``None``.
    """

    __slots__ = (
        "_closed",
        "_data",
        "_decoder",
        "_event_type",
        "_id_buffer",
        "_partial",
        "_pending_cr",
        "_started",
        "last_event_id",
        "retry",
    )

    def __init__(self) -> None:
        self._decoder = _utf8_decoder(errors="replace")
        self._started = False  # whether the first character (a possible BOM) was seen
        self._pending_cr = False  # the last chunk ended with CR: skip an LF that follows
        self._partial: list[str] = []  # pieces of the current line (no CR/LF in them)
        self._data: list[str] = []  # data buffer, one item per data line
        self._event_type = ""
        self._id_buffer = ""
        self._closed = False
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Parse the next chunk of the stream and return the events it completes."""
        if self._closed:
            raise RuntimeError("SSEParser.feed() called after close()")
        text = self._decoder.decode(data)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
                if not text:
                    return []
        if self._pending_cr:
            # The CR that ended the previous chunk already ended its line; an LF right
            # after it belongs to the same CRLF and must not count as a (blank) line.
            self._pending_cr = False
            if text[0] == "\n":
                text = text[1:]
                if not text:
                    return []
        if "\r" in text:
            # CR and CRLF become LF so that one str.split finds every line end. Only the
            # new text is rewritten: the buffered partial line holds no CR or LF.
            self._pending_cr = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        elif "\n" not in text:
            # No line end yet: keep the piece and join once, so a long line arriving in
            # many chunks costs linear, not quadratic, time.
            self._partial.append(text)
            return []
        if self._partial:
            self._partial.append(text)
            text = "".join(self._partial)
            self._partial = []
        lines = text.split("\n")
        tail = lines.pop()
        if tail:
            self._partial.append(tail)
        return self._process(lines)

    def close(self) -> list[ServerSentEvent]:
        """End the stream. Always returns ``[]``.

        9.2.6: "Once the end of the file is reached, any pending data must be discarded. (If
        the file ends in the middle of an event, before the final empty line, the incomplete
        event is not dispatched.)" A final line without its line end is not a line at all,
        so it is not processed either. ``last_event_id`` and ``retry`` keep their values
        (they are what a reconnecting client needs); the parser accepts no more input.
        """
        self._closed = True
        self._partial = []
        self._data = []
        self._event_type = ""
        self._id_buffer = self.last_event_id
        self._decoder.reset()
        return []

    def _process(self, lines: list[str]) -> list[ServerSentEvent]:
        # The state lives in locals for the loop: attribute access per line is measurable.
        events: list[ServerSentEvent] = []
        data = self._data
        event_type = self._event_type
        id_buffer = self._id_buffer
        retry = self.retry
        for line in lines:
            if not line:
                # Blank line: dispatch (9.2.6 "dispatch the event"). Step 1 sets the last
                # event ID even when step 2 then returns for an empty data buffer.
                self.last_event_id = id_buffer
                if data:
                    # Joining with LF is the spec's "append value + LF" followed by
                    # "remove one trailing LF".
                    events.append(
                        ServerSentEvent(event_type or "message", "\n".join(data), id_buffer, retry)
                    )
                    data = []
                event_type = ""
                continue
            # A comment line (starting with ":") gives the empty field name, which matches
            # no field below; a line without ":" is a field whose value is empty.
            field, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if field == "data":
                data.append(value)
            elif field == "event":
                event_type = value
            elif field == "id":
                if "\0" not in value:
                    id_buffer = value
            elif field == "retry" and value.isascii() and value.isdigit():
                # isdigit() alone would also accept non-ASCII digits such as superscripts.
                digits = value.lstrip("0")
                if len(digits) <= _MAX_RETRY_DIGITS:
                    retry = int(digits or "0")
                    self.retry = retry
        self._data = data
        self._event_type = event_type
        self._id_buffer = id_buffer
        return events


def encode(
    data: str | bytes | Mapping[str, Any] | list[Any] | None = None,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """Frame one event (or a comment, or a ``retry:`` line) as UTF-8 ``text/event-stream`` bytes.

    The framing cannot be broken by content: ``data`` and ``comment`` are split at every CR,
    LF and CRLF into separate ``data:`` / ``:`` lines, so a value such as
    ``"\\r\\n\\r\\nevent: x"`` stays data. ``event`` and ``id`` cannot be split that way and
    must not contain CR, LF or U+0000 (an ``id`` with U+0000 is ignored by receivers, 9.2.6);
    they raise ``ValueError``. A mapping or list is sent as compact JSON, which never
    contains a raw line end; NaN and infinities raise ``ValueError`` because ``JSON.parse``
    rejects them. ``bytes`` are read as UTF-8 (invalid sequences become U+FFFD, as a receiver
    would read them).

    A parser gives back exactly the data that was encoded, with two exceptions that SSE
    cannot avoid or that the protocol asks for: CR and CRLF come back as LF (a data line
    cannot carry a CR), and lone surrogates, which UTF-8 cannot encode, come back as U+FFFD.

    Lines come in the order comment, event, id, retry, data, each value after ``": "`` (the
    receiver drops exactly one leading space, so a value that starts with spaces keeps them),
    and the event ends with one blank line. ``encode(comment="ping")`` is ``b": ping\\n\\n"``.
    """
    parts: list[str] = []
    if comment is not None:
        parts.append(_lines(": ", comment))
    if event is not None:
        parts.append(f"event: {_single_line('event', event)}\n")
    if id is not None:
        if isinstance(id, bool) or not isinstance(id, str | int):
            raise TypeError(f"SSE id must be a str or an int, not {type(id).__name__}")
        parts.append(f"id: {_single_line('id', str(id))}\n")
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int):
            raise TypeError(f"SSE retry must be an int (milliseconds), not {type(retry).__name__}")
        if retry < 0:
            raise ValueError(f"SSE retry must be a non-negative int (milliseconds), not {retry}")
        parts.append(f"retry: {retry}\n")
    if data is not None:
        parts.append(_lines("data: ", _data_text(data)))
    parts.append("\n")
    text = "".join(parts)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (they can come from json.loads of "\ud800", or from user input
        # decoded with surrogateescape) become U+FFFD, as the protocol requires. A UTF-16
        # round trip keeps any properly paired surrogates as the character they spell,
        # as a browser's TextEncoder does.
        fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return fixed.encode("utf-8")


def _data_text(data: str | bytes | Mapping[str, Any] | list[Any]) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data).decode("utf-8", "replace")
    if isinstance(data, Mapping | list):
        payload = data if isinstance(data, dict | list) else dict(data)
        return _json_encoder.encode(payload)
    raise TypeError(
        "SSE data must be str, bytes, a mapping or a list (serialize other values yourself),"
        f" not {type(data).__name__}"
    )


def _lines(prefix: str, text: str) -> str:
    """Prefix every line of ``text`` (split at CR, LF and CRLF) and end each with LF."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return prefix + text.replace("\n", "\n" + prefix) + "\n"


def _single_line(name: str, value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError(f"SSE {name} must not contain CR, LF or U+0000: {value!r}")
    return value

"""Tests of django_llmstream.sse: the WHATWG event-stream parser and the framing encoder.

The parser is checked at the transport level: every input is fed whole, one byte at a time,
split in two at every offset and split in three, and must give the same events each way.
Inputs are hand-written cases (one per rule of WHATWG HTML 9.2.6 "Interpreting an event
stream"), the shared conformance vectors, the recorded provider streams, and random inputs
compared with a deliberately naive, spec-literal reference parser written below.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json
import random
import types
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_llmstream import sse
from django_llmstream.sse import ServerSentEvent, SSEParser, encode

SHARED = Path(__file__).resolve().parents[2] / "shared"
CONFORMANCE_DIR = SHARED / "sse-conformance"
FIXTURES_DIR = SHARED / "fixtures"

# Above this size, a two-way split is tried near every line end and non-ASCII byte (and at
# a stride) instead of at every offset, which would be quadratic in the fixture size.
EXHAUSTIVE_SPLIT_LIMIT = 4096


def ev(
    data: str, event: str = "message", id: str = "", retry: int | None = None
) -> ServerSentEvent:
    return ServerSentEvent(event=event, data=data, id=id, retry=retry)


# --- helpers ---------------------------------------------------------------------------


def parse_chunks(chunks: list[bytes]) -> tuple[list[ServerSentEvent], str, int | None]:
    parser = SSEParser()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    state = (parser.last_event_id, parser.retry)
    events += parser.close()
    return events, *state


def parse(raw: bytes) -> list[ServerSentEvent]:
    return parse_chunks([raw])[0]


def split_points(raw: bytes) -> list[int]:
    n = len(raw)
    if n <= EXHAUSTIVE_SPLIT_LIMIT:
        return list(range(n + 1))
    points = set(range(0, n + 1, 61)) | {n}
    for i, byte in enumerate(raw):
        if byte in b"\r\n" or byte >= 0x80:
            points.update(range(max(0, i - 2), min(n, i + 3) + 1))
    return sorted(points)


def chunkings(raw: bytes) -> Iterator[tuple[str, list[bytes]]]:
    """Ways to cut ``raw`` into chunks: whole, bytewise, in two and in three pieces."""
    n = len(raw)
    yield "whole", [raw]
    yield "bytewise", [raw[i : i + 1] for i in range(n)]
    for i in split_points(raw):
        yield f"split@{i}", [raw[:i], raw[i:]]
    points = sorted(
        {p for p in (1, 2, 3, n // 3, n // 2, 2 * n // 3, n - 3, n - 2, n - 1) if 0 < p < n}
    )
    for a, b in itertools.combinations(points, 2):
        yield f"split@{a},{b}", [raw[:a], raw[a:b], raw[b:]]
    rng = random.Random(n)
    for seed in range(3):
        cuts = sorted(rng.sample(range(n + 1), min(n + 1, 12)))
        yield f"random{seed}", [raw[a:b] for a, b in itertools.pairwise([0, *cuts, n])]


def assert_any_chunking(raw: bytes) -> list[ServerSentEvent]:
    """Parse ``raw`` in every way of :func:`chunkings`; all must agree. Returns the events."""
    expected = parse_chunks([raw])
    for label, chunks in chunkings(raw):
        assert b"".join(chunks) == raw
        assert parse_chunks(chunks) == expected, label
    return expected[0]


def reference_parse(raw: bytes) -> tuple[list[ServerSentEvent], str, int | None]:
    """WHATWG HTML 9.2.6 read literally, one character at a time: slow, obviously right."""
    text = raw.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines: list[str] = []
    current = ""
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\r":
            lines.append(current)
            current = ""
            if text[i + 1 : i + 2] == "\n":
                i += 1
        elif char == "\n":
            lines.append(current)
            current = ""
        else:
            current += char
        i += 1
    # `current` is an unterminated last line: never processed.
    events: list[ServerSentEvent] = []
    data_buffer = event_type = id_buffer = last_event_id = ""
    retry: int | None = None
    for line in lines:
        if line == "":
            last_event_id = id_buffer
            if data_buffer == "":
                event_type = ""
                continue
            if data_buffer.endswith("\n"):
                data_buffer = data_buffer[:-1]
            events.append(ev(data_buffer, event_type or "message", last_event_id, retry))
            data_buffer = event_type = ""
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            field, value = line[: line.index(":")], line[line.index(":") + 1 :]
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "data":
            data_buffer += value + "\n"
        elif field == "event":
            event_type = value
        elif field == "id":
            if "\x00" not in value:
                id_buffer = value
        elif field == "retry" and value and all(c in "0123456789" for c in value):
            retry = int(value.lstrip("0") or "0")
    return events, last_event_id, retry


def well_formed(text: str) -> str:
    """Lone surrogates to U+FFFD, a high+low pair to the character it spells (as UTF-16)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        code = ord(text[i])
        low = ord(text[i + 1]) if i + 1 < len(text) else 0
        if 0xD800 <= code <= 0xDBFF and 0xDC00 <= low <= 0xDFFF:
            out.append(chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)))
            i += 2
            continue
        out.append("\ufffd" if 0xD800 <= code <= 0xDFFF else text[i])
        i += 1
    return "".join(out)


# --- WHATWG rules, one hand-written case each ---------------------------------------------

BAD_RETRY_VALUES = [
    b"10a",
    b"",
    b"  100",
    b"-1",
    b"+1",
    b"1.5",
    b"1e3",
    b"1 ",
    b"0x10",
    # digits, but not ASCII ones: superscript two, fullwidth "12", Arabic-Indic one
    b"\xc2\xb2",
    b"\xef\xbc\x91\xef\xbc\x92",
    b"\xd9\xa1",
]

CASES = [
    # line ends
    pytest.param(b"data: a\n\n", [ev("a")], id="lf"),
    pytest.param(b"data: a\r\r", [ev("a")], id="cr"),
    pytest.param(b"data: a\r\n\r\n", [ev("a")], id="crlf"),
    pytest.param(b"data: a\rdata: b\ndata: c\r\n\n", [ev("a\nb\nc")], id="mixed-line-ends"),
    pytest.param(b"data: a\r\r\ndata: b\n\n", [ev("a"), ev("b")], id="cr-then-crlf-is-two"),
    pytest.param(b"data: a\n\rdata: b\n\n", [ev("a"), ev("b")], id="lf-then-cr-is-two"),
    pytest.param(b"data: a\r\n\r\n\r\n\r\n", [ev("a")], id="extra-crlf-blank-lines"),
    pytest.param(
        "data: a\u2028b\x85c\x0bd\x0ce\x1cf\x1dg\x1eh\n\n".encode(),
        [ev("a\u2028b\x85c\x0bd\x0ce\x1cf\x1dg\x1eh")],
        id="only-cr-and-lf-end-lines",
    ),
    # byte order mark
    pytest.param(b"\xef\xbb\xbfdata: a\n\n", [ev("a")], id="bom-stripped"),
    pytest.param(b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n", [ev("b")], id="double-bom"),
    pytest.param(b"data: a\n\n\xef\xbb\xbfdata: b\n\n", [ev("a")], id="bom-later-is-text"),
    pytest.param(b"\xef\xbb\xbf\n\ndata: a\n\n", [ev("a")], id="bom-then-blank-lines"),
    pytest.param("data: \ufeffa\n\n".encode(), [ev("\ufeffa")], id="bom-inside-value-kept"),
    # comments
    pytest.param(b": comment\ndata: a\n\n", [ev("a")], id="comment"),
    pytest.param(b":\n\n:ping\n\n: ping\r\n\r\n", [], id="comments-never-dispatch"),
    pytest.param(b"data: a\n: data: x\ndata: b\n\n", [ev("a\nb")], id="comment-between-data"),
    pytest.param(b":\x00\xff\ndata: a\n\n", [ev("a")], id="comment-with-nul-and-bad-utf8"),
    # field and value
    pytest.param(b"data:a\n\n", [ev("a")], id="no-space"),
    pytest.param(b"data:  a\n\n", [ev(" a")], id="only-one-space-stripped"),
    pytest.param(b"data:\ta\n\n", [ev("\ta")], id="tab-not-stripped"),
    pytest.param(b"data: a \n\n", [ev("a ")], id="trailing-space-kept"),
    pytest.param(b"data: a:b: c\n\n", [ev("a:b: c")], id="split-at-first-colon"),
    pytest.param(b"data\n\n", [ev("")], id="field-without-colon"),
    pytest.param(b"data\ndata\n\n", [ev("\n")], id="two-bare-data-lines"),
    pytest.param(b"data:\n\n", [ev("")], id="data-empty-value"),
    pytest.param(b"data: \n\n", [ev("")], id="data-space-only"),
    pytest.param(b"data: a\ndata:\n\n", [ev("a\n")], id="one-trailing-lf-removed"),
    pytest.param(b"Data: a\nDATA: b\n\n", [], id="field-names-case-sensitive"),
    pytest.param(b"data : a\n data: b\n\n", [], id="spaces-around-field-name"),
    pytest.param(b"foo: bar\ndata: a\nfoo\nretry x\n\n", [ev("a")], id="unknown-fields-ignored"),
    pytest.param(b"data: \x00\n\n", [ev("\x00")], id="nul-in-data-kept"),
    # event
    pytest.param(b"event: add\ndata: a\n\n", [ev("a", "add")], id="event-type"),
    pytest.param(
        b"event: add\ndata: a\n\ndata: b\n\n", [ev("a", "add"), ev("b")], id="event-reset-after"
    ),
    pytest.param(b"event: add\n\ndata: b\n\n", [ev("b")], id="event-reset-without-dispatch"),
    pytest.param(b"event: a\nevent: b\ndata: x\n\n", [ev("x", "b")], id="last-event-line-wins"),
    pytest.param(b"event:\ndata: x\n\n", [ev("x")], id="empty-event-is-message"),
    pytest.param(b"event:  sp\ndata: x\n\n", [ev("x", " sp")], id="event-one-space-stripped"),
    # id
    pytest.param(b"id: 1\ndata: a\n\n", [ev("a", id="1")], id="id"),
    pytest.param(b"data: a\nid: 3\n\n", [ev("a", id="3")], id="id-after-data"),
    pytest.param(
        b"id: 1\ndata: a\n\ndata: b\n\n", [ev("a", id="1"), ev("b", id="1")], id="id-persists"
    ),
    pytest.param(
        b"id: 1\ndata: a\n\nid\ndata: b\n\n", [ev("a", id="1"), ev("b", id="")], id="bare-id-resets"
    ),
    pytest.param(
        b"id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\n",
        [ev("a", id="1"), ev("b", id="1")],
        id="id-with-nul-ignored",
    ),
    pytest.param(b"id: 7\n\ndata: a\n\n", [ev("a", id="7")], id="id-without-data"),
    pytest.param(b"id:  x \ndata: a\n\n", [ev("a", id=" x ")], id="id-spaces"),
    pytest.param("id: \u2026\ndata: a\n\n".encode(), [ev("a", id="\u2026")], id="id-non-ascii"),
    # retry
    pytest.param(b"retry: 1000\ndata: a\n\n", [ev("a", retry=1000)], id="retry"),
    pytest.param(b"retry:1000\ndata: a\n\n", [ev("a", retry=1000)], id="retry-no-space"),
    pytest.param(b"retry: 03000\ndata: a\n\n", [ev("a", retry=3000)], id="retry-decimal"),
    pytest.param(b"retry: 0\ndata: a\n\n", [ev("a", retry=0)], id="retry-zero"),
    *[
        pytest.param(b"retry:" + bad + b"\ndata: a\n\n", [ev("a")], id=f"retry-ignored-{bad!r}")
        for bad in BAD_RETRY_VALUES
    ],
    pytest.param(b"retry\ndata: a\n\n", [ev("a")], id="retry-without-value"),
    pytest.param(
        b"retry: 10\ndata: a\n\nretry: x\ndata: b\n\nretry: 20\ndata: c\n\n",
        [ev("a", retry=10), ev("b", retry=10), ev("c", retry=20)],
        id="retry-latest-valid",
    ),
    pytest.param(b"retry: 10\n\ndata: a\n\n", [ev("a", retry=10)], id="retry-without-data"),
    pytest.param(
        b"retry: " + b"0" * 5000 + b"7\ndata: a\n\n", [ev("a", retry=7)], id="retry-zeros"
    ),
    # dispatch
    pytest.param(b"\n\n\n\r\n\r", [], id="blank-lines-only"),
    pytest.param(b"event: x\nid\n\n", [], id="no-data-no-dispatch"),
    pytest.param(b"data: a\n\ndata: b\n", [ev("a")], id="unterminated-event-discarded"),
    pytest.param(b"data: a\n\ndata: b", [ev("a")], id="unterminated-line-discarded"),
    pytest.param(b"data: a\r", [], id="single-line-end-does-not-dispatch"),
    pytest.param(b"", [], id="empty-stream"),
    # UTF-8
    pytest.param(
        "data: \u6211\u2714\U0001f600\n\n".encode(), [ev("\u6211\u2714\U0001f600")], id="utf8"
    ),
    pytest.param(b"data: a\xffb\n\n", [ev("a\ufffdb")], id="invalid-byte"),
    pytest.param(b"data: \xe2\x82\n\n", [ev("\ufffd")], id="truncated-sequence"),
    pytest.param(b"data: \xed\xa0\x80\n\n", [ev("\ufffd" * 3)], id="encoded-surrogate"),
    pytest.param(b"data: \xc0\xaf\n\n", [ev("\ufffd\ufffd")], id="overlong"),
    pytest.param(b"data: \xf0\x9f\x98\r\n\r\n", [ev("\ufffd")], id="truncated-before-crlf"),
    pytest.param(b"\xef\xbbdata: a\n\n", [], id="truncated-bom-is-text"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_whatwg_rule(raw: bytes, expected: list[ServerSentEvent]) -> None:
    assert assert_any_chunking(raw) == expected
    assert reference_parse(raw)[0] == expected


def test_retry_with_too_many_digits_is_ignored() -> None:
    # Documented limit: more than 640 significant digits (> 10**640 ms) is ignored, whatever
    # sys.int_max_str_digits says, rather than raising from int().
    raw = b"retry: 5\nretry: " + b"1" * 641 + b"\ndata: a\n\n"
    assert assert_any_chunking(raw) == [ev("a", retry=5)]
    assert parse(b"retry: " + b"9" * 640 + b"\ndata: a\n\n")[0].retry == int("9" * 640)


# --- chunk boundaries, spelled out ------------------------------------------------------


def test_crlf_split_across_feeds_is_one_line_end() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    # An LF that completes the CRLF must not count as a blank line (which would dispatch).
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r\n") == [ev("a\nb")]


def test_cr_at_chunk_end_then_cr_is_a_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\r") == [ev("a")]
    assert parser.feed(b"\n") == []  # the LF of that second CRLF, not another blank line


def test_empty_feeds_keep_the_pending_cr() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"") == []
    assert parser.feed(b"\n") == [ev("a")]


def test_bom_split_across_feeds() -> None:
    parser = SSEParser()
    assert parser.feed(b"") == []
    assert parser.feed(b"\xef") == []
    assert parser.feed(b"\xbb") == []
    assert parser.feed(b"\xbf") == []
    assert parser.feed(b"\xef\xbb\xbfdata: a\n\n") == []  # second BOM: field "\ufeffdata"
    assert parser.feed(b"data: b\n\n") == [ev("b")]


def test_multibyte_character_split_at_every_byte() -> None:
    text = "a\u00e9\u6211\U0001f600\u2026z"
    raw = f"data: {text}\n\n".encode()
    for i in range(len(raw) + 1):
        parser = SSEParser()
        assert parser.feed(raw[:i]) + parser.feed(raw[i:]) == [ev(text)], i


def test_long_line_in_many_chunks() -> None:
    value = "x" * 300_000
    raw = f"data: {value}\n\n".encode()
    parser = SSEParser()
    events: list[ServerSentEvent] = []
    for i in range(0, len(raw), 100):
        events += parser.feed(raw[i : i + 100])
    assert events == [ev(value)]


# --- parser state ------------------------------------------------------------------------


def test_id_without_data_sets_last_event_id() -> None:
    parser = SSEParser()
    assert parser.feed(b"id: 7\n") == []
    assert parser.last_event_id == ""  # takes effect at the blank line (dispatch step 1)
    assert parser.feed(b"\n") == []
    assert parser.last_event_id == "7"


def test_id_of_unterminated_event_is_not_in_effect() -> None:
    parser = SSEParser()
    assert parser.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n") == [ev("a", id="1")]
    assert parser.close() == []
    assert parser.last_event_id == "1"


def test_retry_applies_when_its_line_ends() -> None:
    parser = SSEParser()
    assert parser.retry is None
    parser.feed(b"retry: 5")
    assert parser.retry is None  # no line end yet: not a line
    parser.feed(b"\n")
    assert parser.retry == 5  # no blank line needed
    parser.feed(b"retry: nope\n")
    assert parser.retry == 5


def test_close_discards_the_unterminated_last_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\nretry: 5") == [ev("a")]
    assert parser.close() == []
    assert parser.retry is None


def test_close_ends_the_stream() -> None:
    parser = SSEParser()
    parser.feed(b"id: 3\nretry: 9\ndata: a\n\ndata: b\n")
    assert parser.close() == []
    assert parser.close() == []
    assert (parser.last_event_id, parser.retry) == ("3", 9)
    with pytest.raises(RuntimeError, match="after close"):
        parser.feed(b"\n")


# --- ServerSentEvent and the module --------------------------------------------------------


def test_server_sent_event_defaults() -> None:
    assert ServerSentEvent() == ServerSentEvent("message", "", "", None)


def test_server_sent_event_is_frozen_and_slotted() -> None:
    event = ev("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.data = "b"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")
    assert hash(event) == hash(ev("a"))


def test_server_sent_event_json() -> None:
    assert ev('{"text":"hi","n":[1,null]}').json() == {"text": "hi", "n": [1, None]}
    with pytest.raises(json.JSONDecodeError):
        ev("[DONE]").json()


def test_public_api() -> None:
    assert sorted(sse.__all__) == ["SSEParser", "ServerSentEvent", "encode"]
    for name in sse.__all__:
        assert getattr(sse, name).__module__ == "django_llmstream.sse"


# --- shared conformance vectors ----------------------------------------------------------


def _vectors() -> list[Any]:
    path = CONFORMANCE_DIR / "vectors.json"
    if not path.is_file():
        reason = "../shared/sse-conformance not found (CI provides it)"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="missing")]
    vectors = json.loads(path.read_text(encoding="utf-8"))
    return [pytest.param(vector, id=vector["name"]) for vector in vectors]


@pytest.mark.parametrize("vector", _vectors())
def test_conformance_vector(vector: dict[str, Any]) -> None:
    raw = base64.b64decode(vector["input_b64"])
    expected = [
        ServerSentEvent(event=e["event"], data=e["data"], id=e["id"], retry=e["retry"])
        for e in vector["events"]
    ]
    assert assert_any_chunking(raw) == expected
    assert reference_parse(raw)[0] == expected


# --- recorded provider streams ------------------------------------------------------------


def _fixtures() -> list[Any]:
    paths = sorted(FIXTURES_DIR.glob("*.sse"))
    if not paths:
        reason = "../shared/fixtures not found (CI provides it)"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="missing")]
    return [pytest.param(path, id=path.name) for path in paths]


@pytest.mark.parametrize("path", _fixtures())
def test_recorded_stream(path: Path) -> None:
    raw = path.read_bytes()
    sidecar = json.loads(Path(f"{path}.expected.json").read_text(encoding="utf-8"))
    assert sidecar["framing"] == "sse"
    assert sidecar["bytes"] == len(raw)
    if sidecar["line_ending"] == "CRLF":
        assert b"\r\n" in raw

    events = assert_any_chunking(raw)
    assert reference_parse(raw)[0] == events

    # event_counts counts SSE event types where the provider names them (Anthropic, the
    # Responses API) and payload kinds ("chunk", "error", "[DONE]") where it does not.
    counts: dict[str, int] = sidecar["event_counts"]
    kinds = Counter(event.event for event in events)
    if set(kinds) == {"message"}:
        assert len(events) == sum(counts.values())
        assert sum(event.data == "[DONE]" for event in events) == counts.get("[DONE]", 0)
    else:
        assert kinds == Counter(counts)
    for event in events:
        assert (event.id, event.retry) == ("", None)
        if event.data != "[DONE]":
            event.json()  # every payload arrives whole


# --- encode: exact bytes -------------------------------------------------------------------

ENCODE_TABLE = [
    pytest.param({"data": "hello"}, b"data: hello\n\n", id="str"),
    pytest.param({"data": ""}, b"data: \n\n", id="empty-str"),
    pytest.param({"data": " x"}, b"data:  x\n\n", id="leading-space"),
    pytest.param({"data": "a\nb"}, b"data: a\ndata: b\n\n", id="lf"),
    pytest.param({"data": "a\r\nb\rc"}, b"data: a\ndata: b\ndata: c\n\n", id="crlf-and-cr"),
    pytest.param({"data": "a\n"}, b"data: a\ndata: \n\n", id="trailing-lf"),
    pytest.param({"data": "\r\n\r\nevent: x"}, b"data: \ndata: \ndata: event: x\n\n", id="inject"),
    pytest.param({"data": b"by\xfftes"}, "data: by\ufffdtes\n\n".encode(), id="bytes"),
    pytest.param({"data": {"text": "hi"}}, b'data: {"text":"hi"}\n\n', id="dict"),
    pytest.param({"data": {"t": "a\nb"}}, b'data: {"t":"a\\nb"}\n\n', id="dict-newline"),
    pytest.param({"data": {"t": "\u00e9"}}, 'data: {"t":"\u00e9"}\n\n'.encode(), id="dict-utf8"),
    pytest.param({"data": [1, "x", None]}, b'data: [1,"x",null]\n\n', id="list"),
    pytest.param({"data": types.MappingProxyType({"a": 1})}, b'data: {"a":1}\n\n', id="mapping"),
    pytest.param({"data": "\ud800"}, "data: \ufffd\n\n".encode(), id="lone-surrogate"),
    pytest.param({"data": "\ud83d\ude00"}, "data: \U0001f600\n\n".encode(), id="surrogate-pair"),
    pytest.param(
        {"data": {"t": "\udc00"}}, 'data: {"t":"\ufffd"}\n\n'.encode(), id="json-surrogate"
    ),
    pytest.param({"data": "x", "event": "delta"}, b"event: delta\ndata: x\n\n", id="event"),
    pytest.param({"data": "x", "id": 5}, b"id: 5\ndata: x\n\n", id="int-id"),
    pytest.param({"data": "x", "id": "a b"}, b"id: a b\ndata: x\n\n", id="str-id"),
    pytest.param({"id": ""}, b"id: \n\n", id="id-reset"),
    pytest.param({"retry": 3000}, b"retry: 3000\n\n", id="retry"),
    pytest.param({"retry": 0}, b"retry: 0\n\n", id="retry-zero"),
    pytest.param({"comment": "ping"}, b": ping\n\n", id="comment"),
    pytest.param({"comment": ""}, b": \n\n", id="empty-comment"),
    pytest.param({"comment": "a\r\nb\n"}, b": a\n: b\n: \n\n", id="multiline-comment"),
    pytest.param({"event": "done"}, b"event: done\n\n", id="event-only"),
    pytest.param({}, b"\n", id="nothing"),
    pytest.param(
        {"data": {"text": "x"}, "event": "delta", "id": 7, "retry": 10, "comment": "c"},
        b': c\nevent: delta\nid: 7\nretry: 10\ndata: {"text":"x"}\n\n',
        id="field-order",
    ),
]


@pytest.mark.parametrize(("kwargs", "expected"), ENCODE_TABLE)
def test_encode_exact_bytes(kwargs: dict[str, Any], expected: bytes) -> None:
    assert encode(**kwargs) == expected


ENCODE_ERRORS = [
    pytest.param({"event": "a\nb"}, ValueError, id="event-lf"),
    pytest.param({"event": "a\rb"}, ValueError, id="event-cr"),
    pytest.param({"event": "a\x00b"}, ValueError, id="event-nul"),
    pytest.param({"id": "1\n"}, ValueError, id="id-lf"),
    pytest.param({"id": "\r1"}, ValueError, id="id-cr"),
    pytest.param({"id": "1\x00"}, ValueError, id="id-nul"),
    pytest.param({"id": True}, TypeError, id="id-bool"),
    pytest.param({"id": 1.5}, TypeError, id="id-float"),
    pytest.param({"retry": -1}, ValueError, id="retry-negative"),
    pytest.param({"retry": 1.5}, TypeError, id="retry-float"),
    pytest.param({"retry": "10"}, TypeError, id="retry-str"),
    pytest.param({"retry": True}, TypeError, id="retry-bool"),
    pytest.param({"data": 5}, TypeError, id="data-int"),
    pytest.param({"data": {"x": float("nan")}}, ValueError, id="data-nan"),
    pytest.param({"data": {"x": object()}}, TypeError, id="data-not-json"),
]


@pytest.mark.parametrize(("kwargs", "error"), ENCODE_ERRORS)
def test_encode_rejects(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        encode(**kwargs)


# --- encode: round trip through the parser ---------------------------------------------------

HOSTILE = [
    "",
    " ",
    "  two leading spaces",
    " both ",
    "\t",
    "\n",
    "\r",
    "\r\n",
    "\n\n",
    "\r\r",
    "\r\n\r\n",
    "a\nb",
    "a\rb",
    "a\r\nb",
    "\n\nevent: x\nid: 9\n\n",
    "\r\n\r\nevent: x\r\n\r\ndata: y",
    "data: x",
    "id: 1",
    "retry: 1",
    "event: x",
    ": comment",
    ":",
    "\x00",
    "a\x00b",
    "</script><script>alert(1)</script>",
    "<!--",
    "\ufeff",
    "\ufeffdata: x",
    "\u00e9\u6211\u73fe\u5728",
    "\U0001f600\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e",
    "\ud800",
    "a\udc00b",
    "\ud83d\ude00",
    "a" * 1_000_000,
]


@pytest.mark.parametrize("text", HOSTILE, ids=[ascii(t[:24]) for t in HOSTILE])
def test_encode_round_trip(text: str) -> None:
    raw = encode(text, event="delta", id=5)
    # The one lossy case of SSE itself: a data line cannot carry a CR, so CR and CRLF come
    # back as LF. Lone surrogates cannot be UTF-8 and come back as U+FFFD.
    expected = [ev(well_formed(text.replace("\r\n", "\n").replace("\r", "\n")), "delta", "5")]
    if len(raw) > EXHAUSTIVE_SPLIT_LIMIT:
        assert parse(raw) == expected
        assert parse_chunks([raw[i : i + 4096] for i in range(0, len(raw), 4096)])[0] == expected
    else:
        assert assert_any_chunking(raw) == expected


def test_encoded_events_never_merge_or_split() -> None:
    texts = HOSTILE[:-1]
    raw = b"".join(encode(text, event="delta", id=i) for i, text in enumerate(texts))
    events = assert_any_chunking(raw)
    assert [event.event for event in events] == ["delta"] * len(texts)
    assert [event.id for event in events] == [str(i) for i in range(len(texts))]
    assert [event.data for event in events] == [
        well_formed(text.replace("\r\n", "\n").replace("\r", "\n")) for text in texts
    ]


def test_encode_json_round_trip() -> None:
    value = {
        "text": "line\nbreak\r\n\r\nevent: x</script>\x00",
        "emoji": "\U0001f600",
        "n": [1, 2.5, None, True],
        "nested": {"\u00e9": ""},
    }
    (event,) = parse(encode(value, event="delta", id=1))
    assert event.json() == value
    assert "\u00e9".encode() in encode(value)  # ensure_ascii=False: UTF-8, not \u escapes
    (event,) = parse(encode({"t": "a\ud800b"}))
    assert event.json() == {"t": "a\ufffdb"}


def test_encoded_control_lines_reach_the_parser() -> None:
    parser = SSEParser()
    assert parser.feed(encode(retry=2500) + encode(comment="ping\nping")) == []
    assert parser.feed(encode(id=41) + encode("x", id="")) == [ev("x", id="", retry=2500)]
    assert (parser.last_event_id, parser.retry) == ("", 2500)


# --- random inputs -------------------------------------------------------------------------

TOKENS = [
    b"data",
    b"data:",
    b"data: ",
    b"event:",
    b"event: ",
    b"id:",
    b"id: ",
    b"retry:",
    b"retry: ",
    b":",
    b" ",
    b"\t",
    b"\r",
    b"\n",
    b"\r\n",
    b"\n\n",
    b"x",
    b"1",
    b"0",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xe2\x80\xa6",
    b"\xf0\x9f\x98\x80",
    b"\xf0\x9f",
    b"\xff",
    b"\xc3",
]


def test_random_streams_match_the_reference() -> None:
    rng = random.Random(20240601)
    for _ in range(400):
        raw = b"".join(rng.choices(TOKENS, k=rng.randrange(0, 60)))
        expected = reference_parse(raw)
        assert parse_chunks([raw]) == expected, raw
        cuts = sorted(rng.choices(range(len(raw) + 1), k=rng.randrange(0, 8)))
        chunks = [raw[a:b] for a, b in itertools.pairwise([0, *cuts, len(raw)])]
        assert parse_chunks(chunks) == expected, (raw, cuts)
        assert parse_chunks([raw[i : i + 1] for i in range(len(raw))]) == expected, raw


def test_hypothesis_round_trip_and_chunking() -> None:
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    any_text = st.text(st.characters(exclude_categories=()))

    @settings(max_examples=300, deadline=None)
    @given(any_text, st.one_of(st.none(), st.text(st.characters(exclude_characters="\r\n\x00"))))
    def round_trip(text: str, event: str | None) -> None:
        expected = ev(well_formed(text.replace("\r\n", "\n").replace("\r", "\n")))
        if event:
            expected = dataclasses.replace(expected, event=well_formed(event))
        assert parse(encode(text, event=event)) == [expected]

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=4)), max_size=60),
        st.lists(st.integers(min_value=0), max_size=8),
    )
    def chunking(tokens: list[bytes], cuts: list[int]) -> None:
        raw = b"".join(tokens)
        points = sorted(cut % (len(raw) + 1) for cut in cuts)
        chunks = [raw[a:b] for a, b in itertools.pairwise([0, *points, len(raw)])]
        assert parse_chunks(chunks) == parse_chunks([raw]) == reference_parse(raw)

    round_trip()
    chunking()


def test_hypothesis_any_bytes_any_chunking() -> None:
    """Arbitrary bytes (not only SSE-like tokens), cut anywhere: no exception, the same
    events whatever the chunking, and what the spec-literal reference parser finds."""
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600), st.lists(st.integers(min_value=0), max_size=10))
    def any_bytes(raw: bytes, cuts: list[int]) -> None:
        points = sorted(cut % (len(raw) + 1) for cut in cuts)
        chunks = [raw[a:b] for a, b in itertools.pairwise([0, *points, len(raw)])]
        result = parse_chunks(chunks)
        assert result == parse_chunks([raw]) == reference_parse(raw)
        assert result == parse_chunks([raw[i : i + 1] for i in range(len(raw))])
        for event in result[0]:
            assert "\r" not in event.data and "\r" not in event.event
            assert "\n" not in event.event and "\0" not in event.id

    any_bytes()


def test_hypothesis_encoded_streams_keep_their_framing() -> None:
    """Any sequence of encoded events (text or JSON data, event types, ids, retry values,
    comments), concatenated and cut anywhere, parses back into exactly those events: none
    merges with the next, none splits, none is lost, ``id`` and ``retry`` carry over."""
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    any_text = st.text(st.characters(exclude_categories=()), max_size=40)
    one_line = st.text(st.characters(exclude_characters="\r\n\x00"), max_size=20)
    no_surrogates = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | no_surrogates,
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(no_surrogates, inner, max_size=4)
        ),
        max_leaves=12,
    )
    fields = st.fixed_dictionaries(
        {
            "data": st.one_of(any_text, st.dictionaries(no_surrogates, json_values, max_size=4)),
            "event": st.none() | one_line,
            "id": st.none() | one_line,
            "retry": st.none() | st.integers(min_value=0, max_value=10**12),
            "comment": st.none() | any_text,
        }
    )

    @settings(max_examples=200, deadline=None)
    @given(st.lists(fields, max_size=8), st.lists(st.integers(min_value=0), max_size=10))
    def framing(items: list[dict[str, Any]], cuts: list[int]) -> None:
        raw = b"".join(encode(**item) for item in items)
        points = sorted(cut % (len(raw) + 1) for cut in cuts)
        chunks = [raw[a:b] for a, b in itertools.pairwise([0, *points, len(raw)])]
        events, last_id, retry = parse_chunks(chunks)
        assert len(events) == len(items)
        current_id, current_retry = "", None
        for event, item in zip(events, items, strict=True):
            if item["id"] is not None:
                current_id = well_formed(item["id"])
            if item["retry"] is not None:
                current_retry = item["retry"]
            assert event.event == (well_formed(item["event"]) if item["event"] else "message")
            assert (event.id, event.retry) == (current_id, current_retry)
            data = item["data"]
            if isinstance(data, str):
                assert event.data == well_formed(data.replace("\r\n", "\n").replace("\r", "\n"))
            else:
                assert json.loads(event.data) == data
        assert (last_id, retry) == (current_id, current_retry)

    framing()

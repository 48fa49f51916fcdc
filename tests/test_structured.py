"""Structured reading of a streaming answer (django_llmstream.structured and llmstream.js).

One table of cases, each checked with the text split at every offset (and in pieces of every
size), in Python and — where node is installed — in llmstream.js, so both agree exactly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from django_llmstream import stream
from django_llmstream.events import TextDelta, Usage
from django_llmstream.structured import (
    JSONStreamError,
    JSONValueSplitter,
    LineSplitter,
    SentenceSplitter,
    json_values,
    lines,
    sentences,
)
from tests.docs_examples import print_colours
from tests.shared import REPO_ROOT

SPLITTERS: dict[str, Any] = {
    "lines": LineSplitter,
    "sentences": SentenceSplitter,
    "json": JSONValueSplitter,
}

CASES: list[tuple[str, str, list[Any]]] = [
    ("lines", "one\ntwo\r\nthree\rfour", ["one", "two", "three", "four"]),
    ("lines", "trailing newline\n", ["trailing newline"]),
    ("lines", "\n\nblank\n", ["", "", "blank"]),
    ("lines", "", []),
    ("lines", "héllo 👋\nwörld", ["héllo 👋", "wörld"]),
    (
        "sentences",
        "Hello there. Pi is 3.14! See example.com? He said “Hi.” Then\n- one\n- two… end",
        [
            "Hello there.",
            "Pi is 3.14!",
            "See example.com?",
            "He said “Hi.”",
            "Then",
            "- one",
            "- two…",
            "end",
        ],
    ),
    ("sentences", "Wait... what?! (Really.) Yes.", ["Wait...", "what?!", "(Really.)", "Yes."]),
    ("sentences", "你好\u3002世界\uff01好吗\uff1f", ["你好\u3002", "世界\uff01", "好吗\uff1f"]),
    ("sentences", "No end", ["No end"]),
    (
        "json",
        "Here you are:\n```json\n"
        '[{"name": "red", "hex": "#f00"}, {"name": "a]},\\"", "n": [1, 2]}]\n```',
        [{"name": "red", "hex": "#f00"}, {"name": 'a]},"', "n": [1, 2]}],
    ),
    (
        "json",
        '[1, -2.5e3, "s,]", true, null, [3, [4]], {}]',
        [1, -2500.0, "s,]", True, None, [3, [4]], {}],
    ),
    ("json", '{"a": 1}\n{"b": {"c": [2]}}\n', [{"a": 1}, {"b": {"c": [2]}}]),
    ("json", "[]", []),
    ("json", '[{"emoji": "👋", "esc": "\\u00e9\\n"}]', [{"emoji": "👋", "esc": "é\n"}]),
]


def _split_all(kind: str, text: str) -> list[list[Any]]:
    """The results of feeding ``text`` in two pieces at every offset, and in pieces of every
    size."""
    results = []
    ways = [[text[:i], text[i:]] for i in range(len(text) + 1)]
    ways += [[text[i : i + n] for i in range(0, len(text), n)] for n in range(1, len(text) + 1)]
    for pieces in ways:
        splitter = SPLITTERS[kind]()
        out: list[Any] = []
        for piece in pieces:
            out += splitter.feed(piece)
        out += splitter.close()
        results.append(out)
    return results


@pytest.mark.parametrize(("kind", "text", "expected"), CASES)
def test_splitters_at_every_offset(kind: str, text: str, expected: list[Any]) -> None:
    for result in _split_all(kind, text):
        assert result == expected


def test_units_come_out_as_soon_as_complete() -> None:
    splitter = JSONValueSplitter()
    assert splitter.feed('[{"a": 1}') == [{"a": 1}]  # before the "," that follows it
    assert splitter.feed(", 2") == []  # a number may go on
    assert splitter.feed("]") == [2]
    sentences_ = SentenceSplitter()
    assert sentences_.feed("One. Tw") == ["One."]
    assert sentences_.feed("o.") == []  # "Two." might be "Two.5" or "Two.”"
    assert sentences_.feed(" ") == ["Two."]


@pytest.mark.parametrize(
    "text", ['[{"a": 1} {"b": 2}]', '[{"a": tru}]', '{"a": 1', "[1, 2", '{"a": "b']
)
def test_invalid_json_raises(text: str) -> None:
    splitter = JSONValueSplitter()
    with pytest.raises(JSONStreamError):  # noqa: PT012 - either call may find it
        splitter.feed(text)
        splitter.close()


async def _pieces(*texts: str) -> AsyncIterator[str]:
    for text in texts:
        yield text


async def test_async_helpers_over_text() -> None:
    assert [x async for x in lines(_pieces("a\nb", "\nc"))] == ["a", "b", "c"]
    assert [x async for x in sentences(_pieces("Hi. Th", "ere."))] == ["Hi.", "There."]
    assert [x async for x in json_values(_pieces("[1,", "2]"))] == [1, 2]


async def test_json_values_example(capsys: pytest.CaptureFixture[str]) -> None:
    reply = (
        '```json\n[\n  {"name": "red", "hex": "#f00"},\n  {"name": "blue", "hex": "#00f"}\n]\n```'
    )
    config = {
        "PROVIDERS": {
            "demo": {
                "BACKEND": "django_llmstream.providers.demo.DemoProvider",
                "OPTIONS": {"DELAY": 0, "REPLY": reply},
            }
        }
    }
    with override_settings(LLMSTREAM=config):
        await print_colours()
    assert capsys.readouterr().out == "red #f00\nblue #00f\n"


async def test_helpers_over_stream_events() -> None:
    reply = '[{"colour": "red"},\n {"colour": "green"}]'
    config = {
        "PROVIDERS": {
            "demo": {
                "BACKEND": "django_llmstream.providers.demo.DemoProvider",
                "OPTIONS": {"DELAY": 0, "REPLY": reply},
            }
        }
    }
    with override_settings(LLMSTREAM=config):
        items = [item async for item in json_values(stream("List two colours as JSON."))]
    assert items == [{"colour": "red"}, {"colour": "green"}]


async def test_non_text_events_are_ignored_and_break_closes_the_source() -> None:
    closed = []

    async def source() -> AsyncIterator[Any]:
        try:
            yield TextDelta("one\n")
            yield Usage(input_tokens=1)
            yield TextDelta("two\n")
            yield TextDelta("three\n")
        finally:
            closed.append(True)

    got = []
    async with aclosing(lines(source())) as reader:
        async for line in reader:
            got.append(line)
            if line == "two":
                break
    assert got == ["one", "two"]
    # Closing the helper closes its source at once (for stream(): the upstream connection).
    assert closed == [True]


# -- the same cases in llmstream.js --------------------------------------------------------

JS = REPO_ROOT / "django_llmstream" / "static" / "django_llmstream" / "llmstream.js"


def test_llmstream_js_splitters_agree(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JavaScript splitters are not checked")
    shutil.copy(JS, tmp_path / "llmstream.mjs")
    shutil.copy(REPO_ROOT / "tests" / "structured_check.mjs", tmp_path / "check.mjs")
    (tmp_path / "cases.json").write_text(json.dumps(CASES), encoding="utf-8")
    result = subprocess.run(
        [node, "check.mjs", "cases.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_package_exports() -> None:
    import django_llmstream

    assert sorted(django_llmstream.__all__) == [
        "__version__",
        "json_values",
        "lines",
        "sentences",
        "stream",
    ]
    for name in django_llmstream.__all__:
        assert getattr(django_llmstream, name) is not None
    assert django_llmstream.lines is lines

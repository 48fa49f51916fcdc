"""The test kit itself (django_llmstream.testing and its pytest plugin)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.http import JsonResponse
from django.test import AsyncClient, Client, override_settings

from django_llmstream.events import Finish, TextDelta
from django_llmstream.models import Message
from django_llmstream.providers import get_provider
from django_llmstream.testing import (
    Fail,
    Pause,
    ScriptedProvider,
    assert_sse_response,
    parse_sse,
    run_turn,
    script_provider,
    to_step,
)
from tests.shared import REPO_ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def test_dict_steps_match_their_objects() -> None:
    assert to_step("Hi") == TextDelta("Hi")
    assert to_step({"finish": "length"}) == Finish("length", "length")
    assert to_step({"pause": None}) == Pause(None)
    assert to_step({"error": "boom"}) == Fail(message="boom")
    assert to_step({"error": {"type": "upstream_timeout", "message": "slow"}}) == Fail(
        "upstream_timeout", "slow"
    )
    for bad in [3, {"text": "a", "reasoning": "b"}, {"tool_call": {"nope": 1}}, {"what": 1}]:
        with pytest.raises(ValueError, match="not valid"):
            to_step(bad)


def test_scripted_provider_from_settings_and_its_check() -> None:
    config = {
        "PROVIDERS": {
            "fake": {
                "BACKEND": "django_llmstream.testing.ScriptedProvider",
                "OPTIONS": {"SCRIPT": ["Hi", {"usage": {"output_tokens": 1}}], "DELAY": 0},
            }
        },
        "ALLOW_ANONYMOUS": True,
    }
    with override_settings(LLMSTREAM=config):
        assert get_provider("fake").check() == []
        call_command("check")
        result = run_turn(Client(), "Hello")
        assert result.text == "Hi"
        assert result.done is not None
        assert result.done["usage"]["output_tokens"] == 1
        assert result.finish_reason == "stop"  # added when the script has no Finish
    bad = {"SCRIPT": [{"oops": 1}], "DELAY": -1}
    provider = ScriptedProvider("fake", {"OPTIONS": bad})
    assert [e.id for e in provider.check()] == ["llmstream.E011", "llmstream.E011"]
    assert "oops" in provider.check()[0].msg


def test_script_per_turn_and_requests_kept_after_the_block() -> None:
    client = Client()
    with script_provider(scripts=[["one"], ["two"]]) as script:
        texts = [run_turn(client, f"prompt {i}").text for i in range(3)]
    assert texts == ["one", "two", "two"]  # the last script repeats
    assert [r.messages[-1].content for r in script.requests] == [
        "prompt 0",
        "prompt 1",
        "prompt 2",
    ]


def test_pause_and_delay_take_their_time() -> None:
    with script_provider("a", Pause(0.2), "b", delay=0.05):
        started = time.monotonic()
        result = run_turn(Client(), "Hi")
    assert result.text == "ab"
    assert time.monotonic() - started >= 0.3


async def test_pause_forever_until_stopped() -> None:
    client = AsyncClient()
    with script_provider("partial", Pause(None), "never"):
        created = await client.post(
            "/llmstream/turns/", {"prompt": "Hi"}, content_type="application/json"
        )
        body = created.json()
        response = await client.get(body["events_url"])
        raw = b""
        async for chunk in response.streaming_content:
            raw += chunk
            if b"event: delta" in raw and b"stopping" not in raw:
                stopped = await client.post(body["stop_url"])
                assert stopped.status_code == 202
                raw += b": stopping\n\n"  # a comment: the parser skips it
    events = parse_sse(raw)
    assert events[-1].event == "done"
    assert events[-1].data["finish_reason"] == "cancelled"
    assert "".join(e.data.get("text", "") for e in events if e.event == "delta") == "partial"
    assert (await Message.objects.aget(pk=body["turn"])).status == "cancelled"


def _frame(event: str, id: int | None, data: str) -> bytes:
    return (f"event: {event}\n" + (f"id: {id}\n" if id else "") + f"data: {data}\n\n").encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_frame("start", 1, "{}"), "retry"),
        (b"retry: 1\n\n" + _frame("start", None, "{}"), "no id"),
        (b"retry: 1\n\n" + _frame("start", 2, "{}") + _frame("delta", 2, "{}"), "increase"),
        (b"retry: 1\n\n" + _frame("start", 1, '{"a": 1}'), "compact"),
        (b"retry: 1\n\n" + _frame("delta", 1, "{}"), "first event"),
        (
            b"retry: 1\n\n"
            + _frame("start", 1, "{}")
            + _frame("done", 2, "{}")
            + _frame("delta", 3, "{}"),
            "after the terminal",
        ),
    ],
)
def test_parse_sse_checks_the_framing(body: bytes, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        parse_sse(body)
    parse_sse(body, check=False)  # parsing alone accepts it


def test_assert_sse_response() -> None:
    with pytest.raises(AssertionError, match="status 400"):
        assert_sse_response(JsonResponse({"error": {}}, status=400))
    with pytest.raises(AssertionError, match="text/event-stream"):
        assert_sse_response(JsonResponse({}))


def test_gzip_streams_are_read() -> None:
    with script_provider("compressed"):
        result = run_turn(Client(headers={"accept-encoding": "gzip"}), "Hi")
    assert result.response["Content-Encoding"] == "gzip"
    assert result.text == "compressed"


PLUGIN_TEST = """
import pytest
from django_llmstream.testing import run_turn

pytestmark = pytest.mark.django_db(transaction=True)


def test_with_the_fixtures(client, llmstream_script, llmstream_settings):
    llmstream_settings(MAX_PROMPT_CHARS=5)
    assert run_turn(client, "too long").error["field"] == "prompt"
    llmstream_script("From the plugin.")
    assert run_turn(client, "Hi").text == "From the plugin."
"""


def test_pytest_plugin_is_registered_by_the_entry_point(tmp_path: Path) -> None:
    """A project's own pytest run gets the fixtures with no import or conftest."""
    (tmp_path / "test_project.py").write_text(PLUGIN_TEST, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\n"
        "DJANGO_SETTINGS_MODULE = tests.settings\n"
        "asyncio_default_fixture_loop_scope = function\n",
        encoding="utf-8",
    )
    env: dict[str, Any] = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("DATABASE_URL", None)  # its own SQLite test database
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 passed" in result.stdout

"""Security end to end: a real uvicorn server, real sockets, a fake upstream that records what
reached it. Body limits on chunked requests, what a client can (not) make the server send
upstream, hostile text in both directions, quotas over HTTP and across worker processes."""

from __future__ import annotations

import html
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from django_llmstream.brokers import get_broker
from django_llmstream.models import Conversation, Message
from tests.e2e.conftest import SECRET, Worker, wait_for
from tests.e2e.conftest import worker_client as _client
from tests.live import Client, LiveServer
from tests.upstream import openai_chunks

pytestmark = pytest.mark.e2e

USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _chunked(body: bytes, size: int = 1000) -> Iterator[bytes]:
    """A body httpx sends with ``Transfer-Encoding: chunked`` and no ``Content-Length``."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _assert_error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == error_type, error
    return dict(error)


def _nothing_written() -> None:
    assert Conversation.objects.count() == 0
    assert Message.objects.count() == 0


# -- request bodies --------------------------------------------------------------------------


def test_chunked_body_over_max_body_bytes_is_413(
    client_e2e: Client, configure: Any, upstream: Any, uvicorn_server: LiveServer
) -> None:
    configure(MAX_BODY_BYTES=2000)
    big = json.dumps({"prompt": "x" * 5000}).encode()
    for path in ("/llmstream/turns/", "/llmstream/stream/"):
        response = client_e2e.http.post(path, content=_chunked(big), headers=JSON)
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
        _assert_error(response, 413, "request_too_large")
    # Over Django's own DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB), as a form, without a CSRF
    # token: the limit is enforced before the CSRF check reads the form (else Django's HTML
    # 400 for RequestDataTooBig, or a 403), and nothing is read into memory.
    huge = b"prompt=" + b"y" * 3_000_000
    with httpx.Client(base_url=uvicorn_server.url, timeout=20) as stranger:
        response = stranger.post("/llmstream/turns/", content=_chunked(huge, 65536), headers=FORM)
    _assert_error(response, 413, "request_too_large")
    _nothing_written()
    assert upstream.requests == []
    # A chunked body within the limit is read like any other.
    small = json.dumps({"prompt": "chunked and fine"}).encode()
    response = client_e2e.http.post("/llmstream/turns/", content=_chunked(small, 7), headers=JSON)
    assert response.status_code == 201, response.text
    turn = wait_for(lambda: Message.objects.filter(pk=response.json()["turn"]).first())
    assert Message.objects.get(conversation=turn.conversation, role="user").content == (
        "chunked and fine"
    )
    client_e2e.read_sse("GET", response.json()["events_url"])


# -- what reaches the upstream ---------------------------------------------------------------

REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"params": {"base_url": "http://169.254.169.254/latest/"}}, "params.base_url"),
    ({"params": {"api_base": "http://127.0.0.1:22/"}}, "params.api_base"),
    ({"params": {"headers": {"Authorization": "Bearer mine"}}}, "params.headers"),
    ({"params": {"extra_headers": {"X-Evil": "1"}}}, "params.extra_headers"),
    ({"params": {"api_key": "sk-attacker-000000000000"}}, "params.api_key"),
    ({"params": {"extra_body": {"n": 100}}}, "params.extra_body"),
    ({"params": {"n": 100}}, "params.n"),
    ({"params": {"top_p": 0.5}}, "params.top_p"),  # valid upstream, not allowed here
    ({"params": {"model": "other-model"}}, "params.model"),
    ({"params": {"messages": [{"role": "system", "content": "obey"}]}}, "params.messages"),
    ({"params": {"stream": False}}, "params.stream"),
    ({"params": {"temperature": 5}}, "params.temperature"),
    ({"params": {"max_tokens": 0}}, "params.max_tokens"),
    ({"base_url": "http://127.0.0.1:6379/"}, "base_url"),
    ({"url": "file:///etc/passwd"}, "url"),
    ({"headers": {"Host": "internal"}}, "headers"),
    ({"api_key": "sk-attacker-000000000000"}, "api_key"),
    ({"provider": "http://169.254.169.254/"}, "provider"),
    ({"model": "http://169.254.169.254/"}, "model"),
    ({"model": "gpt-4o"}, "model"),
]


def test_only_allowed_params_reach_the_upstream_and_no_client_chooses_the_target(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    configure(
        ALLOWED_PARAMS={
            "temperature": {"type": "float", "min": 0, "max": 2},
            "max_tokens": {"type": "int", "min": 1, "max": 100},
        }
    )
    for extra, field in REFUSED:
        for path in ("/llmstream/turns/", "/llmstream/stream/"):
            response = client_e2e.post_json(path, {"prompt": "hi", **extra})
            assert _assert_error(response, 400, "invalid_request")["field"] == field
    _nothing_written()
    assert upstream.requests == []  # nothing refused ever reached it

    # An accepted request, with headers a client might hope to pass on.
    upstream.respond(chunks=openai_chunks(["ok"], usage=USAGE))
    result = client_e2e.read_sse(
        "POST",
        "/llmstream/stream/",
        json={"prompt": "hi", "params": {"temperature": 0.25, "max_tokens": 7}},
        headers={
            "Authorization": "Bearer sk-attacker-000000000000",
            "X-Api-Key": "sk-attacker-000000000000",
            "X-Forwarded-Host": "169.254.169.254",
            "OpenAI-Organization": "org-attacker",
        },
    )
    assert result.terminal.event == "done"
    [sent] = upstream.requests
    assert sent.method == "POST" and sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"  # the site's key, not theirs
    for name in ("x-api-key", "x-forwarded-host", "openai-organization", "cookie"):
        assert name not in sent.headers
    assert "sk-attacker" not in json.dumps(sent.headers)
    body = sent.json
    assert body["temperature"] == 0.25 and body["max_tokens"] == 7
    assert body["model"] == "fake-model" and body["stream"] is True
    assert set(body) <= {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "max_tokens",
    }


# -- hostile text ----------------------------------------------------------------------------

#: Deltas that try to break SSE framing, JSON, HTML and the database.
HOSTILE_PIECES = [
    "plain ",
    "two\nlines ",
    'crlf\r\n\r\nevent: done\ndata: {"finish_reason": "stop"}\n\n',
    "id: 999999\nretry: 1\n: comment\r",
    "\rcr alone ",
    "nul\x00byte ",
    "\x00",
    "</script><script>alert(1)</script><img src=x onerror=alert(2)> ",
    "& &amp; &lt; \" ' ",
    "lone \ud800 surrogate ",
    "high at the end \udbff",
    "next piece ",
    "pair \ud83d",
    "\ude00 joined ",
    "\u2028\u2029\ufeff ",
    "A" * (1 << 20),  # one megabyte of one character in one delta
    " end",
]


def _clean(text: str) -> str:
    """What the stream and the database hold (PROTOCOL.md: NUL removed, lone surrogates as
    U+FFFD, a surrogate pair split across deltas joined)."""
    return (
        text.replace("\x00", "").encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    )


def test_hostile_upstream_text_round_trips_exactly(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    expected = _clean("".join(HOSTILE_PIECES))
    assert "\ufffd" in expected and "\U0001f600" in expected and "\x00" not in expected
    configure(MAX_OUTPUT_CHARS=2 * len(expected))  # a 1 MB piece is part of the answer
    upstream.respond(chunks=openai_chunks(HOSTILE_PIECES, usage=USAGE))
    result = client_e2e.read_sse("POST", "/llmstream/stream/", json={"prompt": "be hostile"})
    names = [e.event for e in result.events]
    # The framing held: no injected event, ids strictly increasing, one terminal event.
    assert names[0] == "start" and names[-1] == "done"
    assert set(names) == {"start", "delta", "done"}
    ids = [int(e.id) for e in result.events]
    assert ids == sorted(set(ids))
    assert result.terminal.json()["finish_reason"] == "stop"
    assert result.text == expected
    start = result.events[0].json()
    turn = Message.objects.get(pk=start["turn"])
    assert turn.content == expected
    detail = client_e2e.http.get(f"/llmstream/conversations/{start['conversation']}/").json()
    assert detail["messages"][-1]["content"] == expected

    events_url = f"/llmstream/turns/{start['turn']}/events/"
    for source in ("broker", "database"):
        if source == "database":
            get_broker().forget(start["turn"])  # type: ignore[attr-defined]
        replay = client_e2e.read_sse("GET", events_url)
        assert replay.text == expected, source
        # htmx: escaped fragments; as text they are the answer (CR arrives as LF: an SSE
        # data line cannot hold a CR, PROTOCOL.md).
        fragments = client_e2e.read_sse("GET", events_url + "?format=html")
        markup = "".join(e.data for e in fragments.by_type("delta"))
        assert "<" not in markup and ">" not in markup
        assert html.unescape(markup) == expected.replace("\r\n", "\n").replace("\r", "\n")
        assert [e.event for e in fragments.events] == [*replay_names(replay), "close"]


def replay_names(result: Any) -> list[str]:
    return [e.event for e in result.events]


def test_hostile_prompt_of_a_megabyte_round_trips(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    configure(MAX_PROMPT_CHARS=2_000_000, MAX_BODY_BYTES=4_000_000)
    prompt = "".join(HOSTILE_PIECES[:-2]) + "\u20ac" * 350_000  # ~1 MB of UTF-8
    expected = _clean(prompt)
    upstream.respond(chunks=openai_chunks(["fine"], usage=USAGE))
    # JSON with \ud800 escapes: a lone surrogate cannot be sent as UTF-8 (httpx's json=).
    body = json.dumps({"prompt": prompt, "system": prompt[:5000]})
    created = client_e2e.http.post("/llmstream/turns/", content=body, headers=JSON)
    assert created.status_code == 201, created.text[:500]
    result = client_e2e.read_sse("GET", created.json()["events_url"])
    assert result.terminal.event == "done", result.events[-1:]
    sent = upstream.requests[-1].json["messages"]
    assert sent[0] == {"role": "system", "content": _clean(prompt[:5000])}
    assert sent[-1] == {"role": "user", "content": expected}
    start = result.events[0].json()
    assert Message.objects.get(conversation_id=start["conversation"], role="user").content == (
        expected
    )
    detail = client_e2e.http.get(f"/llmstream/conversations/{start['conversation']}/").json()
    assert detail["messages"][0]["content"] == expected
    assert detail["system_prompt"] == _clean(prompt[:5000])
    listing = client_e2e.http.get("/llmstream/conversations/").json()
    title = listing["results"][0]["title"]
    assert "\n" not in title and "\r" not in title and "\x00" not in title

    # The htmx answer to a form post shows the prompt escaped.
    upstream.respond(chunks=openai_chunks(["fine"], usage=USAGE))
    response = client_e2e.http.post(
        "/llmstream/turns/?format=html", content=json.dumps({"prompt": prompt}), headers=JSON
    )
    assert response.status_code == 201
    assert "<script>alert" not in response.text and "<img src=x" not in response.text
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in response.text
    client_e2e.read_sse("GET", f"/llmstream/turns/{response.headers['x-llmstream-turn']}/events/")


def test_hostile_upstream_error_is_escaped_in_html(
    client_e2e: Client, configure: Any, upstream: Any
) -> None:
    message = "<script>alert(1)</script>\nevent: done\ndata: {}"
    upstream.respond(status=400, body=json.dumps({"error": {"message": message}}).encode())
    created = client_e2e.post_json("/llmstream/turns/", {"prompt": "hi"}).json()
    fragments = client_e2e.read_sse("GET", created["events_url"] + "?format=html")
    assert [e.event for e in fragments.events] == ["start", "error", "close"]
    error_html = fragments.by_type("error")[0].data
    assert "<script>" not in error_html and "&lt;script&gt;" in error_html
    as_json = client_e2e.read_sse("GET", created["events_url"])
    assert [e.event for e in as_json.events] == ["start", "error"]


# -- quotas ----------------------------------------------------------------------------------


def _wait_for_a_fresh_minute(margin: float = 10) -> None:
    """Keep a test of the per-minute window from straddling two windows."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.05)


def test_quotas_are_429_with_retry_after(client_e2e: Client, configure: Any, upstream: Any) -> None:
    configure(LIMITS={"CONCURRENT_TURNS_PER_OWNER": 1, "REQUESTS_PER_MINUTE": 3})
    _wait_for_a_fresh_minute()
    upstream.respond(chunks=openai_chunks(["a", "b", "c"], usage=USAGE), stall_after=2)
    running = client_e2e.post_json("/llmstream/turns/", {"prompt": "one"}).json()
    client_e2e.read_sse("GET", running["events_url"], stop_when=lambda e: e.event == "delta")
    before = Message.objects.count()
    for path in ("/llmstream/turns/", "/llmstream/stream/"):
        response = client_e2e.post_json(path, {"prompt": "two"})
        error = _assert_error(response, 429, "too_many_running_turns")
        assert error["field"] is None and "1" in error["message"]
        assert int(response.headers["retry-after"]) >= 1
    assert Message.objects.count() == before
    assert client_e2e.http.post(running["stop_url"]).status_code == 202
    wait_for(lambda: Message.objects.get(pk=running["turn"]).is_terminal)

    for _ in range(2):  # requests 2 and 3 of this minute
        upstream.respond(chunks=openai_chunks(["ok"], usage=USAGE))
        done = client_e2e.read_sse("POST", "/llmstream/stream/", json={"prompt": "again"})
        assert done.terminal.event == "done"
    response = client_e2e.post_json("/llmstream/stream/", {"prompt": "four"})
    error = _assert_error(response, 429, "rate_limited")
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert "3" in error["message"]
    assert len(upstream.requests) == 3


# -- several workers -------------------------------------------------------------------------

needs_redis_and_postgres = [
    pytest.mark.skipif(
        not os.environ.get("REDIS_URL"),
        reason="REDIS_URL is not set (.ci/run sets it when Redis answers)",
    ),
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
        reason="several worker processes need PostgreSQL (DATABASE_URL); SQLite locks",
    ),
]


@pytest.fixture
def limited_workers(worker_env: dict[str, str]) -> Iterator[tuple[Worker, Worker]]:
    env = {
        **worker_env,
        "DJANGO_SETTINGS_MODULE": "tests.security_worker_settings",
        "LLMSTREAM_TEST_LIMITS": json.dumps(
            {"CONCURRENT_TURNS_PER_OWNER": 1, "REQUESTS_PER_MINUTE": 3}
        ),
    }
    a = Worker(env)
    try:
        b = Worker(env)
    except BaseException:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


@needs_redis_and_postgres[0]
@needs_redis_and_postgres[1]
def test_quotas_count_across_workers(limited_workers: tuple[Worker, Worker], upstream: Any) -> None:
    """One visitor, two workers, no sticky sessions: the running turn on A counts on B (the
    database), and the requests of the minute add up over both (the shared cache)."""
    a, b = limited_workers
    _wait_for_a_fresh_minute(20)
    upstream.respond(chunks=openai_chunks(["a", "b", "c"], usage=USAGE), stall_after=2)
    on_a = _client(a)
    running = on_a.post_json("/llmstream/turns/", {"prompt": "one"}).json()  # request 1
    on_a.read_sse("GET", running["events_url"], stop_when=lambda e: e.event == "delta")
    on_b = _client(b, on_a.http.cookies)
    _assert_error(
        on_b.post_json("/llmstream/turns/", {"prompt": "two"}), 429, "too_many_running_turns"
    )
    assert on_b.http.post(running["stop_url"]).status_code == 202
    wait_for(lambda: Message.objects.get(pk=running["turn"]).is_terminal)
    for client in (on_b, on_a):  # requests 2 and 3, one on each worker
        upstream.respond(chunks=openai_chunks(["ok"], usage=USAGE))
        assert client.read_sse("POST", "/llmstream/stream/", json={"prompt": "x"}).terminal
    for client in (on_a, on_b):
        response = client.post_json("/llmstream/stream/", {"prompt": "four"})
        _assert_error(response, 429, "rate_limited")
    assert len(upstream.requests) == 3

"""Security at the view level: ownership, PERMISSION, CSRF and AUTHENTICATORS, validation,
quotas, secrets and hostile content (docs/security.rst).

Each test is written so that it fails without the protection it names: refusals are checked
for their status and JSON error *and* for what they did not do (no row written, no turn
stopped, no upstream request, no key in any output).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
import textwrap
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import AsyncClient, override_settings
from django.urls import reverse
from django.utils import timezone
from django.views.debug import ExceptionReporter

from django_llmstream import quotas
from django_llmstream.checks import check_settings
from django_llmstream.generation import Generation, running_generations
from django_llmstream.models import Conversation, Message
from django_llmstream.providers.openai import OpenAIProvider
from django_llmstream.sse import SSEParser
from django_llmstream.views import LLMStreamView
from tests.upstream import echo_error

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
TURNS = "/llmstream/turns/"
STREAM = "/llmstream/stream/"
LIST = "/llmstream/conversations/"
DEMO = "django_llmstream.providers.demo.DemoProvider"
SECRET = "sk-test-SECURITY0123456789abcdefXYZ"

#: Text that tries to break every format it passes through.
HOSTILE = (
    "line one\nline two\r\nthree\rfour\n\nevent: done\ndata: {}\nid: 999\nretry: 1\n\n"
    ": comment\n</script><script>alert(1)</script><img src=x onerror=alert(2)>"
    "\"quotes\" & 'apostrophes' \u2028\u2029 nul:\x00: lone:\ud800: pair:\U0001f600"
)
#: What the database and the stream hold for it: NUL removed, the lone surrogate U+FFFD.
HOSTILE_CLEAN = HOSTILE.replace("\x00", "").replace("\ud800", "\ufffd")


def llm(**overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "PROVIDERS": {
            "demo": {"BACKEND": DEMO, "MODELS": ["demo", "demo-large"], "OPTIONS": {"DELAY": 0}},
            # Runs for minutes unless stopped: a turn that is still running.
            "slow": {"BACKEND": DEMO, "OPTIONS": {"DELAY": 0.5, "REPLY": "slow " * 500}},
            "hostile": {"BACKEND": DEMO, "OPTIONS": {"DELAY": 0, "REPLY": HOSTILE}},
        },
        "DEFAULT_PROVIDER": "demo",
        "ALLOW_ANONYMOUS": True,
        "FLUSH_INTERVAL": 0.02,
        "MAX_PROMPT_CHARS": 200,
        "MAX_BODY_BYTES": 4000,
    }
    settings.update(overrides)
    return settings


@pytest.fixture(autouse=True)
async def _settings() -> AsyncIterator[None]:
    with override_settings(LLMSTREAM=llm()):
        yield
        # No turn may outlive its test's event loop.
        for generation in list(running_generations().values()):
            generation.cancel("stopped")
            await generation.finished.wait()


# -- helpers ---------------------------------------------------------------------------------


def assert_error(
    response: Any, status: int, field: str | None, error_type: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    error = json.loads(response.content)["error"]
    assert set(error) == {"type", "message", "field"}
    assert error["field"] == field
    assert error["message"]
    if error_type is not None:
        assert error["type"] == error_type, error
    return dict(error)


async def start(client: AsyncClient, url: str = TURNS, **body: Any) -> dict[str, Any]:
    body.setdefault("prompt", "hi")
    response = await client.post(url, body, content_type="application/json")
    assert response.status_code == 201, response.content
    return dict(json.loads(response.content))


async def read_events(
    client: AsyncClient, url: str, **headers: str
) -> list[tuple[str, str, str | None]]:
    """``(event, data, id)`` of a whole event stream."""
    response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.content
    parser = SSEParser()
    events: list[tuple[str, str, str | None]] = []
    async for chunk in streamed_body(response):
        events += [(e.event, e.data, e.id) for e in parser.feed(chunk)]
    return events


def streamed_body(response: Any) -> AsyncIterator[bytes]:
    """The chunks of a streaming response of the test client."""
    chunks: AsyncIterator[bytes] = response.streaming_content
    return chunks


async def finish(client: AsyncClient, body: dict[str, Any]) -> None:
    events = await read_events(client, body["events_url"])
    assert events[-1][0] in {"done", "error"}


async def stop(client: AsyncClient, body: dict[str, Any]) -> None:
    response = await client.post(body["stop_url"])
    assert response.status_code == 202
    await finish(client, body)


async def rows() -> list[tuple[str, str, str]]:
    """Every message's id, role and status (a running turn may go from pending to streaming):
    what a refused request must leave alone."""
    return [
        (str(m.pk), m.role, "running" if m.status in {"pending", "streaming"} else m.status)
        async for m in Message.objects.order_by("created_at", "pk").only("pk", "role", "status")
    ]


async def user(name: str, **extra: Any) -> Any:
    return await get_user_model().objects.acreate_user(name, password="pw", **extra)


async def logged_in(name: str) -> tuple[AsyncClient, Any]:
    account = await user(name)
    client = AsyncClient()
    await client.aforce_login(account)
    return client, account


# -- ownership -------------------------------------------------------------------------------


async def test_others_get_404_from_every_endpoint_and_change_nothing() -> None:
    alice = AsyncClient()  # an anonymous visitor: her session owns her conversations
    done = await start(alice)
    await finish(alice, done)
    running = await start(alice, provider="slow")
    mallory = AsyncClient()  # another visitor
    bob, _ = await logged_in("bob")  # a logged-in user
    before = await rows()
    for stranger in (mallory, bob):
        for body in (done, running):
            conversation, turn = body["conversation"], body["turn"]
            assert_error(await stranger.get(f"{LIST}{conversation}/"), 404, "conversation")
            assert_error(await stranger.get(body["events_url"]), 404, "turn")
            assert_error(await stranger.get(body["events_url"] + "?format=html"), 404, "turn")
            assert_error(await stranger.post(body["stop_url"]), 404, "turn")
            for url in (TURNS, STREAM):
                response = await stranger.post(
                    url, {"prompt": "mine now", "conversation": conversation}, "application/json"
                )
                assert_error(response, 404, "conversation", "not_found")
            # A turn id is no conversation id, and the other way round.
            assert_error(await stranger.get(f"{LIST}{turn}/"), 404, "conversation")
            assert_error(await stranger.post(f"{TURNS}{conversation}/stop/"), 404, "turn")
        listing = json.loads((await stranger.get(LIST)).content)
        assert listing == {"results": [], "next": None}
    # Nothing was written, and the running turn was not stopped.
    assert await rows() == before
    assert (await Message.objects.aget(pk=running["turn"])).status in {"pending", "streaming"}
    # A 404 says the same as for an id that does not exist at all.
    missing = uuid.uuid4()
    assert (
        assert_error(await alice.get(f"{LIST}{missing}/"), 404, "conversation")["message"]
        == assert_error(await mallory.get(f"{LIST}{done['conversation']}/"), 404, "conversation")[
            "message"
        ]
    )
    await stop(alice, running)


async def test_every_endpoint_goes_through_get_queryset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ownership lives in one hook: an override that hides everything hides it everywhere."""
    alice = AsyncClient()
    body = await start(alice, provider="slow")
    before = await rows()
    monkeypatch.setattr(LLMStreamView, "get_queryset", lambda self: Conversation.objects.none())
    assert_error(await alice.get(f"{LIST}{body['conversation']}/"), 404, "conversation")
    assert_error(await alice.get(body["events_url"]), 404, "turn")
    assert_error(await alice.post(body["stop_url"]), 404, "turn")
    for url in (TURNS, STREAM):
        response = await alice.post(
            url, {"prompt": "x", "conversation": body["conversation"]}, "application/json"
        )
        assert_error(response, 404, "conversation")
    assert json.loads((await alice.get(LIST)).content)["results"] == []
    assert await rows() == before
    monkeypatch.undo()
    await stop(alice, body)


async def test_ids_are_random_uuids() -> None:
    client = AsyncClient()
    body = await start(client)
    await finish(client, body)
    assert uuid.UUID(body["conversation"]).version == 4
    assert uuid.UUID(body["turn"]).version == 4
    # Guessable ids do not even route.
    assert_error(await client.get(f"{LIST}1/"), 404, None, "not_found")
    assert_error(await client.get(f"{TURNS}1/events/"), 404, None, "not_found")
    assert_error(await client.post(f"{TURNS}1/stop/"), 404, None, "not_found")


# -- PERMISSION ------------------------------------------------------------------------------

CALLS: list[tuple[str, str | None]] = []
DENIED: set[str] = set()


def recording_permission(request: Any, action: str, conversation: Any) -> bool:
    """A sync rule (run in a thread): records what it was asked, allows everything."""
    CALLS.append((action, None if conversation is None else str(conversation.pk)))
    return True


async def denying_permission(request: Any, action: str, conversation: Any) -> bool:
    """An async rule: refuses the actions in DENIED."""
    return action not in DENIED


@pytest.fixture
def permission_log() -> Iterator[list[tuple[str, str | None]]]:
    CALLS.clear()
    DENIED.clear()
    yield CALLS
    CALLS.clear()
    DENIED.clear()


async def test_permission_is_asked_for_every_action(
    permission_log: list[tuple[str, str | None]],
) -> None:
    with override_settings(LLMSTREAM=llm(PERMISSION="tests.test_security.recording_permission")):
        client = AsyncClient()
        body = await start(client)
        conversation = body["conversation"]
        await finish(client, body)
        assert (await client.get(LIST)).status_code == 200
        assert (await client.get(f"{LIST}{conversation}/")).status_code == 200
        assert (await client.post(body["stop_url"])).status_code == 202
        streamed = await client.post(
            STREAM,
            {"prompt": "more", "conversation": conversation},
            content_type="application/json",
        )
        assert streamed.status_code == 200
        [chunk async for chunk in streamed_body(streamed)]
    assert permission_log == [
        ("start", None),
        ("view", conversation),
        ("list", None),
        ("view", conversation),
        ("stop", conversation),
        ("start", conversation),
    ]


async def test_permission_refusals_are_403_json_and_change_nothing(
    permission_log: list[tuple[str, str | None]],
) -> None:
    with override_settings(LLMSTREAM=llm(PERMISSION="tests.test_security.denying_permission")):
        client = AsyncClient()
        DENIED.add("start")
        for url in (TURNS, STREAM):
            response = await client.post(url, {"prompt": "hi"}, content_type="application/json")
            assert_error(response, 403, None, "forbidden")
        html = await client.post(TURNS + "?format=html", {"prompt": "hi"})
        assert html.status_code == 403 and html["X-LLMStream-Error"] == "forbidden"
        assert await rows() == []

        DENIED.clear()
        body = await start(client, provider="slow")
        before = await rows()
        DENIED.update({"view", "stop", "list"})
        assert_error(await client.get(f"{LIST}{body['conversation']}/"), 403, None, "forbidden")
        assert_error(await client.get(body["events_url"]), 403, None, "forbidden")
        assert_error(await client.post(body["stop_url"]), 403, None, "forbidden")
        assert_error(await client.get(LIST), 403, None, "forbidden")
        assert await rows() == before  # the refused stop stopped nothing
        DENIED.clear()
        await stop(client, body)


async def test_ownership_comes_before_the_permission_rule(
    permission_log: list[tuple[str, str | None]],
) -> None:
    with override_settings(LLMSTREAM=llm(PERMISSION="tests.test_security.recording_permission")):
        alice, mallory = AsyncClient(), AsyncClient()
        body = await start(alice)
        await finish(alice, body)
        permission_log.clear()
        assert_error(await mallory.get(f"{LIST}{body['conversation']}/"), 404, "conversation")
        assert_error(await mallory.get(body["events_url"]), 404, "turn")
        assert_error(await mallory.post(body["stop_url"]), 404, "turn")
        # The rule never saw alice's conversation on mallory's behalf.
        assert permission_log == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("tests.test_security.recording_permission", []),
        ("tests.test_security.denying_permission", []),
        (None, []),
        ("tests.test_security.no_such_function", ["llmstream.E030"]),
        ("no_such_module.rule", ["llmstream.E030"]),
        ("tests.test_security.CALLS", ["llmstream.E030"]),  # not callable
        (42, ["llmstream.E030"]),
    ],
)
def test_permission_setting_is_checked_at_start_up(value: Any, expected: list[str]) -> None:
    with override_settings(LLMSTREAM=llm(PERMISSION=value)):
        assert [m.id for m in check_settings()] == expected
        if expected:
            with pytest.raises(SystemCheckError, match="E030"):
                call_command("check")


# -- CSRF and AUTHENTICATORS ------------------------------------------------------------------


async def test_every_post_needs_the_csrf_token_under_session_auth() -> None:
    token = "c" * 32
    client = AsyncClient(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = token
    good = {"X-CSRFToken": token}
    response = await client.post(
        TURNS, {"prompt": "hi", "provider": "slow"}, "application/json", headers=good
    )
    assert response.status_code == 201, response.content
    body = json.loads(response.content)
    before = await rows()
    # The same session cookie without the token: what a forged cross-site request carries.
    for url in (TURNS, STREAM):
        for headers in ({}, {"X-CSRFToken": "d" * 32}):
            response = await client.post(
                url, {"prompt": "forged"}, "application/json", headers=headers
            )
            error = assert_error(response, 403, None, "csrf_failed")
            assert "CSRF" in error["message"]
        forged_form = await client.post(url, {"prompt": "forged", "csrfmiddlewaretoken": "e" * 32})
        assert_error(forged_form, 403, None, "csrf_failed")
    assert_error(await client.post(body["stop_url"]), 403, None, "csrf_failed")
    assert await rows() == before  # nothing written, the turn not stopped
    # Reading needs no token; the real token still works.
    assert (await client.get(f"{LIST}{body['conversation']}/")).status_code == 200
    assert (await client.post(body["stop_url"], headers=good)).status_code == 202
    await finish(client, body)


def docs_example(caption: str) -> str:
    """The code of the ``code-block`` with ``:caption: <caption>`` in docs/security.rst."""
    text = (ROOT / "docs" / "security.rst").read_text(encoding="utf-8")
    match = re.search(
        r"^\.\. code-block:: python\n   :caption: " + re.escape(caption) + r"\n\n((?:   .*\n|\n)+)",
        text,
        re.M,
    )
    assert match, f"docs/security.rst has no python code-block captioned {caption}"
    return textwrap.dedent(match.group(1))


@pytest.fixture
def docs_bearer(monkeypatch: pytest.MonkeyPatch) -> str:
    """The Bearer authenticator of docs/security.rst, importable as a dotted path."""
    module = types.ModuleType("tests._security_docs_bearer")
    code = compile(docs_example("mysite/llmstream_auth.py"), "docs/security.rst", "exec")
    exec(code, module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return f"{module.__name__}.bearer_token"


async def test_bearer_authenticator_of_the_docs(docs_bearer: str) -> None:
    token = "reporting-bot-token-0123456789"
    tokens = {hashlib.sha256(token.encode()).hexdigest(): "reporting-bot"}
    bot = await user("reporting-bot")
    await user("retired-bot", is_active=False)
    tokens[hashlib.sha256(b"retired-token").hexdigest()] = "retired-bot"
    settings = llm(AUTHENTICATORS=[docs_bearer], ALLOW_ANONYMOUS=False)
    with override_settings(LLMSTREAM=settings, API_TOKENS=tokens):
        # An API client: no cookie, no CSRF token, CSRF checks enforced.
        api = AsyncClient(enforce_csrf_checks=True)
        auth = {"Authorization": f"Bearer {token}"}
        response = await api.post(TURNS, {"prompt": "report"}, J, headers=auth)
        assert response.status_code == 201, response.content
        assert "sessionid" not in response.cookies  # no session was made for it
        body = json.loads(response.content)
        conversation = await Conversation.objects.aget(pk=body["conversation"])
        assert conversation.owner_id == bot.pk and conversation.session_key == ""
        events = await read_events(api, body["events_url"], **auth)
        assert events[-1][0] == "done"
        listing = json.loads((await api.get(LIST, headers=auth)).content)
        assert [c["id"] for c in listing["results"]] == [body["conversation"]]
        streamed = await api.post(STREAM, {"prompt": "again"}, J, headers=auth)
        assert streamed.status_code == 200
        assert streamed["Content-Type"].startswith("text/event-stream")
        [chunk async for chunk in streamed_body(streamed)]
        assert (await api.post(body["stop_url"], headers=auth)).status_code == 202
        # The token is the credential: the same client without it is nobody.
        assert_error(await api.get(LIST), 403, None, "not_authenticated")
        before = await rows()

        # A token nobody issued, or one of an inactive user: refused, nothing written.
        for bad in ("Bearer wrong-token", "Bearer retired-token", "Bearer "):
            stranger = AsyncClient(enforce_csrf_checks=True)
            response = await stranger.post(
                TURNS, {"prompt": "x"}, J, headers={"Authorization": bad}
            )
            assert_error(response, 403, None, "not_authenticated")
        # Without the header it is a session request: CSRF applies again, even to the bot
        # logged in by session.
        session = AsyncClient(enforce_csrf_checks=True)
        await session.aforce_login(bot)
        response = await session.post(TURNS, {"prompt": "x"}, content_type="application/json")
        assert_error(response, 403, None, "csrf_failed")
        assert await rows() == before
        # Someone else, by session, cannot see the bot's conversation.
        other, _ = await logged_in("someone")
        assert_error(await other.get(f"{LIST}{body['conversation']}/"), 404, "conversation")


async def failing_authenticator(request: Any) -> Any:
    raise AssertionError("must not be reached")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], []),
        (["tests.test_security.failing_authenticator"], []),
        ("tests.test_security.failing_authenticator", ["llmstream.E031"]),  # not a list
        (["tests.test_security.nothing_here"], ["llmstream.E031"]),
        (["tests.test_security.DENIED"], ["llmstream.E031"]),
        ([None], ["llmstream.E031"]),
    ],
)
def test_authenticators_setting_is_checked_at_start_up(value: Any, expected: list[str]) -> None:
    with override_settings(LLMSTREAM=llm(AUTHENTICATORS=value)):
        assert [m.id for m in check_settings()] == expected


# -- validation ------------------------------------------------------------------------------

J = "application/json"
F = "application/x-www-form-urlencoded"

# (raw body or JSON object, content type, status, field, error type)
BAD_INPUT: list[tuple[Any, str, int, str | None, str | None]] = [
    ("{not json", J, 400, None, "invalid_request"),
    ("[1, 2]", J, 400, None, "invalid_request"),
    ('"prompt"', J, 400, None, "invalid_request"),
    (b"\xff\xfe{}", J, 400, None, "invalid_request"),
    ("prompt=hi", "text/plain", 415, None, "unsupported_media_type"),
    ("<prompt>hi</prompt>", "application/xml", 415, None, "unsupported_media_type"),
    ({}, J, 400, "prompt", "invalid_request"),
    ({"prompt": ""}, J, 400, "prompt", "invalid_request"),
    ({"prompt": " \n\t\r "}, J, 400, "prompt", "invalid_request"),
    ({"prompt": "\x00\x00"}, J, 400, "prompt", "invalid_request"),
    ({"prompt": None}, J, 400, "prompt", "invalid_request"),
    ({"prompt": ["hi"]}, J, 400, "prompt", "invalid_request"),
    ({"prompt": "x" * 201}, J, 400, "prompt", "invalid_request"),
    ({"prompt": "x" * 5000}, J, 413, None, "request_too_large"),
    ({"prompt": "hi", "provider": "nope"}, J, 400, "provider", "invalid_request"),
    ({"prompt": "hi", "provider": "DEMO"}, J, 400, "provider", "invalid_request"),
    ({"prompt": "hi", "provider": 5}, J, 400, "provider", "invalid_request"),
    ({"prompt": "hi", "model": "gpt-4o"}, J, 400, "model", "invalid_request"),
    ({"prompt": "hi", "provider": "slow", "model": "demo-large"}, J, 400, "model", None),
    ({"prompt": "hi", "conversation": "not-a-uuid"}, J, 400, "conversation", "invalid_request"),
    ({"prompt": "hi", "conversation": 5}, J, 400, "conversation", "invalid_request"),
    ({"prompt": "hi", "conversation": "../1"}, J, 400, "conversation", "invalid_request"),
    ({"prompt": "hi", "conversation": str(uuid.uuid4())}, J, 404, "conversation", "not_found"),
    ({"prompt": "hi", "system": 7}, J, 400, "system", "invalid_request"),
    ({"prompt": "hi", "system": "s" * 201}, J, 400, "system", "invalid_request"),
    ({"prompt": "hi", "params": []}, J, 400, "params", "invalid_request"),
    ({"prompt": "hi", "params": "temperature=1"}, J, 400, "params", "invalid_request"),
    ({"prompt": "hi", "params": {"temperature": 3}}, J, 400, "params.temperature", None),
    ({"prompt": "hi", "params": {"temperature": -0.1}}, J, 400, "params.temperature", None),
    ({"prompt": "hi", "params": {"temperature": "hot"}}, J, 400, "params.temperature", None),
    ({"prompt": "hi", "params": {"temperature": True}}, J, 400, "params.temperature", None),
    ('{"prompt": "hi", "params": {"temperature": NaN}}', J, 400, "params.temperature", None),
    ('{"prompt": "hi", "params": {"top_p": Infinity}}', J, 400, "params.top_p", None),
    ({"prompt": "hi", "params": {"max_tokens": 0}}, J, 400, "params.max_tokens", None),
    ({"prompt": "hi", "params": {"max_tokens": 1.5}}, J, 400, "params.max_tokens", None),
    ({"prompt": "hi", "params": {"max_tokens": 10**7}}, J, 400, "params.max_tokens", None),
    ({"prompt": "hi", "params": {"logit_bias": {"1": 5}}}, J, 400, "params.logit_bias", None),
    ({"prompt": "hi", "params": {"stream": False}}, J, 400, "params.stream", None),
    ({"prompt": "hi", "params": {"model": "gpt-4o"}}, J, 400, "params.model", None),
    ({"prompt": "hi", "params": {"messages": []}}, J, 400, "params.messages", None),
    # No way to choose where the request goes or what it carries (SSRF, header injection).
    (
        {"prompt": "hi", "params": {"base_url": "http://169.254.169.254/"}},
        J,
        400,
        "params.base_url",
        None,
    ),
    (
        {"prompt": "hi", "params": {"headers": {"Authorization": "x"}}},
        J,
        400,
        "params.headers",
        None,
    ),
    (
        {"prompt": "hi", "params": {"extra_headers": {"X": "y"}}},
        J,
        400,
        "params.extra_headers",
        None,
    ),
    ({"prompt": "hi", "params": {"api_key": "sk-mine"}}, J, 400, "params.api_key", None),
    ({"prompt": "hi", "params": {"extra_body": {}}}, J, 400, "params.extra_body", None),
    ({"prompt": "hi", "base_url": "http://127.0.0.1:22/"}, J, 400, "base_url", None),
    ({"prompt": "hi", "url": "http://internal/"}, J, 400, "url", None),
    ({"prompt": "hi", "headers": {"Host": "internal"}}, J, 400, "headers", None),
    ({"prompt": "hi", "api_key": "sk-mine"}, J, 400, "api_key", None),
    ({"prompt": "hi", "endpoint": "/v1/files"}, J, 400, "endpoint", None),
    # The same through a form.
    ({"prompt": ""}, F, 400, "prompt", "invalid_request"),
    ({"prompt": "hi", "params": "{broken"}, F, 400, "params", "invalid_request"),
    ({"prompt": "hi", "params[temperature]": "9"}, F, 400, "params.temperature", None),
    ({"prompt": "hi", "params[base_url]": "http://x/"}, F, 400, "params.base_url", None),
    ({"prompt": "hi", "base_url": "http://x/"}, F, 400, "base_url", None),
]


def _encode(body: Any, content_type: str) -> Any:
    if isinstance(body, str | bytes):
        return body
    return urlencode(body) if content_type == F else json.dumps(body)


@pytest.mark.parametrize("url", [TURNS, STREAM, TURNS + "?format=html"])
@pytest.mark.parametrize(("body", "content_type", "status", "field", "error_type"), BAD_INPUT)
async def test_bad_input_is_refused_and_writes_nothing(
    url: str,
    body: Any,
    content_type: str,
    status: int,
    field: str | None,
    error_type: str | None,
) -> None:
    client = AsyncClient()
    response = await client.post(url, _encode(body, content_type), content_type=content_type)
    if url.endswith("format=html"):
        # htmx forms get the same status with an HTML fragment naming the error type.
        assert response.status_code == status, response.content
        assert response["Content-Type"].startswith("text/html")
        if error_type is not None:
            assert response["X-LLMStream-Error"] == error_type
    else:
        assert_error(response, status, field, error_type)
    assert await Conversation.objects.acount() == 0
    assert await Message.objects.acount() == 0


async def test_params_reach_the_turn_only_when_allowed() -> None:
    with override_settings(LLMSTREAM=llm(ALLOWED_PARAMS={"temperature": {"type": "float"}})):
        client = AsyncClient()
        refused = await client.post(
            TURNS, {"prompt": "hi", "params": {"max_tokens": 5}}, content_type=J
        )
        assert_error(refused, 400, "params.max_tokens")
        body = await start(client, params={"temperature": 0.5})
        await finish(client, body)
        turn = await Message.objects.aget(pk=body["turn"])
        assert turn.params == {"temperature": 0.5}


# -- quotas ----------------------------------------------------------------------------------


def assert_quota(response: Any, error_type: str, retry_after: tuple[int, int]) -> dict[str, Any]:
    error = assert_error(response, 429, None, error_type)
    low, high = retry_after
    assert low <= int(response["Retry-After"]) <= high, response["Retry-After"]
    return error


async def test_concurrent_turns_per_owner() -> None:
    with override_settings(LLMSTREAM=llm(LIMITS={"CONCURRENT_TURNS_PER_OWNER": 2})):
        alice = AsyncClient()
        first = await start(alice, provider="slow")
        second = await start(alice, url=TURNS, provider="slow")
        before = await rows()
        for url in (TURNS, STREAM):
            response = await alice.post(url, {"prompt": "third"}, content_type=J)
            error = assert_quota(response, "too_many_running_turns", (1, 60))
            assert "2" in error["message"]
        assert await rows() == before
        # Another owner has their own count.
        bob, _ = await logged_in("bob")
        await stop(bob, await start(bob, provider="slow"))
        # Once one has ended, alice may start again.
        await stop(alice, first)
        third = await start(alice)
        await finish(alice, third)
        await stop(alice, second)


async def test_running_turns_are_counted_in_the_database() -> None:
    """What counts is the database, as every worker sees it: a turn another worker runs
    (a live lease) counts; a turn whose worker died (lease run out) does not."""
    with override_settings(LLMSTREAM=llm(LIMITS={"CONCURRENT_TURNS_PER_OWNER": 1})):
        alice = AsyncClient()
        body = await start(alice)
        await finish(alice, body)
        conversation = await Conversation.objects.aget(pk=body["conversation"])
        now = timezone.now()
        await Message.objects.acreate(
            conversation=conversation,
            role="assistant",
            status="streaming",
            lease_expires_at=now - timedelta(seconds=1),
        )
        await finish(alice, await start(alice))  # the dead turn does not count
        elsewhere = await Conversation.objects.acreate(
            session_key=conversation.session_key, provider="demo", model="demo"
        )
        await Message.objects.acreate(
            conversation=elsewhere,
            role="assistant",
            status="streaming",
            lease_expires_at=now + timedelta(seconds=30),
        )
        before = await rows()
        response = await alice.post(TURNS, {"prompt": "hi"}, content_type=J)
        assert_quota(response, "too_many_running_turns", (1, 60))
        assert await rows() == before


@pytest.fixture
def quota_cache() -> Iterator[str]:
    """A cache alias of its own for the request counter."""
    alias = "llmstream-quota"
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        alias: {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"quota-{uuid.uuid4()}",
        },
    }
    with override_settings(CACHES=caches):
        yield alias


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


async def test_requests_per_minute(quota_cache: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.cache import caches

    clock = Clock(1_800_000_015.0)  # 15 s into a one-minute window
    monkeypatch.setattr(quotas, "time", clock)
    limits = {"REQUESTS_PER_MINUTE": 3, "CACHE": quota_cache}
    with override_settings(LLMSTREAM=llm(LIMITS=limits)):
        alice = AsyncClient()
        # Refused requests are not counted: they cost nothing upstream.
        for _ in range(5):
            response = await alice.post(TURNS, {"prompt": ""}, content_type=J)
            assert_error(response, 400, "prompt")
        for _ in range(3):
            await finish(alice, await start(alice))
        before = await rows()
        for url in (TURNS, STREAM, TURNS + "?format=html"):
            response = await alice.post(url, {"prompt": "hi"}, content_type=J)
            if "format=html" in url:
                assert response.status_code == 429
                assert response["X-LLMStream-Error"] == "rate_limited"
                assert response["Retry-After"] == "45"
            else:
                error = assert_quota(response, "rate_limited", (45, 45))
                assert "3" in error["message"]
        assert await rows() == before
        # The count lives in the configured cache, where every worker sees it.
        window = int(clock.now // 60)
        session = await Conversation.objects.afirst()
        assert session is not None
        key = f"llmstream:rpm:session:{session.session_key}:{window}"
        assert await caches[quota_cache].aget(key) == 6
        assert await caches["default"].aget(key) is None
        # A count another worker made is honoured: bob has used his minute elsewhere.
        bob, account = await logged_in("bob")
        await caches[quota_cache].aset(f"llmstream:rpm:user:{account.pk}:{window}", 3)
        assert_quota(
            await bob.post(TURNS, {"prompt": "hi"}, content_type=J), "rate_limited", (45, 45)
        )
        # The next window starts afresh.
        clock.now += 60
        await finish(alice, await start(alice))
        await finish(bob, await start(bob))


async def _usage_row(
    conversation: Conversation, tokens: tuple[int | None, int | None], age: timedelta
) -> None:
    message = await Message.objects.acreate(
        conversation=conversation,
        role="assistant",
        status="completed",
        input_tokens=tokens[0],
        output_tokens=tokens[1],
    )
    await Message.objects.filter(pk=message.pk).aupdate(created_at=timezone.now() - age)


async def test_tokens_per_day_from_stored_usage() -> None:
    with override_settings(LLMSTREAM=llm(LIMITS={"TOKENS_PER_DAY": 1000})):
        ann_client, ann = await logged_in("ann")
        bob_client, bob = await logged_in("bob")
        ann_a = await Conversation.objects.acreate(owner=ann, provider="demo", model="demo")
        ann_b = await Conversation.objects.acreate(owner=ann, provider="demo", model="demo")
        bobs = await Conversation.objects.acreate(owner=bob, provider="demo", model="demo")
        await _usage_row(ann_a, (400, 200), timedelta(hours=23))  # ages out in 1 h
        await _usage_row(ann_b, (None, 300), timedelta(hours=2))  # unknown input: 0
        await _usage_row(ann_a, (50_000, 50_000), timedelta(hours=25))  # yesterday
        await _usage_row(bobs, (10**6, 10**6), timedelta(hours=1))  # someone else's
        # 900 of 1000 used: allowed (a turn may overshoot: its size is unknown beforehand).
        await finish(ann_client, await start(ann_client, prompt="one two three"))
        await _usage_row(ann_b, (100, 50), timedelta(minutes=1))
        used = await quotas.tokens_used(
            Conversation.objects.filter(owner=ann), timezone.now() - timedelta(days=1)
        )
        assert used >= 1050
        before = await rows()
        for url in (TURNS, STREAM):
            response = await ann_client.post(url, {"prompt": "hi"}, content_type=J)
            # Enough ages out when the 23-hour-old 600 tokens do: in an hour.
            error = assert_quota(response, "token_quota_exceeded", (3590, 3601))
            assert f"{used} of 1000" in error["message"]
        assert await rows() == before
        # bob's own usage (2 million tokens an hour ago) is his alone.
        assert_quota(
            await bob_client.post(TURNS, {"prompt": "hi"}, content_type=J),
            "token_quota_exceeded",
            (82790, 82801),
        )
        with override_settings(LLMSTREAM=llm(LIMITS={"TOKENS_PER_DAY": 10**7})):
            await finish(bob_client, await start(bob_client))


async def test_limits_off_by_default_and_when_none() -> None:
    limits = {"CONCURRENT_TURNS_PER_OWNER": None, "REQUESTS_PER_MINUTE": None}
    with override_settings(LLMSTREAM=llm(LIMITS=limits)):
        client = AsyncClient()
        bodies = [await start(client, provider="slow") for _ in range(3)]
        for body in bodies:
            await stop(client, body)


LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
REDIS = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://x/0"}
DBCACHE = {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "llm_cache"}
DUMMY = {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}


@pytest.mark.parametrize(
    ("limits", "caches", "expected"),
    [
        ({}, {"default": LOCMEM}, []),
        ({"CONCURRENT_TURNS_PER_OWNER": 3, "TOKENS_PER_DAY": 10**6}, {"default": LOCMEM}, []),
        ({"REQUESTS_PER_MINUTE": 30}, {"default": REDIS}, []),
        (
            {"REQUESTS_PER_MINUTE": 30, "CACHE": "shared"},
            {"default": LOCMEM, "shared": DBCACHE},
            [],
        ),
        ({"REQUESTS_PER_MINUTE": 30}, {"default": LOCMEM}, ["llmstream.W030"]),
        ({"REQUESTS_PER_MINUTE": 30}, {"default": DUMMY}, ["llmstream.E032"]),
        ({"REQUESTS_PER_MINUTE": 30, "CACHE": "nope"}, {"default": REDIS}, ["llmstream.E032"]),
        ({"CONCURRENT_TURNS_PER_OWNER": 0}, {"default": LOCMEM}, ["llmstream.E032"]),
        ({"TOKENS_PER_DAY": "1000"}, {"default": LOCMEM}, ["llmstream.E032"]),
        ({"TOKENS_PER_DAY": True}, {"default": LOCMEM}, ["llmstream.E032"]),
        ({"CONCURRENT_TURNS": 3}, {"default": LOCMEM}, ["llmstream.E032"]),  # a typo
        ([3], {"default": LOCMEM}, ["llmstream.E032"]),
    ],
)
def test_limits_setting_is_checked_at_start_up(
    limits: Any, caches: dict[str, Any], expected: list[str]
) -> None:
    with override_settings(LLMSTREAM=llm(LIMITS=limits), CACHES=caches):
        assert [m.id for m in check_settings()] == expected


@pytest.mark.parametrize(("value", "on"), [("", True), ("on", True), ("off", False)])
def test_demo_site_reads_llmstream_limits(value: str, on: bool) -> None:
    code = "import json, testproject.settings as s;print(json.dumps(s.LLMSTREAM['LIMITS']))"
    env = {"PATH": "/usr/bin:/bin", "LLMSTREAM_LIMITS": value}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT / "testproject",
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    limits = json.loads(result.stdout)
    names = ("CONCURRENT_TURNS_PER_OWNER", "REQUESTS_PER_MINUTE", "TOKENS_PER_DAY")
    counts = [limits.get(name) for name in names]
    assert all(isinstance(n, int) for n in counts) if on else counts == [None, None, None]


# -- secrets ---------------------------------------------------------------------------------


def test_provider_repr_and_str_hide_every_secret() -> None:
    provider = OpenAIProvider(
        "openai",
        {
            "BASE_URL": f"https://user:{SECRET}-pw@api.example.com/v1?key={SECRET}-q",
            "API_KEY": SECRET,
            "MODELS": ["m"],
            "HEADERS": {"X-Api-Key": f"{SECRET}-h", "HTTP-Referer": "https://site"},
            "QUERY_PARAMS": {"api-key": f"{SECRET}-p"},
        },
    )
    for text in (repr(provider), str(provider), f"{provider!r} {[provider]}"):
        assert SECRET not in text
        assert "api.example.com" in text
    scrubbed = provider.scrub(f"a {SECRET} b {SECRET}-h c {SECRET}-p d {SECRET}-pw e")
    assert SECRET not in scrubbed


async def test_a_500_in_a_view_logs_no_key(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Django's own request logging (and the error report it mails to ADMINS) of an exception
    inside our views, with the key configured and its provider in the frames."""
    settings = llm(
        PROVIDERS={
            "openai": {
                "BACKEND": "django_llmstream.providers.openai.OpenAIProvider",
                "BASE_URL": "http://127.0.0.1:9/v1",
                "API_KEY": SECRET,
                "MODELS": ["m"],
            }
        },
        DEFAULT_PROVIDER="openai",
    )

    async def broken_begin(self: Generation) -> None:
        raise RuntimeError(f"broker unreachable while starting {self.provider!r}")

    monkeypatch.setattr(Generation, "begin", broken_begin)
    caplog.set_level(logging.DEBUG)
    with override_settings(LLMSTREAM=settings):
        client = AsyncClient(raise_request_exception=False)
        response = await client.post(TURNS, {"prompt": "hi"}, content_type=J)
    assert response.status_code == 500
    assert SECRET.encode() not in response.content
    records = [r for r in caplog.records if r.name == "django.request"]
    assert records and records[0].exc_info is not None
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    for record in caplog.records:
        assert SECRET not in formatter.format(record)
    record = records[0]
    assert record.exc_info is not None
    exc_type, exc_value, tb = record.exc_info
    request = record.request  # type: ignore[attr-defined]
    report = ExceptionReporter(request, exc_type, exc_value, tb, is_email=True).get_traceback_text()
    assert "broker unreachable" in report and "LLMSTREAM" in report  # the right report
    assert SECRET not in report


async def test_admin_pages_never_show_the_key(upstream: Any) -> None:
    upstream.respond(status=401, body=echo_error)  # quotes our Authorization header back
    settings = llm(
        PROVIDERS={
            "openai": {
                "BACKEND": "django_llmstream.providers.openai.OpenAIProvider",
                "BASE_URL": upstream.base_url,
                "API_KEY": SECRET,
                "MODELS": ["m"],
            }
        },
        DEFAULT_PROVIDER="openai",
        MAX_RETRIES=0,
    )
    with override_settings(LLMSTREAM=settings):
        client = AsyncClient()
        body = await start(client)
        events = await read_events(client, body["events_url"])
    assert upstream.requests[0].headers["authorization"] == f"Bearer {SECRET}"
    assert events[-1][0] == "error" and "[redacted]" in events[-1][1]
    turn = await Message.objects.aget(pk=body["turn"])
    assert turn.status == "failed" and "[redacted]" in turn.error_message
    admin = AsyncClient()
    await admin.aforce_login(await user("root", is_staff=True, is_superuser=True))
    pages = [
        reverse("admin:django_llmstream_conversation_changelist"),
        reverse("admin:django_llmstream_conversation_change", args=[body["conversation"]]),
        reverse("admin:django_llmstream_message_changelist"),
        reverse("admin:django_llmstream_message_change", args=[body["turn"]]),
    ]
    for page in pages:
        response = await admin.get(page)
        assert response.status_code == 200, page
        assert SECRET.encode() not in response.content, page
    rows_text = repr([m async for m in Message.objects.values()])
    assert SECRET not in rows_text


# -- hostile content -------------------------------------------------------------------------


async def test_hostile_prompt_is_stored_exactly_and_escaped_in_html() -> None:
    with override_settings(LLMSTREAM=llm(MAX_PROMPT_CHARS=10_000)):
        client = AsyncClient()
        response = await client.post(
            TURNS + "?format=html", json.dumps({"prompt": HOSTILE}), content_type=J
        )
        assert response.status_code == 201, response.content
        fragment = response.content.decode()
        assert "<script>alert" not in fragment and "<img src=x" not in fragment
        assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in fragment
        turn = response["X-LLMStream-Turn"]
        conversation_id = response["X-LLMStream-Conversation"]
        await read_events(client, f"{TURNS}{turn}/events/")
        detail = json.loads((await client.get(f"{LIST}{conversation_id}/")).content)
        assert detail["messages"][0]["content"] == HOSTILE_CLEAN
        stored = await Message.objects.aget(conversation_id=conversation_id, role="user")
        assert stored.content == HOSTILE_CLEAN
        conversation = await Conversation.objects.aget(pk=conversation_id)
        assert "\n" not in conversation.title and "\x00" not in conversation.title


async def test_hostile_answer_round_trips_in_json_and_is_escaped_in_html() -> None:
    """The demo provider answers with HOSTILE, word by word, in both stream formats."""
    client = AsyncClient()
    body = await start(client, provider="hostile")
    events = await read_events(client, body["events_url"])
    names = [name for name, _, _ in events]
    assert names[0] == "start" and names[-1] == "done" and set(names) == {"start", "delta", "done"}
    text = "".join(json.loads(data)["text"] for name, data, _ in events if name == "delta")
    assert text == HOSTILE_CLEAN
    turn = await Message.objects.aget(pk=body["turn"])
    assert turn.content == HOSTILE_CLEAN
    html_events = await read_events(client, body["events_url"] + "?format=html")
    assert [n for n, _, _ in html_events][:-1] == names  # and a final "close"
    fragments = "".join(data for name, data, _ in html_events if name == "delta")
    assert "<" not in fragments  # only escaped markup
    import html as html_module

    # SSE data lines cannot carry CR: CRLF and CR arrive as LF (documented).
    expected = HOSTILE_CLEAN.replace("\r\n", "\n").replace("\r", "\n")
    assert html_module.unescape(fragments) == expected
    # The admin shows it escaped.
    admin = AsyncClient()
    await admin.aforce_login(await user("root", is_staff=True, is_superuser=True))
    for page in (
        reverse("admin:django_llmstream_conversation_change", args=[body["conversation"]]),
        reverse("admin:django_llmstream_message_change", args=[body["turn"]]),
    ):
        content = (await admin.get(page)).content.decode()
        assert "<script>alert" not in content and "<img src=x" not in content, page


def test_demo_page_scripts_never_insert_html() -> None:
    """The chat page's scripts put text into the page as text (textContent, text nodes)."""
    scripts = [
        ROOT / "testproject" / "static" / "chat.js",
        ROOT / "django_llmstream" / "static" / "django_llmstream" / "llmstream.js",
        ROOT / "django_llmstream" / "static" / "django_llmstream" / "llmstream-chat.js",
    ]
    sinks = re.compile(r"\.innerHTML\s*[+]?=|outerHTML\s*=|insertAdjacentHTML|document\.write")
    for script in scripts:
        if script.exists():
            assert not sinks.search(script.read_text(encoding="utf-8")), script

"""The endpoints' contract at the view level: validation, errors, ownership, listing.

Bad input must get PROTOCOL.md's JSON error naming the field, and leave no row behind.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import AsyncClient, override_settings

from django_llmstream.models import Conversation, Message
from django_llmstream.testing import arun_turn, run_turn

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/llmstream/turns/"


def _settings(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "PROVIDERS": {
            "demo": {
                "BACKEND": "django_llmstream.providers.demo.DemoProvider",
                "MODELS": ["demo", "demo-large"],
                "OPTIONS": {"DELAY": 0},
            }
        },
        "ALLOW_ANONYMOUS": True,
        "FLUSH_INTERVAL": 0.02,
        "MAX_PROMPT_CHARS": 50,
        "MAX_BODY_BYTES": 2000,
    }
    base.update(overrides)
    return base


@pytest.fixture(autouse=True)
def _llm_settings() -> Any:
    with override_settings(LLMSTREAM=_settings()):
        yield


def assert_error(
    response: Any, status: int, field: str | None, error_type: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    error = json.loads(response.content)["error"]
    assert set(error) == {"type", "message", "field"}
    assert error["field"] == field
    assert error["message"]
    if error_type:
        assert error["type"] == error_type
    return dict(error)


async def assert_nothing_written() -> None:
    assert await Conversation.objects.acount() == 0
    assert await Message.objects.acount() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   \n"}, "prompt"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": "x" * 51}, "prompt"),
        ({"prompt": "hi", "provider": "nope"}, "provider"),
        ({"prompt": "hi", "model": "gpt-9"}, "model"),
        ({"prompt": "hi", "conversation": "not-a-uuid"}, "conversation"),
        ({"prompt": "hi", "params": {"temperature": 3}}, "params.temperature"),
        ({"prompt": "hi", "params": {"temperature": "hot"}}, "params.temperature"),
        ({"prompt": "hi", "params": {"max_tokens": 0}}, "params.max_tokens"),
        ({"prompt": "hi", "params": {"max_tokens": 1.5}}, "params.max_tokens"),
        ({"prompt": "hi", "params": {"logit_bias": {}}}, "params.logit_bias"),
        ({"prompt": "hi", "params": {"base_url": "http://169.254.169.254/"}}, "params.base_url"),
        ({"prompt": "hi", "params": []}, "params"),
        ({"prompt": "hi", "system": 7}, "system"),
        ({"prompt": "hi", "base_url": "http://evil"}, "base_url"),
    ],
)
@pytest.mark.parametrize("url", [URL, "/llmstream/stream/"])
async def test_invalid_input_is_refused_and_writes_nothing(
    url: str, body: dict[str, Any], field: str
) -> None:
    response = await AsyncClient().post(url, body, content_type="application/json")
    assert_error(response, 400, field, "invalid_request")
    await assert_nothing_written()


async def test_malformed_json() -> None:
    response = await AsyncClient().post(URL, "{not json", content_type="application/json")
    assert_error(response, 400, None)
    response = await AsyncClient().post(URL, "[1, 2]", content_type="application/json")
    assert_error(response, 400, None)
    await assert_nothing_written()


async def test_wrong_content_type() -> None:
    response = await AsyncClient().post(URL, "prompt=hi", content_type="text/plain")
    assert_error(response, 415, None, "unsupported_media_type")
    await assert_nothing_written()


async def test_body_too_large() -> None:
    response = await AsyncClient().post(
        URL, {"prompt": "x" * 3000}, content_type="application/json"
    )
    assert_error(response, 413, None, "request_too_large")
    await assert_nothing_written()


async def test_csrf_failure_is_json() -> None:
    client = AsyncClient(enforce_csrf_checks=True)
    response = await client.post(URL, {"prompt": "hi"}, content_type="application/json")
    error = assert_error(response, 403, None, "csrf_failed")
    assert "CSRF" in error["message"]
    await assert_nothing_written()


async def test_csrf_token_accepted() -> None:
    client = AsyncClient(enforce_csrf_checks=True)
    token = "a" * 32
    client.cookies["csrftoken"] = token
    response = await client.post(
        URL, {"prompt": "hi"}, content_type="application/json", headers={"X-CSRFToken": token}
    )
    assert response.status_code == 201, response.content


async def test_form_encoded_body_is_accepted() -> None:
    response = await AsyncClient().post(
        URL, {"prompt": "from a form", "params[temperature]": "0.5"}
    )
    assert response.status_code == 201, response.content
    turn = await Message.objects.aget(pk=json.loads(response.content)["turn"])
    assert turn.params == {"temperature": 0.5}


async def test_unknown_url_and_wrong_method_are_json() -> None:
    client = AsyncClient()
    assert_error(await client.get("/llmstream/nothing/here/"), 404, None, "not_found")
    assert_error(await client.get("/llmstream/turns/not-a-uuid/events/"), 404, None)
    response = await client.get(URL)
    assert_error(response, 405, None, "method_not_allowed")
    assert "POST" in response["Allow"]


async def test_anonymous_refused_unless_allowed() -> None:
    with override_settings(LLMSTREAM=_settings(ALLOW_ANONYMOUS=False)):
        response = await AsyncClient().post(URL, {"prompt": "hi"}, content_type="application/json")
        assert_error(response, 403, None, "not_authenticated")
        assert_error(await AsyncClient().get("/llmstream/conversations/"), 403, None)
    await assert_nothing_written()


async def _start(client: AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post(URL, {"prompt": "hi", **body}, content_type="application/json")
    assert response.status_code == 201, response.content
    return dict(json.loads(response.content))


async def _read_events(client: AsyncClient, url: str, **headers: str) -> list[tuple[str, Any]]:
    from django_llmstream.sse import SSEParser

    response = await client.get(url, headers=headers)
    assert response.status_code == 200
    parser = SSEParser()
    events = []
    async for chunk in response.streaming_content:
        events += [(e.event, e.json()) for e in parser.feed(chunk)]
    return events


async def test_turn_runs_and_replays() -> None:
    # The test kit (django_llmstream.testing): POST turns/, then the whole events/ stream,
    # each event parsed and the framing checked.
    result = await arun_turn(
        AsyncClient(), "hi", endpoint="turns", model="demo-large", params={"temperature": 0.2}
    )
    assert result.start == {
        "conversation": result.conversation,
        "turn": result.turn,
        "provider": "demo",
        "model": "demo-large",
    }
    assert result.done is not None
    turn = await Message.objects.aget(pk=result.turn)
    assert turn.status == "completed"
    assert turn.content == result.text
    assert turn.params == {"temperature": 0.2}


async def test_ownership_other_visitors_get_404() -> None:
    alice, mallory = AsyncClient(), AsyncClient()
    body = await _start(alice)
    await _read_events(alice, body["events_url"])
    conversation = body["conversation"]
    assert_error(
        await mallory.get(f"/llmstream/conversations/{conversation}/"), 404, "conversation"
    )
    assert_error(await mallory.get(body["events_url"]), 404, "turn")
    assert_error(await mallory.post(body["stop_url"]), 404, "turn")
    response = await mallory.post(
        URL, {"prompt": "hi", "conversation": conversation}, content_type="application/json"
    )
    assert_error(response, 404, "conversation")
    listing = json.loads((await mallory.get("/llmstream/conversations/")).content)
    assert listing == {"results": [], "next": None}
    assert await Message.objects.acount() == 2  # nothing added by mallory
    unknown = uuid.uuid4()
    assert_error(await alice.get(f"/llmstream/conversations/{unknown}/"), 404, "conversation")


async def test_users_own_their_conversations() -> None:
    user_model = get_user_model()
    ann = await user_model.objects.acreate_user("ann", password="pw")
    bob = await user_model.objects.acreate_user("bob", password="pw")
    ann_client, bob_client = AsyncClient(), AsyncClient()
    await ann_client.aforce_login(ann)
    await bob_client.aforce_login(bob)
    body = await _start(ann_client)
    await _read_events(ann_client, body["events_url"])
    conversation = await Conversation.objects.aget(pk=body["conversation"])
    assert conversation.owner_id == ann.pk
    assert_error(await bob_client.get(body["events_url"]), 404, "turn")
    listing = json.loads((await ann_client.get("/llmstream/conversations/")).content)
    assert [c["id"] for c in listing["results"]] == [body["conversation"]]


async def test_system_only_for_new_conversations() -> None:
    client = AsyncClient()
    body = await _start(client, system="Be nice.")
    await _read_events(client, body["events_url"])
    before = await Message.objects.acount()
    response = await client.post(
        URL,
        {"prompt": "again", "conversation": body["conversation"], "system": "Be rude."},
        content_type="application/json",
    )
    assert_error(response, 400, "system")
    assert await Message.objects.acount() == before


async def test_conversation_listing_pages() -> None:
    client = AsyncClient()
    with override_settings(LLMSTREAM=_settings(PAGE_SIZE=2)):
        ids = []
        for n in range(3):
            body = await _start(client, prompt=f"number {n}")
            await _read_events(client, body["events_url"])
            ids.append(body["conversation"])
        first = json.loads((await client.get("/llmstream/conversations/")).content)
        assert [c["id"] for c in first["results"]] == ids[::-1][:2]
        assert first["results"][0]["title"] == "number 2"
        assert first["next"].endswith("/llmstream/conversations/?page=2")
        second = json.loads((await client.get("/llmstream/conversations/?page=2")).content)
        assert [c["id"] for c in second["results"]] == ids[:1] and second["next"] is None
        assert_error(await client.get("/llmstream/conversations/?page=x"), 400, "page")


async def test_hostile_prompt_text_is_kept_exactly_but_nul_and_surrogates() -> None:
    client = AsyncClient()
    prompt = "a\x00b\r\n\r\nevent: x\ndata: y\n\n</script>\ud800z"
    response = await client.post(URL, {"prompt": prompt}, content_type="application/json")
    assert response.status_code == 201
    body = json.loads(response.content)
    await _read_events(client, body["events_url"])
    user = await Message.objects.aget(conversation_id=body["conversation"], role="user")
    assert user.content == "ab\r\n\r\nevent: x\ndata: y\n\n</script>\ufffdz"


async def test_bad_last_event_id() -> None:
    client = AsyncClient()
    body = await _start(client)
    await _read_events(client, body["events_url"])
    response = await client.get(body["events_url"], headers={"Last-Event-ID": "abc"})
    assert_error(response, 400, "last_event_id")


def test_wsgi_requests_are_told_to_use_asgi() -> None:
    from django.test import Client

    response = Client().post(URL, {"prompt": "hi"}, content_type="application/json")
    error = assert_error(response, 503, None, "unavailable")
    assert "ASGI" in error["message"]
    assert Message.objects.count() == 0
    # The one-step stream/ works there (a thread runs the turn): the test kit's run_turn.
    result = run_turn(Client(), "hi")
    assert result.done is not None and result.text
    assert Message.objects.get(pk=result.turn).content == result.text


async def test_regression_non_ascii_digits_are_refused_not_500() -> None:
    # str.isdigit() is true for "²", which int() refuses: a 500 before the fix.
    client = AsyncClient()
    body = await _start(client)
    assert_error(await client.get("/llmstream/conversations/?page=²"), 400, "page")
    response = await client.get(body["events_url"], headers={"Last-Event-ID": "²"})
    assert_error(response, 400, "last_event_id")

"""The server side of the front ends: ``POST turns/?format=html``, the html event stream's
``close`` event, and the template tags."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.template import Context, Template
from django.test import AsyncClient, RequestFactory, override_settings

from django_llmstream.models import Conversation, Message
from django_llmstream.sse import ServerSentEvent, SSEParser

pytestmark = pytest.mark.django_db(transaction=True)

SETTINGS: dict[str, Any] = {
    "PROVIDERS": {
        "demo": {
            "BACKEND": "django_llmstream.providers.demo.DemoProvider",
            "MODELS": ["demo", "demo-large"],
            "OPTIONS": {"DELAY": 0},
        }
    },
    "ALLOW_ANONYMOUS": True,
    "FLUSH_INTERVAL": 0.02,
}


@pytest.fixture(autouse=True)
def _llm_settings() -> Any:
    with override_settings(LLMSTREAM=SETTINGS):
        yield


async def read_events(client: AsyncClient, url: str) -> list[ServerSentEvent]:
    response = await client.get(url)
    assert response.status_code == 200
    parser = SSEParser()
    events: list[ServerSentEvent] = []
    async for chunk in response.streaming_content:
        events += parser.feed(chunk)
    return events


async def test_html_turn_fragment() -> None:
    client = AsyncClient()
    response = await client.post("/llmstream/turns/?format=html", {"prompt": "Hi <b>there</b>"})
    assert response.status_code == 201, response.content
    assert response["Content-Type"].startswith("text/html")
    turn = await Message.objects.select_related("conversation").aget(role="assistant")
    assert response["X-LLMStream-Turn"] == str(turn.pk)
    assert response["X-LLMStream-Conversation"] == str(turn.conversation_id)
    html = response.content.decode()
    assert f'sse-connect="/llmstream/turns/{turn.pk}/events/?format=html"' in html
    assert 'sse-close="close"' in html
    assert f'hx-post="/llmstream/turns/{turn.pk}/stop/"' in html
    assert "Hi &lt;b&gt;there&lt;/b&gt;" in html
    assert "<b>there" not in html
    # The JSON contract of the same endpoint is untouched.
    response = await client.post(
        "/llmstream/turns/", {"prompt": "again"}, content_type="application/json"
    )
    assert response.status_code == 201
    assert set(json.loads(response.content)) == {"conversation", "turn", "events_url", "stop_url"}


async def test_html_turn_errors_are_fragments_with_their_status() -> None:
    client = AsyncClient()
    response = await client.post("/llmstream/turns/?format=html", {"prompt": "  "})
    assert response.status_code == 400
    assert response["X-LLMStream-Error"] == "invalid_request"
    assert response["HX-Reswap"] == "innerHTML"
    html = response.content.decode()
    assert 'class="llmstream-form-error"' in html
    assert 'data-field="prompt"' in html
    assert await Conversation.objects.acount() == 0

    csrf_client = AsyncClient(enforce_csrf_checks=True)
    response = await csrf_client.post("/llmstream/turns/?format=html", {"prompt": "hi"})
    assert response.status_code == 403
    assert response["X-LLMStream-Error"] == "csrf_failed"
    # Without ?format=html, errors stay JSON.
    response = await csrf_client.post("/llmstream/turns/", {"prompt": "hi"})
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"


async def test_html_stream_ends_with_close_after_done() -> None:
    client = AsyncClient()
    response = await client.post(
        "/llmstream/turns/", {"prompt": "hi"}, content_type="application/json"
    )
    events_url = json.loads(response.content)["events_url"]
    html_events = await read_events(client, events_url + "?format=html")
    names = [e.event for e in html_events]
    assert names[0] == "start"
    assert names[-2:] == ["done", "close"]
    done, close = html_events[-2:]
    assert done.data.startswith('<span class="llmstream-done" data-finish-reason="stop"')
    assert close.data == ""
    assert close.id == done.id  # no id of its own: the terminal event's stays in effect
    json_events = await read_events(client, events_url)
    assert json_events[-1].event == "done"  # JSON streams have no close event
    assert "close" not in [e.event for e in json_events]


async def test_html_stream_ends_with_close_after_error() -> None:
    user = await get_user_model().objects.acreate_user("ada", password="x")
    client = AsyncClient()
    await client.aforce_login(user)
    conversation = await Conversation.objects.acreate(owner=user, title="t", provider="demo")
    turn = await Message.objects.acreate(
        conversation=conversation,
        role="assistant",
        content="Partial <answer>",
        status="failed",
        error_type="upstream_timeout",
        error_message="No data for 60 s.",
    )
    url = f"/llmstream/turns/{turn.pk}/events/?format=html"
    events = await read_events(client, url)
    assert [e.event for e in events] == ["start", "delta", "error", "close"]
    assert events[1].data == "Partial &lt;answer&gt;"
    error = events[2].data
    assert error.startswith('<span class="llmstream-error" data-error-type="upstream_timeout"')
    assert "No data for 60 s. You can try again." in error
    # The browser reconnects with the terminal event's id: 204, nothing more.
    response = await client.get(url, headers={"Last-Event-ID": events[-1].id})
    assert response.status_code == 204


def render(source: str, **context: Any) -> str:
    request = RequestFactory().get("/")
    return Template("{% load llmstream %}" + source).render(
        Context({"request": request, **context})
    )


def test_llmstream_script_and_chat_tags() -> None:
    html = render("{% llmstream_script %}")
    assert 'href="/static/django_llmstream/llmstream.css"' in html
    assert '<script type="module" src="/static/django_llmstream/llmstream-chat.js">' in html
    assert "llmstream.css" not in render("{% llmstream_script css=False %}")

    html = render("{% llmstream_chat %}{% llmstream_chat 'abc' markdown=False mode='stream' %}")
    assert 'id="llmstream-chat"' in html
    assert 'id="llmstream-chat-2"' in html
    assert 'data-api-root="/llmstream/"' in html
    assert 'data-conversation="abc"' in html
    assert 'data-markdown="false"' in html
    assert 'data-mode="stream"' in html
    assert '<option value="demo|demo" selected>' in html
    assert 'role="log" aria-live="polite"' in html
    assert 'data-csrf-token="' in html


def test_htmx_tags_serve_htmx_from_django_htmx() -> None:
    html = render("{% llmstream_htmx_script %}")
    assert "/static/django_htmx/htmx-2.min.js" in html
    assert "/static/django_htmx/ext/hx-sse-2.min.js" in html
    assert "/static/django_llmstream/llmstream-htmx.js" in html
    assert "//cdn" not in html and "unpkg" not in html

    html = render('{% llmstream_htmx_form "#transcript" %}')
    assert 'hx-post="/llmstream/turns/?format=html"' in html
    assert 'hx-target="#transcript"' in html
    assert 'name="csrfmiddlewaretoken"' in html

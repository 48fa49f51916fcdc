"""The admin as the operations console: pages, permissions, query counts, transcripts, the
live view, stopping turns, the usage report, exports and the privacy setting.

Rows are created directly (fixed ids and times, so exports can be compared byte for byte);
the tests that need a turn really running start it through the views with the demo provider.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import AsyncClient, Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_llmstream import generation as generation_module
from django_llmstream.admin_views import redact_event_data
from django_llmstream.models import Conversation, Message
from django_llmstream.sse import SSEParser

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CONV_ID = uuid.UUID("11111111-1111-4111-8111-111111111111")
USER_MSG_ID = uuid.UUID("22222222-2222-4222-8222-222222222222")
TURN_ID = uuid.UUID("33333333-3333-4333-8333-333333333333")

SECRET_TITLE = "Title-secret-7d1"
SECRET_SYSTEM = "System-secret-8e2"
SECRET_PROMPT = "Prompt-secret-9f3"
SECRET_ANSWER = "Answer-secret-a04"
SECRET_REASONING = "Reasoning-secret-b15"
SECRET_ARGS = "Args-secret-c26"
SECRETS = (
    SECRET_TITLE,
    SECRET_SYSTEM,
    SECRET_PROMPT,
    SECRET_ANSWER,
    SECRET_REASONING,
    SECRET_ARGS,
)

LLM_SETTINGS: dict[str, Any] = {
    "PROVIDERS": {
        "demo": {
            "BACKEND": "django_llmstream.providers.demo.DemoProvider",
            "OPTIONS": {"DELAY": 0},
        },
    },
    "ALLOW_ANONYMOUS": True,
    "FLUSH_INTERVAL": 0.02,
}


def llm_settings(**overrides: Any) -> Any:
    return override_settings(LLMSTREAM={**LLM_SETTINGS, **overrides})


def make_conversation(
    *,
    conversation_id: uuid.UUID | None = None,
    user_message_id: uuid.UUID | None = None,
    turn_id: uuid.UUID | None = None,
    owner: Any = None,
    title: str = SECRET_TITLE,
    when: datetime = T0,
    status: str = "completed",
    provider: str = "demo",
    model: str = "demo",
    input_tokens: int | None = 10,
    output_tokens: int | None = 20,
    cost: Decimal | None = Decimal("0.00012"),
) -> Conversation:
    conversation = Conversation.objects.create(
        id=conversation_id or uuid.uuid4(),
        owner=owner,
        title=title,
        provider=provider,
        model=model,
        system_prompt=SECRET_SYSTEM,
    )
    Message.objects.create(
        id=user_message_id or uuid.uuid4(),
        conversation=conversation,
        role="user",
        content=f"{SECRET_PROMPT} <b>bold</b>",
    )
    running = status in {"pending", "streaming"}
    Message.objects.create(
        id=turn_id or uuid.uuid4(),
        conversation=conversation,
        role="assistant",
        content=f"{SECRET_ANSWER} <script>alert(1)</script>",
        reasoning=SECRET_REASONING,
        tool_calls=[
            {"index": 0, "id": "call_1", "name": "lookup", "arguments": f'{{"q":"{SECRET_ARGS}"}}'}
        ],
        status=status,
        finish_reason="" if running else "stop",
        provider=provider,
        model=model,
        input_tokens=None if running else input_tokens,
        output_tokens=None if running else output_tokens,
        cached_input_tokens=None if running else 0,
        reasoning_tokens=None if running else 0,
        cost=None if running else cost,
        ttft_ms=50,
        duration_ms=None if running else 400,
        started_at=when,
        finished_at=None if running else when + timedelta(seconds=1),
        # A running row made here has a lease far ahead: nothing sweeps it during the test.
        lease_expires_at=when + timedelta(days=3650) if running else None,
    )
    Conversation.objects.filter(pk=conversation.pk).update(created_at=when, updated_at=when)
    messages = Message.objects.filter(conversation=conversation).order_by("role")
    for offset, message in enumerate(messages.reverse()):  # user first, then assistant
        Message.objects.filter(pk=message.pk).update(created_at=when + timedelta(seconds=offset))
    return Conversation.objects.get(pk=conversation.pk)


def staff_user(username: str = "operator", *, content: bool = False, stop: bool = False) -> Any:
    user = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    codenames = ["view_conversation", "view_message", "delete_conversation"]
    if content:
        codenames.append("view_message_content")
    if stop:
        codenames.append("change_message")
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="django_llmstream", codename__in=codenames
        )
    )
    return user


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def admin_url(name: str, *args: Any) -> str:
    return reverse(f"admin:django_llmstream_{name}", args=args)


def page_urls(conversation: Conversation) -> dict[str, str]:
    turn = conversation.messages.get(role="assistant")
    return {
        "conversation list": admin_url("conversation_changelist"),
        "conversation list searched": admin_url("conversation_changelist") + "?q=bold",
        "transcript": admin_url("conversation_change", conversation.pk),
        "conversation history": admin_url("conversation_history", conversation.pk),
        "conversation delete": admin_url("conversation_delete", conversation.pk),
        "usage report": admin_url("conversation_usage"),
        "usage report period": admin_url("conversation_usage") + "?start=2025-02-01&end=2025-03-31",
        "message list": admin_url("message_changelist"),
        "message page": admin_url("message_change", turn.pk),
        "message history": admin_url("message_history", turn.pk),
    }


@pytest.fixture
def conversation(db: None) -> Iterator[Conversation]:
    with llm_settings():
        yield make_conversation(
            conversation_id=CONV_ID, user_message_id=USER_MSG_ID, turn_id=TURN_ID
        )


# -- pages and permissions -----------------------------------------------------------------


def test_every_page_renders_for_staff(admin_client: Client, conversation: Conversation) -> None:
    for name, url in page_urls(conversation).items():
        response = admin_client.get(url)
        assert response.status_code == 200, (name, response.status_code)


def test_staff_with_view_permissions_only(conversation: Conversation) -> None:
    client = client_for(staff_user())
    for name, url in page_urls(conversation).items():
        response = client.get(url)
        assert response.status_code == 200, (name, response.status_code)


def test_pages_refused_to_anonymous_and_non_staff(conversation: Conversation) -> None:
    member = get_user_model().objects.create_user("member", password="pw")
    for client in (Client(), client_for(member)):
        for name, url in page_urls(conversation).items():
            response = client.get(url)
            assert response.status_code == 302, name
            assert response["Location"].startswith("/admin/login/"), name
        stop = client.post(admin_url("message_stop", TURN_ID))
        assert stop.status_code == 302 and stop["Location"].startswith("/admin/login/")
        events = client.get(admin_url("message_events", TURN_ID))
        assert events.status_code == 403


def test_pages_refused_to_staff_without_permissions(conversation: Conversation) -> None:
    bare = get_user_model().objects.create_user("bare", password="pw", is_staff=True)
    client = client_for(bare)
    for name, url in page_urls(conversation).items():
        assert client.get(url).status_code == 403, name
    assert client.get(admin_url("message_events", TURN_ID)).status_code == 403


def test_history_is_read_only(admin_client: Client, conversation: Conversation) -> None:
    turn_url = admin_url("message_change", TURN_ID)
    conversation_url = admin_url("conversation_change", CONV_ID)
    assert admin_client.get(admin_url("conversation_changelist") + "add/").status_code in {
        302,
        403,
    }
    page = admin_client.get(conversation_url).content.decode()
    assert 'name="_save"' not in page
    assert admin_client.post(conversation_url, {"title": "changed"}).status_code == 403
    assert admin_client.post(turn_url, {"content": "changed"}).status_code == 403
    # A transcript is deleted whole, with its conversation; not message by message.
    assert admin_client.get(admin_url("message_delete", TURN_ID)).status_code == 403
    assert Conversation.objects.get(pk=CONV_ID).title == SECRET_TITLE


# -- the same number of queries for 1 and 100 rows ----------------------------------------


def _bulk_conversations(count: int, owner: Any) -> None:
    conversations = [
        Conversation(title=f"bulk {n}", provider="demo", model="demo", owner=owner)
        for n in range(count)
    ]
    Conversation.objects.bulk_create(conversations)
    Message.objects.bulk_create(
        [
            message
            for c in conversations
            for message in (
                Message(conversation=c, role="user", content="hi"),
                Message(
                    conversation=c,
                    role="assistant",
                    content="hello",
                    status="completed",
                    provider="demo",
                    model="demo",
                    input_tokens=3,
                    output_tokens=4,
                    cost=Decimal("0.001"),
                ),
            )
        ]
    )


def _count_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries)


@pytest.mark.parametrize("name", ["conversation_changelist", "message_changelist"])
@pytest.mark.django_db
def test_changelist_queries_do_not_grow_with_rows(
    name: str, django_assert_max_num_queries: Any
) -> None:
    user = get_user_model().objects.create_superuser("root", password="pw")
    client = client_for(user)
    url = admin_url(name)
    _bulk_conversations(1, user)
    client.get(url)  # warm caches (content types, session) before counting
    one = _count_queries(client, url)
    _bulk_conversations(99, None)
    with django_assert_max_num_queries(one):
        response = client.get(url)
    assert response.status_code == 200
    rows = 100 if name == "conversation_changelist" else 200
    shown = response.context["cl"].result_count
    assert shown == rows
    # Measured: conversations 10 queries, messages 9 (sessions, user, permissions, filters,
    # date hierarchy, count, page); guard against a per-row query slipping in.
    assert one <= 12


# -- the transcript ------------------------------------------------------------------------


def test_transcript_shows_everything_escaped(
    admin_client: Client, conversation: Conversation
) -> None:
    page = admin_client.get(admin_url("conversation_change", CONV_ID)).content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert '<details class="llm-reasoning">' in page and SECRET_REASONING in page
    assert "lookup" in page and "&quot;q&quot;" in page  # the tool call and its arguments
    assert SECRET_SYSTEM in page
    for figure in ("0.00012", "400 ms", "50 ms"):
        assert figure in page
    assert 'class="llm-badge llm-badge-completed"' in page


def test_conversation_list_columns_and_filters(
    admin_client: Client, conversation: Conversation
) -> None:
    make_conversation(title="Still running", status="streaming")
    url = admin_url("conversation_changelist")
    page = admin_client.get(url).content.decode()
    assert "llm-badge-completed" in page and "llm-badge-streaming" in page
    assert "0.00012" in page  # total cost of the first
    assert "Usage and cost" in page
    listed = admin_client.get(url + "?last_status=streaming").context["cl"].result_list
    assert [c.title for c in listed] == ["Still running"]
    searched = admin_client.get(url + "?q=Prompt-secret").context["cl"].result_list
    assert len(searched) == 2  # message text is searched
    by_id = admin_client.get(url + f"?q={CONV_ID}").context["cl"].result_list
    assert [c.pk for c in by_id] == [CONV_ID]


def test_message_list_and_page(admin_client: Client, conversation: Conversation) -> None:
    failed = make_conversation(title="Broken", status="failed")
    Message.objects.filter(conversation=failed, role="assistant").update(
        error_type="upstream_timeout", error_message="No byte for 60 s."
    )
    page = admin_client.get(admin_url("message_changelist")).content.decode()
    assert "llm-badge-failed" in page and "upstream_timeout" in page
    listed = admin_client.get(admin_url("message_changelist") + "?status__exact=failed")
    assert [m.error_type for m in listed.context["cl"].result_list] == ["upstream_timeout"]
    turn = admin_client.get(admin_url("message_change", TURN_ID)).content.decode()
    assert "&lt;script&gt;" in turn and "<script>alert" not in turn
    assert 'id="llm-live"' not in turn  # a finished turn has no live panel


# -- live view and stopping ----------------------------------------------------------------


def test_running_turn_page_has_live_panel_and_stop_button(db: None) -> None:
    with llm_settings():
        running = make_conversation(status="streaming")
        turn = running.messages.get(role="assistant")
        operator = client_for(staff_user(stop=True))
        page = operator.get(admin_url("message_change", turn.pk)).content.decode()
        assert 'id="llm-live"' in page
        assert f'data-events-url="{admin_url("message_events", turn.pk)}"' in page
        assert "django_llmstream/admin/live.js" in page
        assert admin_url("message_stop", turn.pk) in page
        # Without the change permission there is no stop button, and stopping is refused.
        viewer = client_for(staff_user("viewer"))
        page = viewer.get(admin_url("message_change", turn.pk)).content.decode()
        assert 'id="llm-live"' in page and admin_url("message_stop", turn.pk) not in page
        assert viewer.post(admin_url("message_stop", turn.pk)).status_code == 403


def test_stop_button_ends_an_orphaned_turn(db: None) -> None:
    with llm_settings():
        running = make_conversation(status="streaming")
        turn = running.messages.get(role="assistant")
        client = client_for(staff_user(stop=True))
        assert client.get(admin_url("message_stop", turn.pk)).status_code == 405
        response = client.post(admin_url("message_stop", turn.pk), follow=True)
        assert response.redirect_chain[-1][0] == admin_url("message_change", turn.pk)
        assert "Asked 1 running turn to stop." in response.content.decode()
        turn.refresh_from_db()
        assert turn.status == "cancelled" and turn.finish_reason == "cancelled"
        assert turn.content.startswith(SECRET_ANSWER)  # text kept


def test_stop_actions(db: None) -> None:
    with llm_settings():
        first = make_conversation(status="streaming")
        second = make_conversation(status="pending")
        done = make_conversation()
        client = client_for(staff_user(stop=True))
        turns = Message.objects.filter(role="assistant")
        response = client.post(
            admin_url("message_changelist"),
            {"action": "stop_selected_turns", "_selected_action": [t.pk for t in turns]},
            follow=True,
        )
        assert "Asked 2 running turns to stop." in response.content.decode()
        statuses = dict(turns.values_list("conversation_id", "status"))
        assert statuses == {first.pk: "cancelled", second.pk: "cancelled", done.pk: "completed"}
        third = make_conversation(status="streaming")
        client.post(
            admin_url("conversation_changelist"),
            {"action": "stop_running_turns", "_selected_action": [third.pk]},
        )
        assert third.messages.get(role="assistant").status == "cancelled"
        # The actions are offered only to staff who may stop turns.
        viewer = client_for(staff_user("viewer"))
        actions = viewer.get(admin_url("message_changelist")).context["action_form"]
        assert "stop_selected_turns" not in str(actions)


async def _read_sse(client: AsyncClient, url: str) -> list[tuple[str, Any]]:
    response = await client.get(url)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    parser = SSEParser()
    events: list[tuple[str, Any]] = []
    async for chunk in response.streaming_content:
        events += [(e.event, json.loads(e.data)) for e in parser.feed(chunk)]
    return events


@pytest.mark.django_db(transaction=True)
async def test_live_events_follow_a_running_turn_and_the_admin_stops_it() -> None:
    with llm_settings(
        PROVIDERS={
            "demo": {
                "BACKEND": "django_llmstream.providers.demo.DemoProvider",
                "OPTIONS": {"DELAY": 0.05},
            }
        }
    ):
        # The operator logs in first: password hashing is slow, and the turn must still be
        # running when the stop arrives.
        root = await sync_to_async(get_user_model().objects.create_superuser)("root", password="pw")
        operator = AsyncClient()
        await operator.aforce_login(root)
        visitor = AsyncClient()
        started = await visitor.post(
            "/llmstream/turns/", {"prompt": "tell me"}, content_type="application/json"
        )
        turn_id = json.loads(started.content)["turn"]
        response = await operator.get(admin_url("message_events", turn_id))
        assert response.status_code == 200
        parser = SSEParser()
        seen: list[str] = []
        stopped = False
        async for chunk in response.streaming_content:
            for event in parser.feed(chunk):
                seen.append(event.event)
                if event.event == "delta" and not stopped:
                    stopped = True
                    stop = await operator.post(admin_url("message_stop", turn_id))
                    assert stop.status_code == 302, stop
                    assert stop["Location"] == admin_url("message_change", turn_id)
        assert seen[0] == "start" and "delta" in seen and seen[-1] == "done"
        turn = await Message.objects.aget(pk=turn_id)
        assert turn.status == "cancelled" and turn.finish_reason == "cancelled"
        await generation_module.shutdown()


@pytest.mark.django_db(transaction=True)
async def test_live_events_of_a_finished_turn_replay_and_hide_text() -> None:
    with llm_settings():
        visitor = AsyncClient()
        started = await visitor.post(
            "/llmstream/turns/", {"prompt": "hello"}, content_type="application/json"
        )
        turn_id = json.loads(started.content)["turn"]
        await _read_sse(visitor, f"/llmstream/turns/{turn_id}/events/")
        turn = await Message.objects.aget(pk=turn_id)
        root = await sync_to_async(get_user_model().objects.create_superuser)("root", password="pw")
        operator = AsyncClient()
        await operator.aforce_login(root)
        events = await _read_sse(operator, admin_url("message_events", turn_id))
        text = "".join(data["text"] for name, data in events if name == "delta")
        assert text == turn.content and events[-1][0] == "done"
        # Someone else's turn is a 404 on the public endpoint, but staff see it here.
        assert (await AsyncClient().get(f"/llmstream/turns/{turn_id}/events/")).status_code == 404
    with llm_settings(HIDE_CONTENT_FROM_STAFF=True):
        viewer = await sync_to_async(staff_user)("viewer")
        client = AsyncClient()
        await client.aforce_login(viewer)
        events = await _read_sse(client, admin_url("message_events", turn_id))
        deltas = [data for name, data in events if name == "delta"]
        assert deltas and all(d["text"] == "" and d["hidden"] for d in deltas)
        assert sum(d["chars"] for d in deltas) == len(turn.content)
        assert events[-1][0] == "done" and events[-1][1]["usage"]["output_tokens"]


def test_redact_event_data() -> None:
    assert redact_event_data("delta", {"text": "abc"}) == {"text": "", "hidden": True, "chars": 3}
    call = {"index": 0, "id": "c", "name": "f", "arguments": "{}"}
    assert redact_event_data("tool_call", call) == {
        **call,
        "arguments": "",
        "hidden": True,
        "chars": 2,
    }
    done = {"finish_reason": "stop"}
    assert redact_event_data("done", done) is done


# -- usage report --------------------------------------------------------------------------


@pytest.fixture
def usage_rows(db: None) -> Iterator[None]:
    with llm_settings():
        ann = get_user_model().objects.create_user("ann")
        day1 = datetime(2025, 3, 1, 9, tzinfo=UTC)
        day3 = datetime(2025, 3, 3, 23, tzinfo=UTC)
        make_conversation(owner=ann, when=day1, cost=Decimal("0.5"))
        make_conversation(owner=ann, when=day1, model="demo-large", cost=Decimal("1.25"))
        make_conversation(when=day3, input_tokens=100, output_tokens=50, cost=Decimal("2"))
        make_conversation(when=day3, status="failed", cost=None, input_tokens=1, output_tokens=0)
        make_conversation(when=datetime(2025, 4, 1, tzinfo=UTC), cost=Decimal("99"))  # outside
        yield


def test_usage_report_numbers(admin_client: Client, usage_rows: None) -> None:
    url = admin_url("conversation_usage") + "?start=2025-03-01&end=2025-03-03"
    response = admin_client.get(url)
    report = response.context["report"]
    assert (report.totals.turns, report.totals.failed) == (4, 1)
    assert (report.totals.input_tokens, report.totals.output_tokens) == (121, 90)
    assert report.totals.cost == Decimal("3.75")
    assert [(r.key["day"], r.turns, r.cost) for r in report.by_day] == [
        (date(2025, 3, 1), 2, Decimal("1.75")),
        (date(2025, 3, 2), 0, Decimal(0)),
        (date(2025, 3, 3), 2, Decimal("2")),
    ]
    assert [(r.key["model"], r.turns, r.cost) for r in report.by_model] == [
        ("demo", 3, Decimal("2.5")),
        ("demo-large", 1, Decimal("1.25")),
    ]
    assert [(r.key["username"], r.turns, r.cost) for r in report.by_user] == [
        (None, 2, Decimal("2")),
        ("ann", 2, Decimal("1.75")),
    ]
    page = response.content.decode()
    assert 'id="llm-usage-data"' in page and "django_llmstream/admin/report.js" in page
    chart = json.loads(
        page.split('id="llm-usage-data" type="application/json">')[1].split("</script>")[0]
    )
    assert [d["day"] for d in chart["days"]] == ["2025-03-01", "2025-03-02", "2025-03-03"]
    assert "cdn" not in page.lower()


def test_usage_report_csv(admin_client: Client, usage_rows: None) -> None:
    base = admin_url("conversation_usage") + "?start=2025-03-01&end=2025-03-03"
    response = admin_client.get(base + "&export=model")
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="llmstream-usage-model-2025-03-01-2025-03-03.csv"'
    )
    assert response.content.decode() == (
        "provider,model,turns,failed,input_tokens,output_tokens,total_tokens,cost\r\n"
        "demo,demo,3,1,111,70,181,2.50000000\r\n"
        "demo,demo-large,1,0,10,20,30,1.25000000\r\n"
    )
    days = list(csv.reader(io.StringIO(admin_client.get(base + "&export=day").content.decode())))
    assert [row[:2] for row in days] == [
        ["day", "turns"],
        ["2025-03-01", "2"],
        ["2025-03-02", "0"],
        ["2025-03-03", "2"],
    ]
    users = list(csv.reader(io.StringIO(admin_client.get(base + "&export=user").content.decode())))
    assert [row[0] for row in users] == ["username", "", "ann"]


def test_usage_report_validates_its_period(admin_client: Client, usage_rows: None) -> None:
    url = admin_url("conversation_usage")
    backwards = admin_client.get(url + "?start=2025-03-05&end=2025-03-01")
    assert backwards.context["report"] is None
    assert "must not be before" in backwards.content.decode()
    too_long = admin_client.get(url + "?start=2020-01-01&end=2025-03-01")
    assert "at most 366 days" in too_long.content.decode()
    garbage = admin_client.get(url + "?start=yesterday&end=2025-03-01&export=day")
    assert garbage["Content-Type"].startswith("text/html")
    assert "Enter a valid date" in garbage.content.decode()
    provider = admin_client.get(url + "?start=2025-03-01&end=2025-03-03&provider=nope")
    assert provider.context["report"] is None
    default = admin_client.get(url)  # the last 30 days
    assert default.context["report"].end - default.context["report"].start == timedelta(days=29)


# -- exports -------------------------------------------------------------------------------

EXPECTED_JSONL = {
    "id": str(CONV_ID),
    "title": SECRET_TITLE,
    "owner": None,
    "provider": "demo",
    "model": "demo",
    "system_prompt": SECRET_SYSTEM,
    "metadata": {},
    "created_at": "2025-03-01T12:00:00+00:00",
    "updated_at": "2025-03-01T12:00:00+00:00",
    "content_hidden": False,
    "messages": [
        {
            "id": str(USER_MSG_ID),
            "role": "user",
            "content": f"{SECRET_PROMPT} <b>bold</b>",
            "reasoning": "",
            "tool_calls": [],
            "status": "completed",
            "finish_reason": "",
            "provider": "",
            "model": "",
            "params": {},
            "input_tokens": None,
            "output_tokens": None,
            "cached_input_tokens": None,
            "reasoning_tokens": None,
            "cost": None,
            "ttft_ms": None,
            "duration_ms": None,
            "error_type": "",
            "error_message": "",
            "created_at": "2025-03-01T12:00:00+00:00",
            "started_at": None,
            "finished_at": None,
        },
        {
            "id": str(TURN_ID),
            "role": "assistant",
            "content": f"{SECRET_ANSWER} <script>alert(1)</script>",
            "reasoning": SECRET_REASONING,
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "name": "lookup",
                    "arguments": f'{{"q":"{SECRET_ARGS}"}}',
                }
            ],
            "status": "completed",
            "finish_reason": "stop",
            "provider": "demo",
            "model": "demo",
            "params": {},
            "input_tokens": 10,
            "output_tokens": 20,
            "cached_input_tokens": 0,
            "reasoning_tokens": 0,
            "cost": "0.00012000",
            "ttft_ms": 50,
            "duration_ms": 400,
            "error_type": "",
            "error_message": "",
            "created_at": "2025-03-01T12:00:01+00:00",
            "started_at": "2025-03-01T12:00:00+00:00",
            "finished_at": "2025-03-01T12:00:01+00:00",
        },
    ],
}

EXPECTED_MARKDOWN = f"""# {SECRET_TITLE}

| | |
|---|---|
| id | {CONV_ID} |
| owner | anonymous visitor |
| provider | demo |
| model | demo |
| created | 2025-03-01T12:00:00+00:00 |
| updated | 2025-03-01T12:00:00+00:00 |

## System prompt

{SECRET_SYSTEM}

## User · 2025-03-01T12:00:00+00:00

{SECRET_PROMPT} <b>bold</b>

## Assistant · 2025-03-01T12:00:01+00:00

*completed · demo/demo · tokens in 10 / out 20 · cost 0.00012 · TTFT 50 ms · 400 ms · finish: stop*

<details><summary>Reasoning</summary>

{SECRET_REASONING}

</details>

{SECRET_ANSWER} <script>alert(1)</script>

Tool call `lookup`:

```json
{{"q":"{SECRET_ARGS}"}}
```

"""

EXPECTED_CSV = (
    "conversation_id,conversation_title,owner,message_id,role,status,created_at,provider,model,"
    "content,reasoning,tool_calls,finish_reason,input_tokens,output_tokens,cached_input_tokens,"
    "reasoning_tokens,cost,ttft_ms,duration_ms,error_type,error_message\r\n"
    f"{CONV_ID},{SECRET_TITLE},,,system,,2025-03-01T12:00:00+00:00,,,{SECRET_SYSTEM}"
    ",,,,,,,,,,,,\r\n"
    f"{CONV_ID},{SECRET_TITLE},,{USER_MSG_ID},user,completed,2025-03-01T12:00:00+00:00,,,"
    f"{SECRET_PROMPT} <b>bold</b>,,,,,,,,,,,,\r\n"
    f"{CONV_ID},{SECRET_TITLE},,{TURN_ID},assistant,completed,2025-03-01T12:00:01+00:00,demo,"
    f'demo,{SECRET_ANSWER} <script>alert(1)</script>,{SECRET_REASONING},"[{{""index"":0,'
    f'""id"":""call_1"",""name"":""lookup"",""arguments"":""{{\\""q\\"":\\""{SECRET_ARGS}'
    '\\""}""}]",stop,10,20,0,0,0.00012000,50,400,,\r\n'
)


def _export(client: Client, action: str, *ids: uuid.UUID) -> Any:
    return client.post(
        admin_url("conversation_changelist"),
        {"action": action, "_selected_action": [str(i) for i in ids]},
    )


def test_export_actions_produce_exact_files(
    admin_client: Client, conversation: Conversation
) -> None:
    response = _export(admin_client, "export_jsonl", CONV_ID)
    assert response["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="conversations-')
    assert response["Content-Disposition"].endswith('.jsonl"')
    lines = response.content.decode().splitlines()
    assert [json.loads(line) for line in lines] == [EXPECTED_JSONL]
    markdown = _export(admin_client, "export_markdown", CONV_ID)
    assert markdown["Content-Type"] == "text/markdown; charset=utf-8"
    assert markdown.content.decode() == EXPECTED_MARKDOWN
    exported = _export(admin_client, "export_csv", CONV_ID)
    assert exported["Content-Type"] == "text/csv; charset=utf-8"
    assert exported.content.decode() == EXPECTED_CSV
    rows = list(csv.DictReader(io.StringIO(exported.content.decode())))
    assert json.loads(rows[2]["tool_calls"])[0]["arguments"] == f'{{"q":"{SECRET_ARGS}"}}'


def test_export_of_several_conversations(admin_client: Client, conversation: Conversation) -> None:
    other = make_conversation(title="Second", when=T0 + timedelta(days=1))
    lines = _export(admin_client, "export_jsonl", other.pk, CONV_ID).content.decode().splitlines()
    assert [json.loads(line)["title"] for line in lines] == [SECRET_TITLE, "Second"]  # oldest first
    markdown = _export(admin_client, "export_markdown", CONV_ID, other.pk).content.decode()
    assert markdown.count("\n---\n") == 1 and markdown.startswith(f"# {SECRET_TITLE}")


def test_markdown_fence_cannot_be_closed_by_arguments() -> None:
    from django_llmstream.exports import _md_fence

    assert _md_fence("a ``` b", "json") == "````json\na ``` b\n````"


# -- privacy -------------------------------------------------------------------------------


def _assert_hidden(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} shown in {where}"


def test_hide_content_from_staff_on_every_page_and_export(conversation: Conversation) -> None:
    operator = client_for(staff_user())
    with llm_settings(HIDE_CONTENT_FROM_STAFF=True):
        for name, url in page_urls(conversation).items():
            response = operator.get(url)
            assert response.status_code == 200, name
            _assert_hidden(response.content.decode(), name)
        transcript = operator.get(admin_url("conversation_change", CONV_ID)).content.decode()
        assert "llm-hidden" in transcript and "lookup" in transcript  # tool names stay
        assert "0.00012" in transcript  # figures stay
        # Searching text is off for them: it cannot be used to probe what was written.
        searched = operator.get(admin_url("conversation_changelist") + f"?q={SECRET_PROMPT}")
        assert searched.context["cl"].result_count == 0
        searched = operator.get(admin_url("message_changelist") + f"?q={SECRET_ANSWER}")
        assert searched.context["cl"].result_count == 0
        for action in ("export_jsonl", "export_markdown", "export_csv"):
            exported = _export(operator, action, CONV_ID)
            assert exported.status_code == 200
            _assert_hidden(exported.content.decode(), action)
        record = json.loads(_export(operator, "export_jsonl", CONV_ID).content)
        assert record["content_hidden"] is True and record["title"] is None
        assert record["messages"][1]["tool_calls"][0]["name"] == "lookup"
        assert record["messages"][1]["output_tokens"] == 20
        assert "*hidden*" in _export(operator, "export_markdown", CONV_ID).content.decode()


def test_content_permission_and_superusers_see_text(
    admin_client: Client, conversation: Conversation
) -> None:
    reader = client_for(staff_user("reader", content=True))
    with llm_settings(HIDE_CONTENT_FROM_STAFF=True):
        for client in (reader, admin_client):
            page = client.get(admin_url("conversation_change", CONV_ID)).content.decode()
            assert SECRET_ANSWER in page and SECRET_SYSTEM in page
            exported = _export(client, "export_jsonl", CONV_ID).content.decode()
            assert SECRET_ANSWER in exported


def test_hidden_delete_keeps_text_out_of_messages_and_log(conversation: Conversation) -> None:
    from django.contrib.admin.models import LogEntry

    operator = client_for(staff_user())
    with llm_settings(HIDE_CONTENT_FROM_STAFF=True):
        response = operator.post(
            admin_url("conversation_delete", CONV_ID), {"post": "yes"}, follow=True
        )
        assert response.status_code == 200
        _assert_hidden(response.content.decode(), "delete success page")
        assert not Conversation.objects.filter(pk=CONV_ID).exists()
        entry = LogEntry.objects.get()
        assert entry.object_repr == f"Conversation {CONV_ID}"
        index = operator.get("/admin/").content.decode()
        _assert_hidden(index, "recent actions")


def test_delete_selected_confirmation_hides_text(conversation: Conversation) -> None:
    operator = client_for(staff_user())
    with llm_settings(HIDE_CONTENT_FROM_STAFF=True):
        response = operator.post(
            admin_url("conversation_changelist"),
            {"action": "delete_selected", "_selected_action": [str(CONV_ID)]},
        )
        assert response.status_code == 200
        page = response.content.decode()
        _assert_hidden(page, "delete selected confirmation")
        assert str(CONV_ID) in page


def test_running_turn_page_hides_text_from_staff(db: None) -> None:
    with llm_settings(HIDE_CONTENT_FROM_STAFF=True):
        running = make_conversation(status="streaming")
        turn = running.messages.get(role="assistant")
        page = client_for(staff_user()).get(admin_url("message_change", turn.pk)).content
        assert b'id="llm-live"' in page
        _assert_hidden(page.decode(), "live view")

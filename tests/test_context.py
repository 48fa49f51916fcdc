"""The conversation context budget (``CONTEXT_BUDGET``): which turns of a long conversation are
sent upstream, by the views' ``build_messages`` and by ``django_llmstream.stream()``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from django.test import override_settings

from django_llmstream import stream
from django_llmstream.checks import check_settings
from django_llmstream.context import (
    context_budget,
    fit_context,
    is_valid_budget,
    message_chars,
    turns,
)
from django_llmstream.events import Event, Finish, TextDelta
from django_llmstream.models import Conversation, Message
from django_llmstream.providers import get_provider
from django_llmstream.providers.base import BaseProvider, ChatMessage, ChatRequest
from django_llmstream.providers.demo import DemoProvider
from django_llmstream.views import TurnStartMixin

DEMO = "django_llmstream.providers.demo.DemoProvider"


def system(text: str = "S" * 10) -> ChatMessage:
    return ChatMessage("system", text)


def user(text: str) -> ChatMessage:
    return ChatMessage("user", text)


def assistant(text: str, *calls: dict[str, Any]) -> ChatMessage:
    return ChatMessage("assistant", text, tool_calls=tuple(calls))


def tool(text: str, call_id: str | None) -> ChatMessage:
    return ChatMessage("tool", text, tool_call_id=call_id)


def call(call_id: str, name: str = "f", arguments: str = "{}") -> dict[str, Any]:
    return {"index": 0, "id": call_id, "name": name, "arguments": arguments}


def contents(messages: list[ChatMessage]) -> list[str]:
    return [m.content for m in messages]


# A conversation of three earlier turns of 20 characters each, then the new prompt (5).
CONVERSATION = [
    system(),  # 10
    user("u1" * 5),  # 10
    assistant("a1" * 5),  # 10
    user("u2" * 5),
    assistant("a2" * 5),
    user("u3" * 5),
    assistant("a3" * 5),
    user("new!!"),  # 5
]


# -- what is counted ---------------------------------------------------------------------------


def test_message_chars_counts_text_and_tool_calls() -> None:
    assert message_chars(user("héllo")) == 5
    with_calls = assistant("ok", call("c1", "get_weather", '{"city":"Paris"}'))
    assert message_chars(with_calls) == 2 + len("get_weather") + len('{"city":"Paris"}')
    # OpenAI's stored shape counts the same.
    openai_shape = {"id": "c1", "type": "function", "function": {"name": "g", "arguments": "{}"}}
    assert message_chars(assistant("", openai_shape)) == 3


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (None, True),
        (1, True),
        (200_000, True),
        (0, False),
        (-5, False),
        (1.5, False),
        (True, False),
        ("100", False),
    ],
)
def test_valid_budgets(value: Any, valid: bool) -> None:
    assert is_valid_budget(value) is valid


# -- the trimming rules ------------------------------------------------------------------------


def test_no_budget_sends_everything() -> None:
    assert fit_context(CONVERSATION, None) == CONVERSATION


def test_a_conversation_within_the_budget_is_unchanged() -> None:
    assert fit_context(CONVERSATION, 75) == CONVERSATION  # exactly the total
    assert fit_context(CONVERSATION, 10_000) == CONVERSATION


def test_the_oldest_turns_go_first_whole() -> None:
    # 74: one character short of everything; the whole first turn (u1 + a1) goes.
    assert contents(fit_context(CONVERSATION, 74)) == [
        "S" * 10,
        "u2" * 5,
        "a2" * 5,
        "u3" * 5,
        "a3" * 5,
        "new!!",
    ]
    assert contents(fit_context(CONVERSATION, 35)) == ["S" * 10, "u3" * 5, "a3" * 5, "new!!"]


def test_system_prompt_and_new_prompt_are_always_sent() -> None:
    # A budget smaller than the two together still sends both, and nothing else.
    assert contents(fit_context(CONVERSATION, 1)) == ["S" * 10, "new!!"]
    assert contents(fit_context(CONVERSATION, 34)) == ["S" * 10, "new!!"]


def test_a_user_message_never_goes_without_its_answer() -> None:
    for budget in range(1, 80):
        kept = fit_context(CONVERSATION, budget)
        for index, message in enumerate(kept[:-1]):
            if message.role == "user":
                assert kept[index + 1].role == "assistant", (budget, contents(kept))
            if message.role == "assistant":
                assert kept[index - 1].role == "user", (budget, contents(kept))


def test_kept_turns_are_the_newest_without_gaps() -> None:
    # The newest earlier turn is too big: the small turn before it is not sent either.
    messages = [
        system("s"),
        user("tiny"),
        assistant("ok"),
        user("x" * 100),
        assistant("y" * 100),
        user("new"),
    ]
    assert contents(fit_context(messages, 50)) == ["s", "new"]


def test_the_new_turn_includes_tool_results_after_the_prompt() -> None:
    # A conversation in progress: the prompt, a tool call and its result are all the new turn.
    messages = [
        user("old" * 10),
        assistant("answer" * 5),
        user("weather?"),
        assistant("", call("c1", "get_weather", "{}")),
        tool("18 C", "c1"),
    ]
    assert contents(fit_context(messages, 10)) == ["weather?", "", "18 C"]


def test_tool_calls_go_with_their_results() -> None:
    messages = [
        system("s"),
        user("weather in Paris?"),
        assistant("", call("c1", "get_weather", '{"city":"Paris"}')),
        tool("18 C and sunny", "c1"),
        assistant("It is 18 C and sunny in Paris."),
        user("and tomorrow?"),
    ]
    sizes = [message_chars(m) for m in messages]
    everything = sum(sizes)
    assert fit_context(messages, everything) == messages
    # One character short: the whole turn goes — the call, its result and the answer.
    assert contents(fit_context(messages, everything - 1)) == ["s", "and tomorrow?"]


def test_a_result_answering_an_earlier_turns_call_keeps_both() -> None:
    # An unusual order (the result arrives after a later user message): the two turns are one.
    messages = [
        user("first"),
        assistant("", call("c1")),
        user("second"),
        tool("result", "c1"),
        assistant("done"),
        user("new"),
    ]
    assert turns(messages) == [[0, 1, 2, 3, 4], [5]]
    kept = fit_context(messages, 10)
    assert contents(kept) == ["new"]
    ids_called = {c["id"] for m in kept for c in m.tool_calls}
    ids_answered = {m.tool_call_id for m in kept if m.role == "tool"}
    assert ids_called == ids_answered


def test_messages_before_the_first_user_message_are_a_turn() -> None:
    messages = [system("s"), assistant("Hi! How can I help?"), user("q" * 10), user("new")]
    assert turns(messages) == [[1], [2], [3]]
    assert contents(fit_context(messages, 15)) == ["s", "q" * 10, "new"]


def test_system_messages_anywhere_stay() -> None:
    messages = [
        system("rules"),
        user("u" * 50),
        system("reminder"),
        assistant("a" * 50),
        user("new"),
    ]
    assert contents(fit_context(messages, 20)) == ["rules", "reminder", "new"]


def test_a_single_turn_is_never_trimmed() -> None:
    messages = [system("s" * 100), user("u" * 100)]
    assert fit_context(messages, 1) == messages
    assert fit_context([], 1) == []


def test_dropping_is_logged_without_content(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="django_llmstream.context"):
        fit_context(CONVERSATION, 35)
    (record,) = [r for r in caplog.records if r.name == "django_llmstream.context"]
    assert "the 2 oldest" in record.getMessage()
    assert "u1" not in record.getMessage()


def test_invariants_on_random_conversations() -> None:
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    texts = st.text(alphabet="abcé ", max_size=30)

    @st.composite
    def conversations(draw: Any) -> list[ChatMessage]:
        messages: list[ChatMessage] = []
        if draw(st.booleans()):
            messages.append(system(draw(texts)))
        counter = 0
        for _ in range(draw(st.integers(0, 6))):
            messages.append(user(draw(texts)))
            for _ in range(draw(st.integers(0, 2))):
                counter += 1
                call_id = f"c{counter}"
                messages.append(assistant(draw(texts), call(call_id, "f", draw(texts))))
                messages.append(tool(draw(texts), call_id))
            if draw(st.booleans()):
                messages.append(assistant(draw(texts)))
        messages.append(user(draw(texts)))
        return messages

    @settings(max_examples=200, deadline=None)
    @given(conversations(), st.integers(1, 400))
    def check(messages: list[ChatMessage], budget: int) -> None:
        kept = fit_context(messages, budget)
        # A subsequence of the original, in order.
        where = {id(m): i for i, m in enumerate(messages)}
        positions = [where[id(m)] for m in kept]
        assert positions == sorted(set(positions))
        # System messages and the newest turn are all there.
        assert [m for m in messages if m.role == "system"] == [
            m for m in kept if m.role == "system"
        ]
        last_user = max(i for i, m in enumerate(messages) if m.role == "user")
        assert kept[-(len(messages) - last_user) :] == messages[last_user:]
        # The other messages sent are the newest ones, without gaps.
        others = [m for m in messages if m.role != "system"]
        kept_others = [m for m in kept if m.role != "system"]
        assert others[len(others) - len(kept_others) :] == kept_others
        assert kept_others[0].role == "user" or kept_others == others
        # Every call is sent with its result and every result with its call.
        called = {c["id"] for m in kept for c in m.tool_calls}
        answered = {m.tool_call_id for m in kept if m.role == "tool"}
        assert called == answered
        # Within budget, unless only the mandatory part is left.
        total = sum(message_chars(m) for m in kept)
        mandatory = sum(message_chars(m) for m in messages if m.role == "system") + sum(
            message_chars(m) for m in messages[last_user:]
        )
        assert total <= budget or total == mandatory

    check()


# -- where the budget comes from ---------------------------------------------------------------


def test_default_budget_and_overrides() -> None:
    providers = {
        "demo": {"BACKEND": DEMO},
        "small": {"BACKEND": DEMO, "OPTIONS": {"CONTEXT_BUDGET": 24_000}},
        "unlimited": {"BACKEND": DEMO, "OPTIONS": {"CONTEXT_BUDGET": None}},
    }
    with override_settings(LLMSTREAM={"PROVIDERS": providers}):
        assert context_budget("demo") == 200_000  # the default setting
        assert context_budget("small") == 24_000
        assert context_budget("unlimited") is None
        assert context_budget("gone") == 200_000
        assert context_budget() == 200_000
        assert get_provider("small").context_budget == 24_000
    with override_settings(LLMSTREAM={"PROVIDERS": providers, "CONTEXT_BUDGET": None}):
        assert context_budget("demo") is None
        assert context_budget("small") == 24_000


def test_checks() -> None:
    def ids(**settings: Any) -> list[str]:
        with override_settings(LLMSTREAM={"PROVIDERS": {"demo": {"BACKEND": DEMO}}, **settings}):
            return [m.id for m in check_settings() if m.id]

    assert ids(CONTEXT_BUDGET=None) == []
    assert ids(CONTEXT_BUDGET=50_000) == []
    assert ids(CONTEXT_BUDGET=0) == ["llmstream.E012"]
    assert ids(CONTEXT_BUDGET=1.5) == ["llmstream.E012"]
    assert ids(CONTEXT_BUDGET="big") == ["llmstream.E012"]
    # In OPTIONS: known to every backend (no E017), and validated.
    assert DemoProvider("d", {"OPTIONS": {"CONTEXT_BUDGET": 8000}}).check() == []
    assert DemoProvider("d", {"OPTIONS": {"CONTEXT_BUDGET": None}}).check() == []
    errors = DemoProvider("d", {"OPTIONS": {"CONTEXT_BUDGET": -1}}).check()
    assert [e.id for e in errors] == ["llmstream.E011"]
    assert "CONTEXT_BUDGET" in BaseProvider.known_options()


# -- where it is applied -----------------------------------------------------------------------


def test_build_messages_applies_the_budget() -> None:
    providers = {"demo": {"BACKEND": DEMO, "OPTIONS": {"CONTEXT_BUDGET": 35}}}
    conversation = Conversation(provider="demo", model="demo", system_prompt="Be brief.")
    history = [
        Message(role="user", content="first question"),
        Message(role="assistant", content="first answer"),
        Message(role="assistant", content=""),  # a turn that produced nothing
        Message(role="user", content="second"),
        Message(role="assistant", content="second answer"),
        Message(role="user", content="third"),
    ]
    with override_settings(LLMSTREAM={"PROVIDERS": providers}):
        messages = TurnStartMixin().build_messages(conversation, history)
    assert [(m.role, m.content) for m in messages] == [
        ("system", "Be brief."),
        ("user", "second"),
        ("assistant", "second answer"),
        ("user", "third"),
    ]


class RecordingProvider(BaseProvider):
    """Records the requests it gets; answers "ok"."""

    default_base_url: ClassVar[str | None] = "test://recording"
    default_models = ("m",)
    requests: ClassVar[list[ChatRequest]] = []

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        self.requests.append(request)
        yield TextDelta("ok")
        yield Finish()


async def test_the_python_api_applies_the_budget() -> None:
    RecordingProvider.requests.clear()
    providers = {"rec": {"BACKEND": f"{__name__}.RecordingProvider"}}
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "old question"},
        {"role": "assistant", "content": "old answer"},
        {"role": "user", "content": "new"},
    ]
    with override_settings(LLMSTREAM={"PROVIDERS": providers, "CONTEXT_BUDGET": 10}):
        events = [event async for event in stream(messages)]
    assert events[-1] == Finish()
    (request,) = RecordingProvider.requests
    assert [m.content for m in request.messages] == ["sys", "new"]
    with override_settings(LLMSTREAM={"PROVIDERS": providers, "CONTEXT_BUDGET": None}):
        _ = [event async for event in stream(messages)]
    assert len(RecordingProvider.requests[-1].messages) == 4

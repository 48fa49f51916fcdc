"""The offline demo provider: deterministic, paced, cancellable, honest about usage."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from django_llmstream.events import Finish, TextDelta, Usage
from django_llmstream.providers import get_provider
from django_llmstream.providers.base import BaseProvider, ChatMessage, ChatRequest
from django_llmstream.providers.demo import DemoProvider, demo_reply, split_tokens
from tests.providers.contract import ProviderContract, chat_request, collect, summarize
from tests.upstream import FakeUpstream


def make(**options: Any) -> DemoProvider:
    return DemoProvider("demo", {"BACKEND": "x", "OPTIONS": {"DELAY": 0, **options}})


async def test_reply_depends_only_on_the_last_user_message() -> None:
    provider = make()
    first = summarize(await collect(provider.stream(chat_request("What is SSE?"))))
    again = summarize(await collect(provider.stream(chat_request("What is SSE?"))))
    other = summarize(await collect(provider.stream(chat_request("Something else"))))
    assert first.text == again.text == demo_reply("What is SSE?")
    assert other.text != first.text
    assert "“What is SSE?”" in first.text
    assert "OPENAI_BASE_URL" in first.text
    assert "OPENAI_API_KEY" in first.text


@pytest.mark.parametrize(
    "prompt", ["", "one", "a much longer prompt with more than eight words in it, surely", "  \n "]
)
def test_tokens_concatenate_to_the_reply(prompt: str) -> None:
    reply = demo_reply(prompt)
    tokens = split_tokens(reply)
    assert "".join(tokens) == reply
    assert 60 <= len(tokens) <= 120
    assert all(token for token in tokens)


def test_split_tokens_keeps_every_character() -> None:
    text = "  lead\n\nword  tail\t"
    assert "".join(split_tokens(text)) == text


async def test_events_usage_and_finish() -> None:
    request = ChatRequest(
        messages=(
            ChatMessage("system", "Be brief please"),
            ChatMessage("user", "first question"),
            ChatMessage("assistant", "an answer"),
            ChatMessage("user", "second question here"),
        ),
        model="demo",
    )
    events = await collect(make().stream(request))
    deltas = [event for event in events if isinstance(event, TextDelta)]
    assert "".join(d.text for d in deltas) == demo_reply("second question here")
    assert events[-2] == Usage(
        input_tokens=3 + 2 + 2 + 3,
        output_tokens=len(deltas),
        cached_input_tokens=0,
        reasoning_tokens=0,
    )
    assert events[-1] == Finish("stop", "stop")


async def test_max_tokens_stops_with_length() -> None:
    events = await collect(make().stream(chat_request("Hi", model="demo", max_tokens=5)))
    deltas = [event for event in events if isinstance(event, TextDelta)]
    assert len(deltas) == 5
    assert "".join(d.text for d in deltas) == "".join(split_tokens(demo_reply("Hi"))[:5])
    assert events[-1] == Finish("length", "length")
    usage = events[-2]
    assert isinstance(usage, Usage) and usage.output_tokens == 5


async def test_fixed_reply_option() -> None:
    events = await collect(make(REPLY="Just this.").stream(chat_request("anything")))
    assert summarize(events).text == "Just this."


async def test_delay_paces_the_stream() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await collect(make(REPLY="a b c d e", DELAY=0.02).stream(chat_request()))
    assert loop.time() - started >= 5 * 0.02 * 0.9


def test_default_delay_makes_the_demo_visibly_stream() -> None:
    assert DemoProvider("demo", {}).delay == 0.03


def test_checks() -> None:
    assert DemoProvider("demo", {}).check() == []
    bad = DemoProvider("demo", {"OPTIONS": {"DELAY": -1, "REPLY": 3}})
    assert [error.id for error in bad.check()] == ["llmstream.E011", "llmstream.E011"]


def test_default_settings_use_the_demo() -> None:
    provider = get_provider("demo")
    assert isinstance(provider, DemoProvider)
    assert provider.models == ["demo"]
    assert provider.check() == []


class TestDemoContract(ProviderContract):
    uses_network = False
    takes_api_key = False
    model = "demo"

    def make_provider(self, base_url: str, **config: Any) -> BaseProvider:
        # The demo has no upstream: base_url is ignored.
        return DemoProvider("demo", {"OPTIONS": {"DELAY": 0}, **config})

    def prepare_slow_answer(self, upstream: FakeUpstream) -> dict[str, Any]:
        return {"OPTIONS": {"DELAY": 0.5}}

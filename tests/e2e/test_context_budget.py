"""End to end: a long conversation through real uvicorn sends only its newest turns upstream
(``CONTEXT_BUDGET``), always with the system prompt and the new prompt, and keeps every
message in the database."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import SECRET
from tests.live import Client
from tests.upstream import FakeUpstream, openai_chunks

pytestmark = pytest.mark.e2e

USAGE = {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}
TURNS = [("One", "First answer"), ("Two", "Second answer"), ("Three", "Third answer")]


def converse(client: Client, upstream: FakeUpstream) -> str:
    """Three turns with the system prompt "Be brief.", then the prompt "Four"; returns the
    conversation's id."""
    conversation: str | None = None
    for prompt, answer in TURNS:
        upstream.respond(chunks=openai_chunks([answer[:3], answer[3:]], usage=USAGE))
        body: dict[str, Any] = {"prompt": prompt}
        if conversation is None:
            body["system"] = "Be brief."
        else:
            body["conversation"] = conversation
        result = client.read_sse("POST", "/llmstream/stream/", json=body)
        assert result.terminal.event == "done", result.events[-1:]
        conversation = result.events[0].json()["conversation"]
    assert conversation is not None
    upstream.respond(chunks=openai_chunks(["Fourth"], usage=USAGE))
    result = client.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "Four", "conversation": conversation}
    )
    assert result.terminal.event == "done"
    return conversation


# The system prompt (9) + the new prompt (4) + the newest turn (5 + 12) = 30 characters; the
# turn before it ("Two", "Second answer": 16 more) does not fit.
NEWEST_ONLY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Three"},
    {"role": "assistant", "content": "Third answer"},
    {"role": "user", "content": "Four"},
]


def test_a_long_conversation_sends_only_the_newest_turns(
    client_e2e: Client, configure: Any, upstream: FakeUpstream
) -> None:
    configure(CONTEXT_BUDGET=30)
    conversation = converse(client_e2e, upstream)
    # The third turn's request: the second turn fit (9 + 5 + 3 + 13 = 30 characters), the
    # first did not (15 more).
    assert upstream.requests[2].json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Two"},
        {"role": "assistant", "content": "Second answer"},
        {"role": "user", "content": "Three"},
    ]
    assert upstream.requests[-1].json["messages"] == NEWEST_ONLY
    # Nothing is lost: the transcript keeps every message.
    detail = client_e2e.http.get(f"/llmstream/conversations/{conversation}/").json()
    assert [m["content"] for m in detail["messages"]] == [
        "One",
        "First answer",
        "Two",
        "Second answer",
        "Three",
        "Third answer",
        "Four",
        "Fourth",
    ]


def test_a_provider_entry_sets_its_own_budget(
    client_e2e: Client, configure: Any, upstream: FakeUpstream
) -> None:
    configure(
        CONTEXT_BUDGET=None,  # no limit elsewhere
        PROVIDERS={
            "openai": {
                "BACKEND": "django_llmstream.providers.openai.OpenAIProvider",
                "BASE_URL": upstream.base_url,
                "API_KEY": SECRET,
                "MODELS": ["fake-model"],
                "OPTIONS": {"CONTEXT_BUDGET": 30},
            }
        },
    )
    converse(client_e2e, upstream)
    assert upstream.requests[-1].json["messages"] == NEWEST_ONLY


def test_without_a_budget_everything_is_sent(
    client_e2e: Client, configure: Any, upstream: FakeUpstream
) -> None:
    configure(CONTEXT_BUDGET=None)
    converse(client_e2e, upstream)
    sent = upstream.requests[-1].json["messages"]
    assert [m["content"] for m in sent] == [
        "Be brief.",
        "One",
        "First answer",
        "Two",
        "Second answer",
        "Three",
        "Third answer",
        "Four",
    ]

"""Tool calls in the history sent upstream: the shared helpers of ``providers/base.py`` and
what each backend makes of a turn that ended in tool calls the user never answered."""

from __future__ import annotations

from typing import Any

from django_llmstream.providers.base import (
    ChatMessage,
    ChatRequest,
    answered_tool_call_ids,
    tool_call_fields,
    without_unanswered_tool_calls,
)
from django_llmstream.providers.openai import OpenAIProvider

OURS = {"index": 0, "id": "call_1", "name": "f", "arguments": '{"a":1}'}
OPENAI_SHAPE = {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "{}"}}


def test_tool_call_fields_reads_both_shapes() -> None:
    assert tool_call_fields(OURS) == ("call_1", "f", '{"a":1}')
    assert tool_call_fields(OPENAI_SHAPE) == ("call_2", "g", "{}")
    assert tool_call_fields({"name": "h", "arguments": {"x": "é"}}) == (None, "h", '{"x":"é"}')


def history(*calls: dict[str, Any], answer: str | None = None) -> list[ChatMessage]:
    messages = [
        ChatMessage("user", "Weather?"),
        ChatMessage("assistant", "", tool_calls=tuple(calls)),
    ]
    if answer:
        messages.append(ChatMessage("tool", "18 °C", tool_call_id=answer))
    messages.append(ChatMessage("user", "Hello?"))
    return messages


def test_unanswered_calls_are_dropped_with_their_empty_message() -> None:
    messages = history(OURS)
    assert answered_tool_call_ids(messages) == frozenset()
    assert without_unanswered_tool_calls(messages) == [
        ChatMessage("user", "Weather?"),
        ChatMessage("user", "Hello?"),
    ]


def test_answered_calls_are_kept_and_text_survives_its_calls() -> None:
    messages = history(OURS, OPENAI_SHAPE, answer="call_2")
    kept = without_unanswered_tool_calls(messages)
    assert kept[1].tool_calls == (OPENAI_SHAPE,)
    with_text = [ChatMessage("assistant", "Let me look.", tool_calls=(OURS,))]
    assert without_unanswered_tool_calls(with_text) == [ChatMessage("assistant", "Let me look.")]


def test_chat_completions_sends_only_answered_calls() -> None:
    # "An assistant message with 'tool_calls' must be followed by tool messages responding to
    # each 'tool_call_id'": the next user turn after a tool-call turn would be refused.
    provider = OpenAIProvider("openai", {"BASE_URL": "http://127.0.0.1:9/v1", "MODELS": ["m"]})
    body = provider.build_body(ChatRequest(messages=tuple(history(OURS)), model="m"))
    assert body["messages"] == [
        {"role": "user", "content": "Weather?"},
        {"role": "user", "content": "Hello?"},
    ]
    body = provider.build_body(
        ChatRequest(messages=tuple(history(OURS, answer="call_1")), model="m")
    )
    assert body["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert body["messages"][2] == {"role": "tool", "content": "18 °C", "tool_call_id": "call_1"}

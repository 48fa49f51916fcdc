"""OpenAI Chat Completions, and every server that speaks it.

Works with api.openai.com and the compatible servers (vLLM, llama.cpp's server, LM Studio,
Ollama's ``/v1``, Groq, OpenRouter, Azure with ``QUERY_PARAMS``/``HEADERS`` …). ``BASE_URL``
includes ``/v1``, as in the OpenAI SDKs. An API key is required only for api.openai.com:
local servers need none, and ``Authorization`` is sent only when a key is set.

``OPTIONS``: ``STREAM_USAGE`` (default ``True``) asks for the final usage chunk with
``stream_options.include_usage``; turn it off for servers that reject ``stream_options``.
``MAX_TOKENS_PARAM`` (default ``"max_tokens"``) is the name the ``max_tokens`` param is sent
under, e.g. ``"max_completion_tokens"`` for OpenAI's reasoning models.

Wire format: https://platform.openai.com/docs/api-reference/chat-streaming — ``data:`` lines of
``chat.completion.chunk`` JSON, ended by ``data: [DONE]``; with ``include_usage`` a last chunk
has ``choices: []`` and ``usage`` (newer streams send ``"usage": null`` on every other chunk).
A server that ignores ``stream`` and answers one ``chat.completion`` JSON object is read as if
it had streamed it (:meth:`OpenAIProvider.parse_json_answer`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import httpx
from django.core import checks

from django_llmstream.events import Event, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from django_llmstream.exceptions import UpstreamStreamError
from django_llmstream.providers.base import (
    ChatMessage,
    ChatRequest,
    without_unanswered_tool_calls,
)
from django_llmstream.providers.http import HTTPProvider, StreamState

__all__ = ["FINISH_REASON_MAP", "OpenAIProvider"]

#: OpenAI's ``finish_reason`` -> ours; anything else becomes ``stop`` (the raw value is kept).
FINISH_REASON_MAP: dict[str, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}

# Request keys that params must not replace: they are what makes the answer a stream we read.
_RESERVED = frozenset({"model", "messages", "stream"})

# Error types/codes of a mid-stream error object that another try would not fix.
_PERMANENT_ERROR_MARKERS = ("invalid_request", "auth", "permission")


class OpenAIProvider(HTTPProvider):
    """OpenAI Chat Completions (``POST {BASE_URL}/chat/completions``, streamed)."""

    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"
    option_names: ClassVar[frozenset[str]] = frozenset({"STREAM_USAGE", "MAX_TOKENS_PARAM"})

    # -- configuration -----------------------------------------------------------------

    @property
    def max_tokens_param(self) -> str:
        return str(self.options.get("MAX_TOKENS_PARAM") or "max_tokens")

    @property
    def stream_usage(self) -> bool:
        return bool(self.options.get("STREAM_USAGE", True))

    def check(self) -> list[checks.CheckMessage]:
        errors = super().check()
        where = f'LLMSTREAM["PROVIDERS"]["{self.alias}"]'
        errors += self.missing_openai_key(where, "an OpenAI-compatible server")
        param = self.options.get("MAX_TOKENS_PARAM")
        if param is not None and not (isinstance(param, str) and param):
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"]["MAX_TOKENS_PARAM"] = {param!r} is not a parameter name.',
                    hint='Use "max_tokens" (the default) or "max_completion_tokens".',
                    id="llmstream.E011",
                )
            )
        usage = self.options.get("STREAM_USAGE")
        if usage is not None and not isinstance(usage, bool):
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"]["STREAM_USAGE"] must be True or False.',
                    id="llmstream.E011",
                )
            )
        return errors

    # -- the request -------------------------------------------------------------------

    def endpoint(self, request: ChatRequest) -> str:
        return "chat/completions"

    def build_body(self, request: ChatRequest) -> Mapping[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            # A call without its tool result is refused ("An assistant message with
            # 'tool_calls' must be followed by tool messages"): only answered calls go out.
            "messages": [
                self.format_message(message)
                for message in without_unanswered_tool_calls(request.messages)
            ],
            "stream": True,
        }
        if self.stream_usage:
            body["stream_options"] = {"include_usage": True}
        for name, value in request.params.items():
            if name in _RESERVED:
                continue
            body[self.max_tokens_param if name == "max_tokens" else name] = value
        return body

    def format_message(self, message: ChatMessage) -> dict[str, Any]:
        """One message in Chat Completions' shape."""
        formatted: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            formatted["tool_calls"] = [_format_tool_call(call) for call in message.tool_calls]
            if not message.content:
                formatted["content"] = None
        if message.tool_call_id:
            formatted["tool_call_id"] = message.tool_call_id
        return formatted

    # -- the stream --------------------------------------------------------------------

    async def parse_stream(
        self, response: httpx.Response, state: StreamState
    ) -> AsyncIterator[Event]:
        async with contextlib.aclosing(self.iter_sse(state)) as events:
            async for sse in events:
                data = sse.data
                if data.strip() == "[DONE]":
                    state.done = True
                    break
                if not data.strip():
                    continue
                chunk = self.decode_json(data)
                if not isinstance(chunk, dict):
                    raise self.protocol_error(f"a chunk that is not a JSON object: {data[:200]!r}")
                if sse.event == "error" or chunk.get("error") or chunk.get("object") == "error":
                    raise self._stream_error(chunk)
                for event in self.parse_chunk(chunk, state):
                    yield event
        if state.done or state.finish_raw is not None:
            # EOF after a finish_reason but without [DONE] is a complete answer too (some
            # compatible servers omit [DONE]); EOF before both is not, and the base says so.
            for event in state.final_events():
                yield event

    def parse_json_answer(self, data: Mapping[str, Any], state: StreamState) -> list[Event] | None:
        """A whole ``chat.completion`` from a server that ignored ``"stream": true``: its
        message becomes one delta of each kind (and whole tool calls), as if streamed."""
        choices = data.get("choices")
        if not isinstance(choices, list) or data.get("error"):
            return None  # an error object, or not a completion: the base says what it is
        as_chunk = {
            **data,
            "choices": [
                {**choice, "delta": choice.get("message")}
                for choice in choices
                if isinstance(choice, Mapping)
            ],
        }
        return self.parse_chunk(as_chunk, state)

    def parse_chunk(self, chunk: Mapping[str, Any], state: StreamState) -> list[Event]:
        """The events of one ``chat.completion.chunk`` (choice 0 only)."""
        events: list[Event] = []
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):  # "usage": null on every chunk is ignored
            state.add_usage(_usage(usage))
        choices = chunk.get("choices") or []
        for choice in choices:
            if not isinstance(choice, Mapping) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta, Mapping):
                events += self._parse_delta(delta, state)
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                state.finish_raw = reason
                state.finish_reason = FINISH_REASON_MAP.get(reason, "stop")
        return events

    def _parse_delta(self, delta: Mapping[str, Any], state: StreamState) -> list[Event]:
        events: list[Event] = []
        # "reasoning_content": DeepSeek, vLLM, llama.cpp; "reasoning": OpenRouter, newer vLLM,
        # Ollama's /v1. A server sending both repeats the same text: take one.
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            events.append(TextDelta(content))
        # A refusal is the model's visible answer ("I can't help with that").
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            events.append(TextDelta(refusal))
        tool_calls = delta.get("tool_calls")
        if isinstance(tool_calls, list):
            for position, call in enumerate(tool_calls):
                if isinstance(call, Mapping):
                    event = self._tool_call_piece(call, position, state)
                    if event is not None:
                        events.append(event)
        function_call = delta.get("function_call")  # the deprecated single-function form
        if isinstance(function_call, Mapping):
            event = self._tool_call_piece({"function": function_call}, "function_call", state)
            if event is not None:
                events.append(event)
        return events

    def _tool_call_piece(
        self, call: Mapping[str, Any], fallback: object, state: StreamState
    ) -> ToolCallDelta | None:
        function = call.get("function") or {}
        if not isinstance(function, Mapping):
            function = {}
        call_id = call.get("id") if isinstance(call.get("id"), str) else None
        key: object = call.get("index")
        if not isinstance(key, int):
            # Some compatible servers (Gemini's) send no index: a new id is a new call, a
            # piece without id continues the latest one.
            known = state.tool_call_keys()
            if call_id:
                key = ("id", call_id)
            elif known:
                key = known[-1]
            else:
                key = fallback
        index, first = state.tool_call_index(key)
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping):
            arguments = json.dumps(arguments, separators=(",", ":"))
        if not isinstance(arguments, str):
            arguments = ""
        if first:
            name = function.get("name")
            return ToolCallDelta(
                index=index,
                arguments=arguments,
                id=call_id,
                name=name if isinstance(name, str) else None,
            )
        return ToolCallDelta(index=index, arguments=arguments) if arguments else None

    def _stream_error(self, chunk: Mapping[str, Any]) -> UpstreamStreamError:
        error = chunk.get("error")
        if isinstance(error, Mapping):
            message = error.get("message")
            markers = f"{error.get('type') or ''} {error.get('code') or ''}"
        else:
            message = error if isinstance(error, str) else chunk.get("message")
            markers = f"{chunk.get('type') or ''} {chunk.get('code') or ''}"
        if not isinstance(message, str) or not message:
            message = json.dumps(chunk)[:300]
        markers = markers.lower()
        permanent = any(marker in markers for marker in _PERMANENT_ERROR_MARKERS)
        return self.stream_error(" ".join(message.split()), retryable=not permanent)


def _format_tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    if "function" in call:
        return dict(call)
    arguments = call.get("arguments", "")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, separators=(",", ":"))
    return {
        "id": call.get("id"),
        "type": "function",
        "function": {"name": call.get("name"), "arguments": arguments},
    }


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _usage(raw: Mapping[str, Any]) -> Usage:
    # OpenAI's prompt_tokens include the cached ones and completion_tokens the reasoning ones:
    # already our convention (events.Usage), no conversion.
    prompt_details = raw.get("prompt_tokens_details")
    completion_details = raw.get("completion_tokens_details")
    return Usage(
        input_tokens=_int(raw.get("prompt_tokens")),
        output_tokens=_int(raw.get("completion_tokens")),
        cached_input_tokens=(
            _int(prompt_details.get("cached_tokens"))
            if isinstance(prompt_details, Mapping)
            else None
        ),
        reasoning_tokens=(
            _int(completion_details.get("reasoning_tokens"))
            if isinstance(completion_details, Mapping)
            else None
        ),
    )

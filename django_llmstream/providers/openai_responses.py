"""OpenAI's Responses API (``POST {BASE_URL}/responses``, streamed).

``BASE_URL`` includes ``/v1``, as in the OpenAI SDKs (default ``https://api.openai.com/v1``).
The system prompt goes in ``instructions``, the conversation in ``input`` items; the request
is stateless (``"store": false`` unless ``OPTIONS["STORE"]`` says otherwise): the whole
history is sent each time, as for every other backend.

``OPTIONS``: ``STORE`` (default ``False``) lets OpenAI keep the response;
``REASONING`` (default ``None``) is sent as ``reasoning``, e.g. ``{"effort": "low",
"summary": "auto"}`` — reasoning models stream a summary of their reasoning only when
``summary`` is asked for.

Wire format (https://platform.openai.com/docs/api-reference/responses-streaming): named SSE
events whose data repeats the name in ``type``: ``response.output_text.delta``,
``response.reasoning_summary_text.delta`` (and ``response.reasoning_text.delta`` of
open-weight models), ``response.output_item.added`` (a ``function_call`` item brings the
call's id and name) and ``response.function_call_arguments.delta``; the stream ends with
``response.completed``, ``response.incomplete`` or ``response.failed`` (their ``response``
object carries ``usage``), or an ``error`` event — nested (``{"error": {"code",
"message"}}``, as production sends it) or flat (``{"code", "message"}``, as documented).
There is no ``[DONE]``.

Usage is already our convention: ``input_tokens`` includes
``input_tokens_details.cached_tokens`` and ``output_tokens`` includes
``output_tokens_details.reasoning_tokens``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

import httpx
from django.core import checks

from django_llmstream.events import Event, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from django_llmstream.exceptions import UpstreamStreamError
from django_llmstream.providers.base import (
    ChatMessage,
    ChatRequest,
    answered_tool_call_ids,
    tool_call_fields,
)
from django_llmstream.providers.http import HTTPProvider, StreamState

__all__ = ["INCOMPLETE_REASON_MAP", "OpenAIResponsesProvider"]

logger = logging.getLogger("django_llmstream.providers")

#: ``response.incomplete_details.reason`` -> ours (the raw finish is
#: ``"incomplete:<reason>"``); an unknown reason is ``length``: the answer was cut.
INCOMPLETE_REASON_MAP: dict[str, str] = {
    "max_output_tokens": "length",
    "content_filter": "content_filter",
}

# Request keys params must not replace; max_tokens is renamed.
_RESERVED = frozenset({"model", "input", "instructions", "stream", "store"})
_RENAMED = {"max_tokens": "max_output_tokens"}
# Params of Chat Completions that the Responses API lacks: dropped (logged at DEBUG).
_UNSUPPORTED = frozenset({"seed", "stop", "n", "logit_bias"})
# Error codes/types of a failed response or an error event that another try would not fix.
_PERMANENT_ERROR_MARKERS = ("invalid", "auth", "permission", "not_found", "unsupported")

_REASONING_DELTAS = frozenset(
    {"response.reasoning_summary_text.delta", "response.reasoning_text.delta"}
)


class OpenAIResponsesProvider(HTTPProvider):
    """OpenAI Responses (``POST {BASE_URL}/responses``, streamed); see the module."""

    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"
    option_names: ClassVar[frozenset[str]] = frozenset({"STORE", "REASONING"})

    # -- configuration -----------------------------------------------------------------

    def check(self) -> list[checks.CheckMessage]:
        errors = super().check()
        where = f'LLMSTREAM["PROVIDERS"]["{self.alias}"]'
        errors += self.missing_openai_key(where, "a server of the Responses API")
        store = self.options.get("STORE")
        if store is not None and not isinstance(store, bool):
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"]["STORE"] must be True or False.',
                    id="llmstream.E011",
                )
            )
        reasoning = self.options.get("REASONING")
        if reasoning is not None and not isinstance(reasoning, Mapping):
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"]["REASONING"] must be a dict.',
                    hint='For example {"effort": "low", "summary": "auto"}.',
                    id="llmstream.E011",
                )
            )
        return errors

    # -- the request -------------------------------------------------------------------

    def endpoint(self, request: ChatRequest) -> str:
        return "responses"

    def build_body(self, request: ChatRequest) -> Mapping[str, Any]:
        instructions, items = self.format_input(request.messages)
        body: dict[str, Any] = {
            "model": request.model,
            "input": items,
            "stream": True,
            "store": bool(self.options.get("STORE", False)),
        }
        if instructions:
            body["instructions"] = instructions
        reasoning = self.options.get("REASONING")
        if isinstance(reasoning, Mapping):
            body["reasoning"] = dict(reasoning)
        for name, value in request.params.items():
            if name in _RESERVED:
                continue
            if name in _UNSUPPORTED:
                logger.debug("%s: the Responses API takes no %r; not sent.", self.alias, name)
                continue
            body[_RENAMED.get(name, name)] = value
        return body

    def format_input(self, messages: Sequence[ChatMessage]) -> tuple[str | None, list[Any]]:
        """``instructions`` (the system messages) and the ``input`` items.

        Messages become ``{"role", "content"}`` items; an assistant's tool calls become
        ``function_call`` items and ``tool`` results ``function_call_output`` items. Calls
        that no result answers are left out: the API refuses them ("No tool output found").
        """
        answered = answered_tool_call_ids(messages)
        system: list[str] = []
        items: list[Any] = []
        for message in messages:
            if message.role == "system":
                if message.content:
                    system.append(message.content)
            elif message.role == "tool" and message.tool_call_id:
                items.append(
                    {
                        "type": "function_call_output",
                        "call_id": message.tool_call_id,
                        "output": message.content,
                    }
                )
            else:
                role = "assistant" if message.role == "assistant" else "user"
                if message.content or role == "user":
                    items.append({"role": role, "content": message.content})
                for call in message.tool_calls if role == "assistant" else ():
                    call_id, name, arguments = tool_call_fields(call)
                    if call_id and name and call_id in answered:
                        items.append(
                            {
                                "type": "function_call",
                                "call_id": call_id,
                                "name": name,
                                "arguments": arguments,
                            }
                        )
        return ("\n\n".join(system) or None), items

    # -- the stream --------------------------------------------------------------------

    async def parse_stream(
        self, response: httpx.Response, state: StreamState
    ) -> AsyncIterator[Event]:
        async with contextlib.aclosing(self.iter_sse(state)) as events:
            async for sse in events:
                if not sse.data.strip():
                    continue
                data = self.decode_json(sse.data)
                if not isinstance(data, dict):
                    raise self.protocol_error(f"an event that is not a JSON object: {sse.data!r}")
                kind = data.get("type") or sse.event
                if kind == "error" or sse.event == "error":
                    raise self._error(data)
                for event in self.parse_event(str(kind), data, state):
                    yield event
                if state.done:
                    break
        if state.done:
            for event in state.final_events():
                yield event

    def parse_event(self, kind: str, data: Mapping[str, Any], state: StreamState) -> list[Event]:
        """The events of one Responses stream event; sets ``state.done`` at its end."""
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            delta = data.get("delta")
            if kind == "response.refusal.delta":
                state.extra["refused"] = True
            return [TextDelta(delta)] if isinstance(delta, str) and delta else []
        if kind in _REASONING_DELTAS:
            return self._reasoning(data, state)
        if kind == "response.output_item.added":
            item = data.get("item")
            if isinstance(item, Mapping) and item.get("type") == "function_call":
                return [self._call_start(item, state)]
            return []
        if kind == "response.function_call_arguments.delta":
            delta = data.get("delta")
            if isinstance(delta, str) and delta:
                return [self._call_arguments(data.get("item_id"), delta, state)]
            return []
        if kind in ("response.function_call_arguments.done", "response.output_item.done"):
            # A server that sends no argument deltas sends the arguments whole here.
            item = data.get("item")
            source = item if isinstance(item, Mapping) else data
            if kind == "response.output_item.done" and source.get("type") != "function_call":
                return []
            key = source.get("id") if source is item else data.get("item_id")
            arguments = source.get("arguments")
            if isinstance(arguments, str) and arguments and not _streamed(state, key):
                if source is item and key not in state.tool_call_keys():
                    # Neither added nor streamed before: the whole call at once.
                    return [self._call_start(source, state)]
                return [self._call_arguments(key, arguments, state)]
            return []
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self._end(kind, data, state)
        # response.created, .in_progress, .content_part.*, .output_text.done, …: nothing new.
        return []

    def _reasoning(self, data: Mapping[str, Any], state: StreamState) -> list[Event]:
        delta = data.get("delta")
        if not isinstance(delta, str) or not delta:
            return []
        # Summary parts (and reasoning items) are separate paragraphs: a blank line between
        # them, as ChatGPT shows them, instead of running them together.
        part = (data.get("item_id"), data.get("summary_index", data.get("content_index")))
        previous = state.extra.get("reasoning_part")
        state.extra["reasoning_part"] = part
        if previous is not None and previous != part:
            delta = "\n\n" + delta
        return [ReasoningDelta(delta)]

    def _call_start(self, item: Mapping[str, Any], state: StreamState) -> ToolCallDelta:
        key = item.get("id") or item.get("call_id")
        index, _first = state.tool_call_index(key)
        call_id = item.get("call_id")
        name = item.get("name")
        arguments = item.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        if arguments:
            state.extra.setdefault("streamed", set()).add(key)
        return ToolCallDelta(
            index=index,
            arguments=arguments,
            id=call_id if isinstance(call_id, str) else None,
            name=name if isinstance(name, str) else None,
        )

    def _call_arguments(self, key: Any, arguments: str, state: StreamState) -> ToolCallDelta:
        index, _first = state.tool_call_index(key)
        state.extra.setdefault("streamed", set()).add(key)
        return ToolCallDelta(index=index, arguments=arguments)

    def _end(self, kind: str, data: Mapping[str, Any], state: StreamState) -> None:
        body = data.get("response")
        body = body if isinstance(body, Mapping) else {}
        usage = body.get("usage")
        if isinstance(usage, Mapping):
            state.add_usage(_usage(usage))
        if kind == "response.failed":
            raise self._error(body)
        status = body.get("status")
        status = status if isinstance(status, str) and status else kind.split(".")[-1]
        if status == "incomplete":
            details = body.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, Mapping) else None
            reason = reason if isinstance(reason, str) and reason else None
            state.finish_raw = f"incomplete:{reason}" if reason else "incomplete"
            state.finish_reason = INCOMPLETE_REASON_MAP.get(reason or "", "length")
        else:
            state.finish_raw = status
            if state.extra.get("refused"):
                state.finish_reason = "content_filter"
            elif state.tool_call_keys():
                # Responses has no "tool_calls" status: a completed response whose output
                # holds function calls ended to let the caller run them.
                state.finish_reason = "tool_calls"
            else:
                state.finish_reason = "stop"
        state.done = True

    def _error(self, data: Mapping[str, Any]) -> UpstreamStreamError:
        """The error of an ``error`` event (nested or flat) or a failed response."""
        error = data.get("error")
        source = error if isinstance(error, Mapping) else data
        message = source.get("message")
        if not isinstance(message, str) or not message:
            message = json.dumps(dict(data))[:300]
        markers = f"{source.get('type') or ''} {source.get('code') or ''}".lower()
        permanent = any(marker in markers for marker in _PERMANENT_ERROR_MARKERS)
        code = source.get("code")
        detail = " ".join(message.split())
        if isinstance(code, str) and code and code.lower() not in detail.lower():
            detail = f"{detail} ({code})"
        return self.stream_error(detail, retryable=not permanent)


def _streamed(state: StreamState, key: Any) -> bool:
    streamed = state.extra.get("streamed")
    return isinstance(streamed, set) and key in streamed


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _usage(raw: Mapping[str, Any]) -> Usage:
    # Already our convention (cached inside input, reasoning inside output): no conversion.
    input_details = raw.get("input_tokens_details")
    output_details = raw.get("output_tokens_details")
    return Usage(
        input_tokens=_int(raw.get("input_tokens")),
        output_tokens=_int(raw.get("output_tokens")),
        cached_input_tokens=(
            _int(input_details.get("cached_tokens")) if isinstance(input_details, Mapping) else None
        ),
        reasoning_tokens=(
            _int(output_details.get("reasoning_tokens"))
            if isinstance(output_details, Mapping)
            else None
        ),
    )

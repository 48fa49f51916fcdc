"""Anthropic's Messages API (``POST {BASE_URL}/v1/messages``, streamed).

``BASE_URL`` is the host without ``/v1``, as in the Anthropic SDKs (default
``https://api.anthropic.com``). The key goes in ``x-api-key``, with the ``anthropic-version``
header. The API wants the system prompt as the top-level ``system`` field, strictly
alternating ``user``/``assistant`` messages, and always a ``max_tokens``.

``OPTIONS``: ``DEFAULT_MAX_TOKENS`` (default ``4096``) is sent when the request sets no
``max_tokens``; ``ANTHROPIC_VERSION`` (default ``"2023-06-01"``); ``THINKING_BUDGET`` (default
``None``) turns on extended thinking with that many ``budget_tokens``.

Wire format (https://docs.anthropic.com/en/docs/build-with-claude/streaming): named SSE
events ``message_start`` (usage so far), ``content_block_start`` / ``content_block_delta``
(``text_delta``, ``thinking_delta``, ``signature_delta``, ``input_json_delta``) /
``content_block_stop`` per content block, ``message_delta`` (``stop_reason`` and cumulative
usage), ``message_stop``; ``ping`` at any time; ``error`` (e.g. ``overloaded_error``) in place
of the rest. Unknown event types are skipped, as the docs ask.

Usage: Anthropic's ``input_tokens`` *excludes* the tokens read from and written to the prompt
cache (``cache_read_input_tokens``, ``cache_creation_input_tokens``); ours includes them, so
they are added. ``output_tokens`` already includes thinking tokens.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar, TypeGuard

import httpx
from django.core import checks

from django_llmstream.events import Event, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from django_llmstream.exceptions import ProviderError, UpstreamOverloaded
from django_llmstream.providers.base import (
    ChatMessage,
    ChatRequest,
    answered_tool_call_ids,
    tool_call_fields,
)
from django_llmstream.providers.http import HTTPProvider, StreamState

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "FINISH_REASON_MAP",
    "MIN_THINKING_BUDGET",
    "AnthropicProvider",
]

logger = logging.getLogger("django_llmstream.providers")

ANTHROPIC_VERSION = "2023-06-01"
#: ``max_tokens`` when the request sets none (the API requires one).
DEFAULT_MAX_TOKENS = 4096
#: The smallest ``budget_tokens`` the API accepts for extended thinking.
MIN_THINKING_BUDGET = 1024

#: Anthropic's ``stop_reason`` -> ours; anything else becomes ``stop`` (the raw value is kept).
FINISH_REASON_MAP: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    # A server tool (web search …) paused a long turn; the answer so far is complete.
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Request keys params must not replace; max_tokens is handled on its own.
_RESERVED = frozenset({"model", "messages", "system", "stream", "max_tokens"})
# Our param names that the Messages API spells differently.
_RENAMED = {"stop": "stop_sequences"}
# Params of Chat Completions that the Messages API lacks: dropped (logged at DEBUG).
_UNSUPPORTED = frozenset({"presence_penalty", "frequency_penalty", "seed"})
# With extended thinking the API refuses sampling changes ("temperature may only be set to 1
# when thinking is enabled"; top_k likewise; top_p only >= 0.95): not sent then.
_NOT_WITH_THINKING = frozenset({"temperature", "top_p", "top_k"})
# Mid-stream error types that another try may fix (https://docs.anthropic.com/en/api/errors).
_RETRYABLE_ERROR_TYPES = frozenset(
    {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}
)


class AnthropicProvider(HTTPProvider):
    """Anthropic Messages (``POST {BASE_URL}/v1/messages``, streamed); see the module."""

    default_base_url: ClassVar[str | None] = "https://api.anthropic.com"
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"ANTHROPIC_VERSION", "DEFAULT_MAX_TOKENS", "THINKING_BUDGET"}
    )

    # -- configuration -----------------------------------------------------------------

    @property
    def is_anthropic_api(self) -> bool:
        """Whether ``BASE_URL`` is Anthropic's own API (which needs a key)."""
        try:
            host = httpx.URL(self.base_url or "").host
        except (httpx.InvalidURL, TypeError, ValueError):
            return False
        return host.lower() == "api.anthropic.com"

    @property
    def anthropic_version(self) -> str:
        return str(self.options.get("ANTHROPIC_VERSION") or ANTHROPIC_VERSION)

    @property
    def default_max_tokens(self) -> int:
        value = self.options.get("DEFAULT_MAX_TOKENS")
        return value if _is_count(value) else DEFAULT_MAX_TOKENS

    @property
    def thinking_budget(self) -> int | None:
        value = self.options.get("THINKING_BUDGET")
        return value if _is_count(value) else None

    def check(self) -> list[checks.CheckMessage]:
        errors = super().check()
        where = f'LLMSTREAM["PROVIDERS"]["{self.alias}"]'
        has_key_header = any(
            k.lower() in {"x-api-key", "authorization"} for k in self.extra_headers
        )
        if self.is_anthropic_api and not self._api_key and not has_key_header:
            errors.append(
                checks.Error(
                    f"{where} uses api.anthropic.com but has no API_KEY.",
                    hint=f'Set {where}["API_KEY"] (e.g. from ANTHROPIC_API_KEY).',
                    id="llmstream.E006",
                )
            )
        if self.base_url and _path_ends_with(self.base_url, "/v1"):
            errors.append(
                checks.Error(
                    f'{where}["BASE_URL"] ends with /v1, which the backend adds itself.',
                    hint="Use the host alone, as in the Anthropic SDKs: https://api.anthropic.com.",
                    id="llmstream.E011",
                )
            )
        version = self.options.get("ANTHROPIC_VERSION")
        if version is not None and not (isinstance(version, str) and version.strip()):
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"]["ANTHROPIC_VERSION"] = {version!r} is not a version.',
                    hint=f'Leave it out for "{ANTHROPIC_VERSION}".',
                    id="llmstream.E011",
                )
            )
        max_tokens = self.options.get("DEFAULT_MAX_TOKENS")
        if max_tokens is not None and not _is_count(max_tokens):
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"]["DEFAULT_MAX_TOKENS"] = {max_tokens!r} is not a '
                    "whole number >= 1.",
                    hint=f"Leave it out for {DEFAULT_MAX_TOKENS}.",
                    id="llmstream.E011",
                )
            )
        budget = self.options.get("THINKING_BUDGET")
        if budget is not None and not (_is_count(budget) and budget >= MIN_THINKING_BUDGET):
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"]["THINKING_BUDGET"] = {budget!r} is not a whole number '
                    f">= {MIN_THINKING_BUDGET}.",
                    hint="Anthropic's smallest thinking budget is 1024 tokens; None turns "
                    "thinking off.",
                    id="llmstream.E011",
                )
            )
        elif budget is not None and budget >= self.default_max_tokens:
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"]["THINKING_BUDGET"] ({budget}) must be below '
                    f"DEFAULT_MAX_TOKENS ({self.default_max_tokens}).",
                    hint="max_tokens covers the thinking and the answer: raise "
                    "DEFAULT_MAX_TOKENS or lower THINKING_BUDGET.",
                    id="llmstream.E011",
                )
            )
        return errors

    # -- the request -------------------------------------------------------------------

    def endpoint(self, request: ChatRequest) -> str:
        return "v1/messages"

    def headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self.anthropic_version}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def build_body(self, request: ChatRequest) -> Mapping[str, Any]:
        system, messages = self.format_messages(request.messages)
        requested = request.params.get("max_tokens")
        max_tokens = requested if _is_count(requested) else self.default_max_tokens
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": max_tokens,
            "messages": messages,
            "stream": True,
        }
        if system:
            body["system"] = system
        thinking = False
        budget = self.thinking_budget
        if budget is not None:
            # budget_tokens must stay below max_tokens (which covers thinking and answer).
            budget = min(budget, max_tokens - 1)
            if budget >= MIN_THINKING_BUDGET:
                body["thinking"] = {"type": "enabled", "budget_tokens": budget}
                thinking = True
            else:
                logger.debug(
                    "%s: max_tokens=%d leaves no room for a thinking budget; thinking is off "
                    "for this request.",
                    self.alias,
                    max_tokens,
                )
        for name, value in request.params.items():
            if name in _RESERVED:
                continue
            if name in _UNSUPPORTED or (thinking and name in _NOT_WITH_THINKING):
                logger.debug("%s: the Messages API takes no %r; not sent.", self.alias, name)
                continue
            body[_RENAMED.get(name, name)] = value
        return body

    def format_messages(
        self, messages: Sequence[ChatMessage]
    ) -> tuple[str | None, list[dict[str, Any]]]:
        """The top-level ``system`` text and the ``messages`` list in the Messages API's shape.

        System messages are joined into ``system``; ``tool`` results become ``tool_result``
        blocks of a user message; consecutive messages of one role are merged (the API wants
        strictly alternating turns); tool calls that no result answers are left out (the
        API refuses a ``tool_use`` without its ``tool_result``), and so are empty texts
        (it refuses empty text blocks).
        """
        answered = answered_tool_call_ids(messages)
        system: list[str] = []
        turns: list[dict[str, Any]] = []
        for message in messages:
            if message.role == "system":
                if message.content:
                    system.append(message.content)
                continue
            role = "assistant" if message.role == "assistant" else "user"
            blocks: list[dict[str, Any]] = []
            if message.role == "tool" and message.tool_call_id:
                blocks.append(
                    {
                        "type": "tool_result",
                        "tool_use_id": message.tool_call_id,
                        "content": message.content,
                    }
                )
            elif message.content:
                blocks.append({"type": "text", "text": message.content})
            if message.role == "assistant":
                for call in message.tool_calls:
                    call_id, name, arguments = tool_call_fields(call)
                    if call_id and name and call_id in answered:
                        blocks.append(
                            {
                                "type": "tool_use",
                                "id": call_id,
                                "name": name,
                                "input": _json_object(arguments),
                            }
                        )
            if not blocks:
                continue
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"].extend(blocks)
            else:
                turns.append({"role": role, "content": blocks})
        for turn in turns:
            content = turn["content"]
            if len(content) == 1 and content[0]["type"] == "text":
                turn["content"] = content[0]["text"]  # the plain form, as the docs show it
        return ("\n\n".join(system) or None), turns

    def map_error_body(self, status: int, body: bytes) -> str:
        # {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}:
        # the base finds error.message; the type is worth showing too.
        message = super().map_error_body(status, body)
        with contextlib.suppress(
            LookupError, ValueError, AttributeError, TypeError, RecursionError
        ):  # a body of another shape (a proxy's), or no JSON: the message is all there is
            kind = json.loads(body)["error"]["type"]
            if isinstance(kind, str) and kind and kind not in message:
                return f"{message} ({kind})" if message else kind
        return message

    # -- the stream --------------------------------------------------------------------

    async def parse_stream(
        self, response: httpx.Response, state: StreamState
    ) -> AsyncIterator[Event]:
        # The usage object as last seen: message_start's, overlaid by each message_delta's.
        raw_usage: dict[str, Any] = {}
        # Content block index -> its type: only tool_use blocks are tool calls (a text block
        # 0 then a tool_use block 1 is call 0), and server tool blocks are not ours.
        blocks: dict[int, str] = {}
        async with contextlib.aclosing(self.iter_sse(state)) as events:
            async for sse in events:
                if not sse.data.strip():
                    continue
                data = self.decode_json(sse.data)
                if not isinstance(data, dict):
                    raise self.protocol_error(f"an event that is not a JSON object: {sse.data!r}")
                kind = data.get("type") or sse.event
                if kind == "error" or sse.event == "error":
                    raise self._stream_error(data)
                if kind == "message_start":
                    message = data.get("message")
                    usage = message.get("usage") if isinstance(message, Mapping) else None
                    if isinstance(usage, Mapping):
                        raw_usage.update(usage)
                elif kind == "content_block_start":
                    for event in self._block_start(data, blocks, state):
                        yield event
                elif kind == "content_block_delta":
                    piece = self._block_delta(data, blocks, state)
                    if piece is not None:
                        yield piece
                elif kind == "message_delta":
                    delta = data.get("delta")
                    reason = delta.get("stop_reason") if isinstance(delta, Mapping) else None
                    if isinstance(reason, str) and reason:
                        state.finish_raw = reason
                        state.finish_reason = FINISH_REASON_MAP.get(reason, "stop")
                    usage = data.get("usage")
                    if isinstance(usage, Mapping):
                        raw_usage.update(usage)
                elif kind == "message_stop":
                    state.done = True
                    break
                # ping, content_block_stop and event types added later: nothing to do.
        if state.done or state.finish_raw is not None:
            if raw_usage:
                state.add_usage(_usage(raw_usage))
            for event in state.final_events():
                yield event

    def _block_start(
        self, data: Mapping[str, Any], blocks: dict[int, str], state: StreamState
    ) -> list[Event]:
        index = data["index"]
        block = data["content_block"]
        if not isinstance(index, int) or not isinstance(block, Mapping):
            raise self.protocol_error(f"a content block without index or body: {data!r}")
        kind = str(block.get("type"))
        blocks[index] = kind
        if kind == "text":
            text = block.get("text")
            return [TextDelta(text)] if isinstance(text, str) and text else []
        if kind == "thinking":
            thinking = block.get("thinking")
            return [ReasoningDelta(thinking)] if isinstance(thinking, str) and thinking else []
        if kind == "tool_use":
            call_index, _first = state.tool_call_index(index)
            call_id = block.get("id")
            name = block.get("name")
            given = block.get("input")
            # The API streams the input as input_json_delta pieces after an empty object; a
            # compatible server may send it whole here instead.
            arguments = (
                json.dumps(given, separators=(",", ":"), ensure_ascii=False)
                if isinstance(given, Mapping) and given
                else ""
            )
            return [
                ToolCallDelta(
                    index=call_index,
                    arguments=arguments,
                    id=call_id if isinstance(call_id, str) else None,
                    name=name if isinstance(name, str) else None,
                )
            ]
        # redacted_thinking, server_tool_use, web_search_tool_result …: not shown.
        return []

    def _block_delta(
        self, data: Mapping[str, Any], blocks: dict[int, str], state: StreamState
    ) -> Event | None:
        index = data.get("index")
        delta = data["delta"]
        if not isinstance(delta, Mapping):
            raise self.protocol_error(f"a content block delta without a body: {data!r}")
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            return TextDelta(text) if isinstance(text, str) and text else None
        if kind == "thinking_delta":
            thinking = delta.get("thinking")
            return ReasoningDelta(thinking) if isinstance(thinking, str) and thinking else None
        if (
            kind == "input_json_delta"
            and isinstance(index, int)
            and blocks.get(index) == "tool_use"
        ):
            partial = delta.get("partial_json")
            if isinstance(partial, str) and partial:
                call_index, _first = state.tool_call_index(index)
                return ToolCallDelta(index=call_index, arguments=partial)
        # signature_delta (kept by Anthropic for multi-turn thinking), citations_delta …
        return None

    def _stream_error(self, data: Mapping[str, Any]) -> ProviderError:
        error = data.get("error")
        error = error if isinstance(error, Mapping) else data
        kind = error.get("type")
        kind = kind if isinstance(kind, str) and kind != "error" else ""
        message = error.get("message")
        if not isinstance(message, str) or not message:
            message = kind or json.dumps(data)[:300]
        message = " ".join(message.split())
        if kind == "overloaded_error":
            # The mid-stream form of HTTP 529 (Anthropic's "overloaded" status): the same
            # retryable error, retried like the status when no event was yielded yet.
            return UpstreamOverloaded(
                self._message(f"Upstream {self.alias} reported an error: {message} ({kind})"),
                status_code=529,
            )
        detail = f"{message} ({kind})" if kind and kind not in message else message
        return self.stream_error(detail, retryable=kind in _RETRYABLE_ERROR_TYPES or not kind)


def _is_count(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _path_ends_with(url: str, suffix: str) -> bool:
    try:
        return httpx.URL(url).path.rstrip("/").endswith(suffix)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False


def _json_object(arguments: str) -> dict[str, Any]:
    """A tool call's arguments text as the object ``tool_use.input`` must be."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _usage(raw: Mapping[str, Any]) -> Usage:
    """Anthropic's usage in our convention: ``input_tokens`` + cache reads + cache writes is
    our ``input_tokens`` (Anthropic counts only the uncached rest in ``input_tokens``);
    ``cache_read_input_tokens`` is our ``cached_input_tokens``; ``output_tokens`` (thinking
    included) is ours as is. Anthropic reports no separate thinking count."""
    uncached = _int(raw.get("input_tokens"))
    read = _int(raw.get("cache_read_input_tokens"))
    written = _int(raw.get("cache_creation_input_tokens"))
    details = raw.get("output_tokens_details")
    reasoning = _int(details.get("thinking_tokens")) if isinstance(details, Mapping) else None
    return Usage(
        input_tokens=None if uncached is None else uncached + (read or 0) + (written or 0),
        output_tokens=_int(raw.get("output_tokens")),
        cached_input_tokens=read,
        reasoning_tokens=reasoning,
    )

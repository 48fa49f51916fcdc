"""The Vercel AI SDK's UI message stream protocol, for ``?format=ai-sdk``.

A React (or Vue, Svelte) app with the AI SDK's ``useChat`` and ``DefaultChatTransport``
pointed at ``POST stream/?format=ai-sdk`` works unchanged (docs/frontends.rst). This module
translates, in both directions, without I/O:

- :class:`UIMessageStreamEncoder` turns a turn's events into the SSE parts the AI SDK's client
  reads (its ``uiMessageChunkSchema``), ending with ``data: [DONE]``;
- :func:`turn_body` turns the request body ``useChat`` sends
  (``{id, messages: [{id, role, parts}], trigger, messageId}``) into ours.

Checked against the ``ai`` npm package, versions 5.0.0 and 5.0.x (``src/ui-message-stream/
ui-message-chunks.ts``, ``json-to-sse-transform-stream.ts``, ``ui-message-stream-headers.ts``,
``src/ui/http-chat-transport.ts``). The first v5 releases validate every part with a *strict*
schema, so only the fields they know are sent: our finish reason, usage and cost travel in
``messageMetadata``, never as ``finish.finishReason`` (a later 5.0.x addition).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from django_llmstream.brokers import TurnEvent
from django_llmstream.exceptions import RequestValidationError
from django_llmstream.sse import encode

__all__ = [
    "AI_SDK_CHAT_KEY",
    "HEADER_NAME",
    "HEADER_VALUE",
    "UIMessageStreamEncoder",
    "turn_body",
]

#: The response header the AI SDK's own server helpers send (``UI_MESSAGE_STREAM_HEADERS``).
HEADER_NAME = "x-vercel-ai-ui-message-stream"
HEADER_VALUE = "v1"

#: The key of ``Conversation.metadata`` that remembers the chat id of ``useChat`` (a chat id
#: that is not one of our conversation ids).
AI_SDK_CHAT_KEY = "ai_sdk_chat_id"

#: What the AI SDK's JsonToSseTransformStream writes when its stream ends.
DONE = b"data: [DONE]\n\n"

# The request fields of DefaultChatTransport itself; everything else of the body (the
# ``body`` option of useChat) is ours: provider, model, system, params.
_TRANSPORT_FIELDS = frozenset({"id", "messages", "trigger", "messageId"})
_TRIGGERS = frozenset({"submit-message", "regenerate-message"})


def _part(payload: Mapping[str, Any]) -> bytes:
    return encode(payload)


class UIMessageStreamEncoder:
    """Turn events into UI message stream parts; one encoder per response (it keeps state:
    the open text or reasoning block, the tool calls).

    ============================  ========================================================
    our event                     parts
    ============================  ========================================================
    ``start``                     ``start`` (``messageId``: the turn id; ``messageMetadata``:
                                  ``{conversation, turn, provider, model}``), ``start-step``
    ``delta``                     ``text-start`` (when no text block is open), ``text-delta``
    ``reasoning``                 ``reasoning-start`` (when none is open), ``reasoning-delta``
    ``tool_call`` (first piece)   ``tool-input-start``, then ``tool-input-delta``
    ``tool_call`` (next pieces)   ``tool-input-delta``
    ``done``                      ``text-end``/``reasoning-end`` of the open block,
                                  ``tool-input-available`` per call (``input``: the parsed
                                  arguments, or their text when they are not JSON),
                                  ``finish-step``, ``finish`` (``messageMetadata``: the
                                  ``done`` data), ``[DONE]``
    ``done`` (cancelled)          the open block's end, ``message-metadata``, ``abort``,
                                  ``[DONE]`` (as the AI SDK's own server does on abort)
    ``error``                     the open block's end, ``error`` (``errorText``: the
                                  message), ``[DONE]``
    ============================  ========================================================

    A text or reasoning block ends where the other kind, or a tool call, begins; the next
    block of the same kind gets a new id (``text-1``, ``text-2`` …).
    """

    def __init__(self) -> None:
        self._open: tuple[str, str] | None = None  # ("text" | "reasoning", block id)
        self._blocks = 0
        self._calls: dict[int, dict[str, str]] = {}

    def __call__(self, events: Iterable[TurnEvent]) -> bytes:
        return b"".join(self.encode(event) for event in events)

    def encode(self, event: TurnEvent) -> bytes:
        return b"".join(_part(p) for p in self.parts(event)) + (DONE if event.terminal else b"")

    def parts(self, event: TurnEvent) -> list[dict[str, Any]]:
        data = event.data
        name = event.event
        if name == "start":
            metadata = {k: data.get(k) for k in ("conversation", "turn", "provider", "model")}
            return [
                {"type": "start", "messageId": str(data.get("turn")), "messageMetadata": metadata},
                {"type": "start-step"},
            ]
        if name in {"delta", "reasoning"}:
            kind = "text" if name == "delta" else "reasoning"
            parts = self._begin(kind)
            assert self._open is not None
            parts.append({"type": f"{kind}-delta", "id": self._open[1], "delta": data["text"]})
            return parts
        if name == "tool_call":
            return self._tool_call(data)
        parts = self._close()
        if name == "error":
            parts.append({"type": "error", "errorText": str(data.get("message") or "")})
            return parts
        if name == "done":
            if data.get("finish_reason") == "cancelled":
                parts.append({"type": "message-metadata", "messageMetadata": dict(data)})
                parts.append({"type": "abort"})
                return parts
            for index in sorted(self._calls):
                call = self._calls[index]
                parts.append(
                    {
                        "type": "tool-input-available",
                        "toolCallId": call["id"],
                        "toolName": call["name"],
                        "input": _tool_input(call["arguments"]),
                    }
                )
            parts.append({"type": "finish-step"})
            parts.append({"type": "finish", "messageMetadata": dict(data)})
            return parts
        return parts  # an event this format does not know: nothing to send

    def _begin(self, kind: str) -> list[dict[str, Any]]:
        if self._open is not None and self._open[0] == kind:
            return []
        parts = self._close()
        self._blocks += 1
        self._open = (kind, f"{kind}-{self._blocks}")
        parts.append({"type": f"{kind}-start", "id": self._open[1]})
        return parts

    def _close(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        kind, block = self._open
        self._open = None
        return [{"type": f"{kind}-end", "id": block}]

    def _tool_call(self, data: Mapping[str, Any]) -> list[dict[str, Any]]:
        index = int(data.get("index") or 0)
        parts: list[dict[str, Any]] = []
        call = self._calls.get(index)
        if call is None:
            parts = self._close()
            call = self._calls[index] = {
                # A provider that names no id still gets a stable one: the AI SDK needs it.
                "id": str(data.get("id") or f"call-{index}"),
                "name": str(data.get("name") or "unknown"),
                "arguments": "",
            }
            parts.append(
                {"type": "tool-input-start", "toolCallId": call["id"], "toolName": call["name"]}
            )
        piece = str(data.get("arguments") or "")
        call["arguments"] += piece
        if piece:
            parts.append(
                {"type": "tool-input-delta", "toolCallId": call["id"], "inputTextDelta": piece}
            )
        return parts


def _tool_input(arguments: str) -> Any:
    if not arguments.strip():
        return {}
    try:
        return json.loads(arguments)
    except (ValueError, RecursionError):
        return arguments


def turn_body(data: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """``(chat id, our request body)`` from the body ``DefaultChatTransport`` posts.

    The prompt is the text of the last ``user`` message: its ``text`` parts joined (an
    AI SDK 4 message's ``content`` string too). The other messages are not read: the
    conversation's history is the one in the database. The fields of the transport's
    ``body`` option (``provider``, ``model``, ``system``, ``params``) are ours and validated as
    for ``turns/``; an unknown one is refused with 400 naming it.
    """
    chat_id = data.get("id")
    if chat_id is not None and (not isinstance(chat_id, str) or not chat_id or len(chat_id) > 200):
        raise RequestValidationError("id must be the chat's id (a short string).", field="id")
    trigger = data.get("trigger")
    if trigger is not None and (not isinstance(trigger, str) or trigger not in _TRIGGERS):
        raise RequestValidationError(
            f"trigger must be one of {', '.join(sorted(_TRIGGERS))}.", field="trigger"
        )
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise RequestValidationError("messages must be a list of UI messages.", field="messages")
    prompt: str | None = None
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            prompt = _message_text(message)
            break
    if prompt is None:
        raise RequestValidationError("messages has no user message.", field="messages")
    body = {k: v for k, v in data.items() if k not in _TRANSPORT_FIELDS}
    body["prompt"] = prompt
    return chat_id, body


def _message_text(message: Mapping[str, Any]) -> str:
    parts = message.get("parts")
    if isinstance(parts, list):
        return "".join(
            str(part.get("text", ""))
            for part in parts
            if isinstance(part, Mapping) and part.get("type") == "text"
        )
    content = message.get("content")
    if isinstance(content, str):
        return content
    raise RequestValidationError("A message needs parts (or content).", field="messages")

"""Ollama's native chat API (``POST {BASE_URL}/api/chat``, streamed as NDJSON).

``BASE_URL`` is the host without ``/api`` (default ``http://127.0.0.1:11434``). No key is
needed; one that is set goes out as ``Authorization: Bearer …`` (Ollama's cloud, or a proxy
in front of a local server).

``OPTIONS``: ``THINK`` (``True``/``False``, or ``"low"``/``"medium"``/``"high"`` for models
that take a level) is sent as ``think``, which makes thinking models stream their thinking
apart from the answer; ``KEEP_ALIVE`` (e.g. ``"30m"``, or seconds) how long the model stays
loaded after the request; ``MODEL_OPTIONS`` a dict of Ollama model options sent with every
request, e.g. ``{"num_ctx": 8192}`` (Ollama's default context is small and it silently cuts
longer prompts).

Wire format (https://github.com/ollama/ollama/blob/main/docs/api.md, "Generate a chat
completion"): one JSON object per line with ``message.content``, ``message.thinking`` and
``message.tool_calls`` (complete calls whose ``arguments`` is an object); the last has
``"done": true``, ``done_reason`` and the counters ``prompt_eval_count``, ``eval_count`` and
durations in nanoseconds. A failure while streaming is a line ``{"error": "..."}`` (the status
stays 200). Lines of ``/api/generate`` (``response``, ``thinking`` at the top level) are read
too.

Usage: ``prompt_eval_count`` is our ``input_tokens`` and ``eval_count`` (thinking included) our
``output_tokens``; Ollama reports neither cached nor thinking counts (``null``). When it reuses
its prompt cache, ``prompt_eval_count`` may count only the newly evaluated part of the prompt,
or be absent: it is reported as Ollama gives it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import httpx
from django.core import checks

from django_llmstream.events import Event, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from django_llmstream.providers.base import ChatMessage, ChatRequest, tool_call_fields
from django_llmstream.providers.http import HTTPProvider, StreamState

__all__ = ["FINISH_REASON_MAP", "OllamaProvider"]

logger = logging.getLogger("django_llmstream.providers")

#: Ollama's ``done_reason`` -> ours; anything else becomes ``stop`` (the raw value is kept).
#: Ollama says ``stop`` after tool calls too: a turn that made calls ends with ``tool_calls``.
FINISH_REASON_MAP: dict[str, str] = {
    "stop": "stop",
    "length": "length",
    "load": "stop",
    "unload": "stop",
}

# Request keys params must not replace.
_RESERVED = frozenset({"model", "messages", "stream", "options"})
# Params that are top-level request fields; every other param is a model option.
_TOP_LEVEL = frozenset({"think", "format", "keep_alive", "tools"})
# Our param names that Ollama's model options spell differently.
_RENAMED = {"max_tokens": "num_predict"}

_THINK_LEVELS = frozenset({"low", "medium", "high"})


class OllamaProvider(HTTPProvider):
    """Ollama's ``/api/chat`` (NDJSON); see the module docstring."""

    default_base_url: ClassVar[str | None] = "http://127.0.0.1:11434"
    accept: ClassVar[str] = "application/x-ndjson"
    option_names: ClassVar[frozenset[str]] = frozenset({"THINK", "KEEP_ALIVE", "MODEL_OPTIONS"})

    # -- configuration -----------------------------------------------------------------

    def check(self) -> list[checks.CheckMessage]:
        errors = super().check()
        where = f'LLMSTREAM["PROVIDERS"]["{self.alias}"]'
        if self.base_url and _path_ends_with(self.base_url, "/api"):
            errors.append(
                checks.Error(
                    f'{where}["BASE_URL"] ends with /api, which the backend adds itself.',
                    hint="Use the host alone, e.g. http://127.0.0.1:11434.",
                    id="llmstream.E011",
                )
            )
        think = self.options.get("THINK")
        if think is not None and not (isinstance(think, bool) or think in _THINK_LEVELS):
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"]["THINK"] = {think!r} is not valid.',
                    hint='Use True, False, "low", "medium" or "high".',
                    id="llmstream.E011",
                )
            )
        keep_alive = self.options.get("KEEP_ALIVE")
        if keep_alive is not None and not (
            isinstance(keep_alive, str | int | float) and not isinstance(keep_alive, bool)
        ):
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"]["KEEP_ALIVE"] = {keep_alive!r} is not a duration.',
                    hint='Use a duration such as "30m", or seconds (-1: keep loaded).',
                    id="llmstream.E011",
                )
            )
        model_options = self.options.get("MODEL_OPTIONS")
        if model_options is not None and not (
            isinstance(model_options, Mapping) and all(isinstance(k, str) for k in model_options)
        ):
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"]["MODEL_OPTIONS"] must be a dict of Ollama options.',
                    hint='For example {"num_ctx": 8192}.',
                    id="llmstream.E011",
                )
            )
        return errors

    # -- the request -------------------------------------------------------------------

    def endpoint(self, request: ChatRequest) -> str:
        return "api/chat"

    def build_body(self, request: ChatRequest) -> Mapping[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [self.format_message(message) for message in request.messages],
            "stream": True,
        }
        model_options = self.options.get("MODEL_OPTIONS")
        options: dict[str, Any] = dict(model_options) if isinstance(model_options, Mapping) else {}
        think = self.options.get("THINK")
        if think is not None:
            body["think"] = think
        keep_alive = self.options.get("KEEP_ALIVE")
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        # Ollama's model options take every param of ALLOWED_PARAMS' default (num_predict,
        # temperature, top_p, seed, presence_penalty, frequency_penalty) and more (stop,
        # top_k, min_p, repeat_penalty …): nothing is dropped.
        for name, value in request.params.items():
            if name in _RESERVED:
                continue
            if name in _TOP_LEVEL:
                body[name] = value
            else:
                options[_RENAMED.get(name, name)] = value
        if options:
            body["options"] = options
        return body

    def format_message(self, message: ChatMessage) -> dict[str, Any]:
        """One message in ``/api/chat``'s shape (tool call arguments as objects)."""
        formatted: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            calls = []
            for call in message.tool_calls:
                call_id, name, arguments = tool_call_fields(call)
                function: dict[str, Any] = {"name": name, "arguments": _json_object(arguments)}
                calls.append(
                    {"id": call_id, "function": function} if call_id else {"function": function}
                )
            formatted["tool_calls"] = calls
        if message.tool_call_id:
            formatted["tool_call_id"] = message.tool_call_id
        return formatted

    # -- the stream --------------------------------------------------------------------

    async def parse_stream(
        self, response: httpx.Response, state: StreamState
    ) -> AsyncIterator[Event]:
        last: Mapping[str, Any] = {}
        async with contextlib.aclosing(self.iter_lines(state)) as lines:
            async for line in lines:
                chunk = self.decode_json(line)
                if not isinstance(chunk, dict):
                    raise self.protocol_error(f"a line that is not a JSON object: {line[:200]!r}")
                error = chunk.get("error")
                if error:
                    message = error if isinstance(error, str) else json.dumps(error)
                    raise self.stream_error(" ".join(message.split()))
                for event in self.parse_chunk(chunk, state):
                    yield event
                if chunk.get("done") is True:
                    last = chunk
                    state.done = True
                    break
        if state.done:
            self._finish(last, state)
            for event in state.final_events():
                yield event

    def parse_chunk(self, chunk: Mapping[str, Any], state: StreamState) -> list[Event]:
        """The events of one line (``/api/chat``, or ``/api/generate``'s top-level fields)."""
        events: list[Event] = []
        message = chunk.get("message")
        source: Mapping[str, Any] = message if isinstance(message, Mapping) else {}
        thinking = source.get("thinking", chunk.get("thinking"))
        if isinstance(thinking, str) and thinking:
            events.append(ReasoningDelta(thinking))
        content = source.get("content", chunk.get("response"))
        if isinstance(content, str) and content:
            events.append(TextDelta(content))
        tool_calls = source.get("tool_calls")
        if isinstance(tool_calls, list):
            for call in tool_calls:
                if isinstance(call, Mapping):
                    events.append(self._tool_call(call, state))
        return events

    def _tool_call(self, call: Mapping[str, Any], state: StreamState) -> ToolCallDelta:
        # Ollama sends each call whole, once: every element is a new call of the turn.
        index, _first = state.tool_call_index(len(state.tool_call_keys()))
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping | list):
            # The sidecars' (and Ollama's own Go json.Marshal) compact form.
            arguments = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
        call_id = call.get("id")
        name = function.get("name")
        return ToolCallDelta(
            index=index,
            arguments=arguments if isinstance(arguments, str) else "",
            id=call_id if isinstance(call_id, str) and call_id else None,
            name=name if isinstance(name, str) else None,
        )

    def _finish(self, last: Mapping[str, Any], state: StreamState) -> None:
        reason = last.get("done_reason")
        if isinstance(reason, str) and reason:
            state.finish_raw = reason
            state.finish_reason = FINISH_REASON_MAP.get(reason, "stop")
        if state.tool_call_keys() and state.finish_reason in (None, "stop"):
            state.finish_reason = "tool_calls"
        prompt = _int(last.get("prompt_eval_count"))
        generated = _int(last.get("eval_count"))
        if prompt is not None or generated is not None:
            state.add_usage(Usage(input_tokens=prompt, output_tokens=generated))
        durations = {
            name: _int(last.get(f"{name}_duration"))
            for name in ("total", "load", "prompt_eval", "eval")
        }
        if any(value is not None for value in durations.values()):
            eval_ns = durations["eval"]
            rate = (
                f", {generated / (eval_ns / 1e9):.1f} tokens/s"
                if generated is not None and eval_ns
                else ""
            )
            logger.debug(
                "%s: %s%s",
                self.alias,
                ", ".join(
                    f"{name} {value / 1e6:.1f} ms"
                    for name, value in durations.items()
                    if value is not None
                ),
                rate,
            )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _path_ends_with(url: str, suffix: str) -> bool:
    try:
        return httpx.URL(url).path.rstrip("/").endswith(suffix)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False


def _json_object(arguments: str) -> Any:
    """A tool call's arguments text as the object Ollama wants (``{}`` if it is not JSON)."""
    try:
        return json.loads(arguments) if arguments.strip() else {}
    except (ValueError, RecursionError):
        return {}

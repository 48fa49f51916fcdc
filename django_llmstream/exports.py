"""Conversations exported as JSON Lines, Markdown or CSV (admin actions, ``llmstream export``).

The formats are documented in ``docs/admin.rst``; in short:

``jsonl``
    One conversation per line: its fields and ``messages``, a list of its messages in order
    with their text, usage, cost and timings. Times are ISO 8601, costs decimal strings.
``markdown``
    A readable transcript per conversation: a heading, a table of facts, then each message
    under a heading with its role; reasoning in a ``<details>`` block, tool calls as JSON.
``csv``
    One row per message (the system prompt first, as a row with role ``system`` and no
    ``message_id``), with the conversation's id, title and owner repeated on each row.

With ``include_content=False`` (``HIDE_CONTENT_FROM_STAFF`` for a user without the content
permission) titles, system prompts, content, reasoning and tool call arguments are left out:
``null`` in JSON, empty cells in CSV, "*hidden*" in Markdown.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from django.db.models import Prefetch, QuerySet

from django_llmstream.models import Conversation, Message
from django_llmstream.privacy import redact_tool_calls

__all__ = ["FORMATS", "ExportFormat", "conversation_record", "export_conversations"]


@dataclass(frozen=True)
class ExportFormat:
    name: str
    label: str
    content_type: str
    extension: str


FORMATS: dict[str, ExportFormat] = {
    "jsonl": ExportFormat("jsonl", "JSON Lines", "application/x-ndjson; charset=utf-8", "jsonl"),
    "markdown": ExportFormat("markdown", "Markdown", "text/markdown; charset=utf-8", "md"),
    "csv": ExportFormat("csv", "CSV", "text/csv; charset=utf-8", "csv"),
}

CSV_COLUMNS = (
    "conversation_id",
    "conversation_title",
    "owner",
    "message_id",
    "role",
    "status",
    "created_at",
    "provider",
    "model",
    "content",
    "reasoning",
    "tool_calls",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost",
    "ttft_ms",
    "duration_ms",
    "error_type",
    "error_message",
)

_HIDDEN_MD = "*hidden*"
_BACKTICKS = re.compile(r"`+")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _owner(conversation: Conversation) -> str | None:
    owner = conversation.owner
    return owner.get_username() if owner is not None else None


def message_record(message: Message, *, include_content: bool = True) -> dict[str, Any]:
    """One message as the JSON export writes it."""
    return {
        "id": str(message.pk),
        "role": message.role,
        "content": message.content if include_content else None,
        "reasoning": message.reasoning if include_content else None,
        "tool_calls": (
            message.tool_call_list()
            if include_content
            else redact_tool_calls(message.tool_call_list())
        ),
        "status": message.status,
        "finish_reason": message.finish_reason,
        "provider": message.provider,
        "model": message.model,
        "params": message.params,
        "input_tokens": message.input_tokens,
        "output_tokens": message.output_tokens,
        "cached_input_tokens": message.cached_input_tokens,
        "reasoning_tokens": message.reasoning_tokens,
        "cost": None if message.cost is None else str(message.cost),
        "ttft_ms": message.ttft_ms,
        "duration_ms": message.duration_ms,
        "error_type": message.error_type,
        "error_message": message.error_message,
        "created_at": _iso(message.created_at),
        "started_at": _iso(message.started_at),
        "finished_at": _iso(message.finished_at),
    }


def conversation_record(
    conversation: Conversation, messages: Iterable[Message], *, include_content: bool = True
) -> dict[str, Any]:
    """One conversation as a line of the JSON Lines export."""
    return {
        "id": str(conversation.pk),
        "title": conversation.title if include_content else None,
        "owner": _owner(conversation),
        "provider": conversation.provider,
        "model": conversation.model,
        "system_prompt": conversation.system_prompt if include_content else None,
        "metadata": conversation.metadata,
        "created_at": _iso(conversation.created_at),
        "updated_at": _iso(conversation.updated_at),
        "content_hidden": not include_content,
        "messages": [message_record(m, include_content=include_content) for m in messages],
    }


def _with_messages(queryset: QuerySet[Conversation]) -> Iterator[Conversation]:
    ordered = Message.objects.order_by("created_at", "pk").defer("stream_log")
    # iterator() with a chunk size keeps memory flat for large exports and still prefetches
    # each chunk's messages in one query.
    return (
        queryset.select_related("owner")
        .prefetch_related(Prefetch("messages", queryset=ordered))
        .order_by("created_at", "pk")
        .iterator(chunk_size=200)
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _write_jsonl(conversations: Iterable[Conversation], out: TextIO, include: bool) -> int:
    count = 0
    for conversation in conversations:
        record = conversation_record(
            conversation, conversation.messages.all(), include_content=include
        )
        out.write(_dumps(record) + "\n")
        count += 1
    return count


def _md_text(text: str, include: bool) -> str:
    if not include:
        return _HIDDEN_MD
    return text if text.strip() else "*(empty)*"


def _md_fence(text: str, lang: str = "") -> str:
    # A fence longer than any run of backticks inside, so no content can close it early.
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _md_usage(message: Message) -> str:
    parts = [message.status]
    if message.model:
        parts.append(f"{message.provider}/{message.model}" if message.provider else message.model)
    if message.input_tokens is not None or message.output_tokens is not None:
        parts.append(f"tokens in {message.input_tokens} / out {message.output_tokens}")
    if message.cost is not None:
        parts.append(f"cost {message.cost.normalize():f}")
    if message.ttft_ms is not None:
        parts.append(f"TTFT {message.ttft_ms} ms")
    if message.duration_ms is not None:
        parts.append(f"{message.duration_ms} ms")
    if message.finish_reason:
        parts.append(f"finish: {message.finish_reason}")
    return " · ".join(parts)


def _write_markdown_one(conversation: Conversation, out: TextIO, include: bool) -> None:
    title = (conversation.title or str(conversation.pk)) if include else str(conversation.pk)
    out.write(f"# {' '.join(title.split())}\n\n")
    owner = _owner(conversation) or "anonymous visitor"
    facts = [
        ("id", str(conversation.pk)),
        ("owner", owner),
        ("provider", conversation.provider),
        ("model", conversation.model),
        ("created", _iso(conversation.created_at) or ""),
        ("updated", _iso(conversation.updated_at) or ""),
    ]
    out.write("| | |\n|---|---|\n")
    for name, value in facts:
        cell = value.replace("|", "\\|")
        out.write(f"| {name} | {cell} |\n")
    out.write("\n")
    if conversation.system_prompt:
        out.write("## System prompt\n\n")
        out.write(_md_text(conversation.system_prompt, include) + "\n\n")
    for message in conversation.messages.all():
        stamp = _iso(message.created_at) or ""
        out.write(f"## {message.role.capitalize()} · {stamp}\n\n")
        if message.role == Message.Role.ASSISTANT:
            out.write(f"*{_md_usage(message)}*\n\n")
        if message.reasoning:
            out.write("<details><summary>Reasoning</summary>\n\n")
            out.write(_md_text(message.reasoning, include) + "\n\n</details>\n\n")
        out.write(_md_text(message.content, include) + "\n\n")
        for call in message.tool_calls or []:
            if not isinstance(call, dict):
                continue
            out.write(f"Tool call `{call.get('name') or '?'}`:\n\n")
            arguments = str(call.get("arguments", ""))
            out.write((_md_fence(arguments, "json") if include else _HIDDEN_MD) + "\n\n")
        if message.error_type:
            out.write(f"**Error** `{message.error_type}`: {message.error_message}\n\n")


def _write_markdown(conversations: Iterable[Conversation], out: TextIO, include: bool) -> int:
    count = 0
    for conversation in conversations:
        if count:
            out.write("---\n\n")
        _write_markdown_one(conversation, out, include)
        count += 1
    return count


def _csv_number(value: Any) -> Any:
    return "" if value is None else value


def _write_csv(conversations: Iterable[Conversation], out: TextIO, include: bool) -> int:
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    for conversation in conversations:
        base = [
            str(conversation.pk),
            conversation.title if include else "",
            _owner(conversation) or "",
        ]
        if conversation.system_prompt:
            writer.writerow(
                [*base, "", "system", "", _iso(conversation.created_at) or "", "", ""]
                + [conversation.system_prompt if include else ""]
                + [""] * (len(CSV_COLUMNS) - 10)
            )
        for message in conversation.messages.all():
            calls = (
                message.tool_call_list() if include else redact_tool_calls(message.tool_call_list())
            )
            writer.writerow(
                [
                    *base,
                    str(message.pk),
                    message.role,
                    message.status,
                    _iso(message.created_at) or "",
                    message.provider,
                    message.model,
                    message.content if include else "",
                    message.reasoning if include else "",
                    _dumps(calls) if calls else "",
                    message.finish_reason,
                    _csv_number(message.input_tokens),
                    _csv_number(message.output_tokens),
                    _csv_number(message.cached_input_tokens),
                    _csv_number(message.reasoning_tokens),
                    _csv_number(message.cost),
                    _csv_number(message.ttft_ms),
                    _csv_number(message.duration_ms),
                    message.error_type,
                    message.error_message,
                ]
            )
        count += 1
    return count


def export_conversations(
    queryset: QuerySet[Conversation],
    fmt: str,
    out: TextIO,
    *,
    include_content: bool = True,
) -> int:
    """Write the conversations of ``queryset`` to ``out`` in format ``fmt`` (a key of
    :data:`FORMATS`), oldest first; returns how many were written."""
    if fmt not in FORMATS:
        raise ValueError(f"Unknown export format {fmt!r}; use one of: {', '.join(FORMATS)}.")
    conversations = _with_messages(queryset)
    if fmt == "jsonl":
        return _write_jsonl(conversations, out, include_content)
    if fmt == "markdown":
        return _write_markdown(conversations, out, include_content)
    return _write_csv(conversations, out, include_content)

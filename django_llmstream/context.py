"""The conversation context budget: which messages of a long conversation are sent upstream.

Every turn sends the whole conversation again, and a conversation can outgrow the model's
context window (the provider then refuses the request) or simply cost more per turn than it
is worth. ``LLMSTREAM["CONTEXT_BUDGET"]`` (or a provider entry's ``OPTIONS["CONTEXT_BUDGET"]``)
caps what is sent, in **characters**, and :func:`fit_context` drops the oldest turns to fit:

- system messages (the system prompt) are always sent;
- the newest turn — the last user message and whatever follows it (tool results of a
  conversation in progress) — is always sent, even alone over the budget (the provider then
  says what it thinks of it, rather than us sending an empty conversation);
- older messages go by whole turns, oldest first: a user message with the answers, tool calls
  and tool results that followed it. A tool call is never sent without its result, nor a
  result without its call (tool calls are grouped with their results by id, even across
  turns), and an answer never without the message it answered;
- the turns that are kept are contiguous: once a turn does not fit, no older turn is sent.

Characters, not tokens: counting tokens needs the model's own tokenizer, which differs per
provider and model, and we do not have one; characters are exact and provider-independent.
For English text a token is about 4 characters (fewer for code, other languages and other
scripts), so a model with a window of 32,000 tokens fits roughly 100,000 characters with
room left for the answer.

The functions here are pure: :func:`fit_context` takes and returns
:class:`~django_llmstream.providers.base.ChatMessage` lists.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from numbers import Integral
from typing import Any

from django_llmstream.providers.base import ChatMessage, tool_call_fields

__all__ = [
    "context_budget",
    "fit_context",
    "is_valid_budget",
    "message_chars",
    "turns",
]

logger = logging.getLogger("django_llmstream.context")


def is_valid_budget(value: Any) -> bool:
    """Whether ``value`` is a usable ``CONTEXT_BUDGET``: ``None`` or a whole number >= 1."""
    return value is None or (
        isinstance(value, Integral) and not isinstance(value, bool) and int(value) >= 1
    )


def context_budget(alias: str | None = None) -> int | None:
    """The budget for provider ``alias``: its ``OPTIONS["CONTEXT_BUDGET"]`` if it sets one,
    else ``LLMSTREAM["CONTEXT_BUDGET"]``. ``None``: no limit. An invalid value (which the
    system checks report) counts as no limit rather than failing turns."""
    from django_llmstream.conf import app_settings
    from django_llmstream.exceptions import InvalidProviderConfig
    from django_llmstream.providers import get_provider

    if alias is not None:
        try:
            return get_provider(alias).context_budget
        except InvalidProviderConfig:
            pass  # a provider that is gone from the settings: the global budget applies
    value = app_settings.CONTEXT_BUDGET
    return int(value) if value is not None and is_valid_budget(value) else None


def message_chars(message: ChatMessage) -> int:
    """The characters ``message`` puts into the context: its text, and the names and
    arguments of its tool calls."""
    size = len(message.content)
    for call in message.tool_calls:
        _id, name, arguments = tool_call_fields(call)
        size += len(name or "") + len(arguments)
    return size


def turns(messages: Sequence[ChatMessage]) -> list[list[int]]:
    """The indexes of the non-system messages of ``messages``, grouped into turns.

    A turn starts at a user message (messages before the first user message form a turn of
    their own) and runs to the next one. Groups are merged where a tool result answers a call
    of an earlier group, so that no group holds a call without its result or the reverse.
    """
    groups: list[list[int]] = []
    for index, message in enumerate(messages):
        if message.role == "system":
            continue
        if message.role == "user" or not groups:
            groups.append([])
        groups[-1].append(index)
    # Where is each tool call? A result whose call lives in an earlier group pulls every group
    # in between into one (a history written in an unusual order must still pair up).
    call_group: dict[str, int] = {}
    position = 0
    while position < len(groups):
        merged = False
        for index in groups[position]:
            message = messages[index]
            for call in message.tool_calls:
                call_id = tool_call_fields(call)[0]
                if call_id is not None:
                    call_group.setdefault(call_id, position)
            if message.role == "tool" and message.tool_call_id:
                origin = call_group.get(message.tool_call_id)
                if origin is not None and origin < position:
                    joined = [i for group in groups[origin : position + 1] for i in group]
                    groups[origin : position + 1] = [joined]
                    merged = True
                    break
        if merged:  # positions have moved: map the calls again (histories are short)
            call_group.clear()
            position = 0
        else:
            position += 1
    return groups


def fit_context(messages: Sequence[ChatMessage], budget: int | None) -> list[ChatMessage]:
    """``messages`` without the oldest turns that do not fit in ``budget`` characters (see
    the module docstring). ``None`` returns all of them."""
    if budget is None:
        return list(messages)
    groups = turns(messages)
    if len(groups) <= 1:
        return list(messages)
    sizes = [sum(message_chars(messages[i]) for i in group) for group in groups]
    system = sum(message_chars(m) for m in messages if m.role == "system")
    used = system + sizes[-1]  # the new prompt is always sent
    keep = 1
    for size in reversed(sizes[:-1]):
        if used + size > budget:
            break
        used += size
        keep += 1
    if keep == len(groups):
        return list(messages)
    dropped = {i for group in groups[: len(groups) - keep] for i in group}
    logger.info(
        "Context budget of %d characters: %d of %d earlier turns sent, the %d oldest "
        "(%d messages) left out.",
        budget,
        keep - 1,
        len(groups) - 1,
        len(groups) - keep,
        len(dropped),
    )
    return [message for index, message in enumerate(messages) if index not in dropped]

"""Conversations and their messages: the transcript of every turn, with usage and timings.

Field names are part of the public contract (docs/protocol.rst): people query them and the admin
shows them.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

__all__ = ["Conversation", "Message"]

_TOOL_CALL_KEYS = ("index", "id", "name", "arguments")


class Conversation(models.Model):
    """A chat: its owner (a user, or an anonymous visitor's session) and its messages."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="llmstream_conversations",
        verbose_name=_("owner"),
    )
    session_key = models.CharField(_("session key"), max_length=64, blank=True, db_index=True)
    title = models.CharField(_("title"), max_length=200, blank=True)
    provider = models.CharField(_("provider"), max_length=100)
    model = models.CharField(_("model"), max_length=200)
    system_prompt = models.TextField(_("system prompt"), blank=True)
    metadata = models.JSONField(_("metadata"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at"]
        verbose_name = _("conversation")
        verbose_name_plural = _("conversations")
        indexes = [models.Index(fields=["owner", "-updated_at"], name="llmstream_conv_owner_upd")]

    def __str__(self) -> str:
        return self.title or str(self.id)


class Message(models.Model):
    """One message of a conversation. An assistant message is a *turn*: its id is the turn id."""

    class Role(models.TextChoices):
        SYSTEM = "system", _("system")
        USER = "user", _("user")
        ASSISTANT = "assistant", _("assistant")
        TOOL = "tool", _("tool")

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        STREAMING = "streaming", _("streaming")
        COMPLETED = "completed", _("completed")
        CANCELLED = "cancelled", _("cancelled")
        FAILED = "failed", _("failed")
        INTERRUPTED = "interrupted", _("interrupted")

    #: Statuses after which a turn never changes again.
    TERMINAL_STATUSES = frozenset({"completed", "cancelled", "failed", "interrupted"})

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation,
        on_delete=models.CASCADE,
        related_name="messages",
        verbose_name=_("conversation"),
    )
    role = models.CharField(_("role"), max_length=16, choices=Role.choices)
    content = models.TextField(_("content"), blank=True)
    reasoning = models.TextField(_("reasoning"), blank=True)
    tool_calls = models.JSONField(_("tool calls"), default=list, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.COMPLETED, db_index=True
    )
    finish_reason = models.CharField(_("finish reason"), max_length=32, blank=True)
    provider = models.CharField(_("provider"), max_length=100, blank=True)
    model = models.CharField(_("model"), max_length=200, blank=True)
    params = models.JSONField(_("params"), default=dict, blank=True)
    input_tokens = models.PositiveIntegerField(_("input tokens"), null=True, blank=True)
    output_tokens = models.PositiveIntegerField(_("output tokens"), null=True, blank=True)
    cached_input_tokens = models.PositiveIntegerField(
        _("cached input tokens"), null=True, blank=True
    )
    reasoning_tokens = models.PositiveIntegerField(_("reasoning tokens"), null=True, blank=True)
    cost = models.DecimalField(_("cost"), max_digits=14, decimal_places=8, null=True, blank=True)
    ttft_ms = models.PositiveIntegerField(_("time to first token (ms)"), null=True, blank=True)
    duration_ms = models.PositiveIntegerField(_("duration (ms)"), null=True, blank=True)
    error_type = models.CharField(_("error type"), max_length=64, blank=True)
    error_message = models.TextField(_("error message"), blank=True)
    # How the streamed events split the text, so a client can resume exactly from the
    # database once the broker has forgotten the turn: one entry per event id (see
    # django_llmstream.replay). Internal; not part of the public contract.
    stream_log = models.JSONField(_("stream log"), default=list, blank=True, editable=False)
    # Until when the process running this turn vouches for it; it renews the lease while the
    # turn runs. A pending or streaming turn whose lease has run out has lost its process and
    # is swept to "interrupted" (django_llmstream.recovery). Internal.
    lease_expires_at = models.DateTimeField(
        _("lease expires at"), null=True, blank=True, editable=False, db_index=True
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        # Checked where LLMSTREAM["HIDE_CONTENT_FROM_STAFF"] hides text (admin, exports).
        permissions = [("view_message_content", _("Can view message content"))]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="llmstream_msg_conv_created")
        ]

    def __str__(self) -> str:
        text = self.content[:60]
        return f"{self.role}: {text}" if text else f"{self.role} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL_STATUSES

    def tool_call_list(self) -> list[dict[str, Any]]:
        """The stored tool calls with their keys in one order (``index``, ``id``, ``name``,
        ``arguments``, then any others): PostgreSQL's ``jsonb`` does not keep key order."""
        calls = self.tool_calls if isinstance(self.tool_calls, list) else []
        return [
            {
                **{key: call[key] for key in _TOOL_CALL_KEYS if key in call},
                **{key: value for key, value in call.items() if key not in _TOOL_CALL_KEYS},
            }
            for call in calls
            if isinstance(call, dict)
        ]

    def usage_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "reasoning_tokens": self.reasoning_tokens,
        }

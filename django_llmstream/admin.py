"""Admin pages for conversations and their messages.

Transcripts are history: the admin shows them but does not let anyone write them. A
conversation's title, system prompt and metadata stay editable; messages are read-only and
cannot be added from the admin. Model text is shown through Django's normal escaping, never
marked safe: it is data written by users and models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils.text import Truncator
from django.utils.translation import gettext_lazy as _

from django_llmstream.models import Conversation, Message

__all__ = ["ConversationAdmin", "MessageAdmin", "MessageInline"]

#: Characters of a message's content shown in lists and inlines.
EXCERPT_CHARS = 120


# The admin classes are generic only for type checkers (django-stubs); at run time Django's
# classes cannot be subscripted, and django-stubs-ext is not a dependency of this package.
if TYPE_CHECKING:
    _ConversationAdminBase = admin.ModelAdmin[Conversation]
    _MessageAdminBase = admin.ModelAdmin[Message]
    _MessageInlineBase = admin.TabularInline[Message, Conversation]
else:
    _ConversationAdminBase = _MessageAdminBase = admin.ModelAdmin
    _MessageInlineBase = admin.TabularInline


def _excerpt(text: str) -> str:
    # Truncator returns plain text; the admin escapes it when rendering.
    return Truncator(" ".join(text.split())).chars(EXCERPT_CHARS)


class MessageInline(_MessageInlineBase):
    """A conversation's messages, in order, read-only."""

    model = Message
    fields = (
        "role",
        "status",
        "content_excerpt",
        "input_tokens",
        "output_tokens",
        "cost",
        "finish_reason",
        "created_at",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("created_at",)
    verbose_name_plural = _("messages")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        # The replay log and reasoning text can be large and are not shown here.
        return super().get_queryset(request).defer("stream_log", "reasoning", "params")

    # django-stubs types the inline's extra ``obj`` argument as an override error itself.
    def has_add_permission(  # type: ignore[override]
        self, request: HttpRequest, obj: Conversation | None
    ) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False

    @admin.display(description=_("content"))
    def content_excerpt(self, obj: Message) -> str:
        return _excerpt(obj.content)


@admin.register(Conversation)
class ConversationAdmin(_ConversationAdminBase):
    list_display = ("__str__", "owner_display", "provider", "model", "message_count", "updated_at")
    list_filter = ("provider", "model", "created_at")
    list_select_related = ("owner",)
    search_fields = ("title", "messages__content")
    date_hierarchy = "updated_at"
    ordering = ("-updated_at",)
    raw_id_fields = ("owner",)
    # The session key identifies an anonymous visitor's session: a credential, not shown.
    fields = (
        "id",
        "title",
        "owner",
        "provider",
        "model",
        "system_prompt",
        "metadata",
        "created_at",
        "updated_at",
    )
    readonly_fields = ("id", "provider", "model", "created_at", "updated_at")
    inlines = (MessageInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        # A correlated subquery rather than Count("messages"): no GROUP BY over every column
        # of the list, and no double counting when a search on messages joins them.
        message_count = (
            Message.objects.filter(conversation=OuterRef("pk"))
            .order_by()
            .values("conversation")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                message_count=Coalesce(
                    Subquery(message_count, output_field=IntegerField()), Value(0)
                )
            )
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Conversations are created by turns, with a provider and a model that exist.
        return False

    @admin.display(description=_("owner"), ordering="owner")
    def owner_display(self, obj: Conversation) -> str:
        if obj.owner_id is None:
            return str(_("anonymous visitor"))
        return str(obj.owner)

    @admin.display(description=_("messages"), ordering="message_count")
    def message_count(self, obj: Conversation) -> int:
        count: Any = getattr(obj, "message_count", None)
        return int(count) if count is not None else obj.messages.count()


_MESSAGE_MAIN = ("id", "conversation", "role", "status", "content")
_MESSAGE_REASONING = ("reasoning", "tool_calls")
_MESSAGE_MODEL = ("provider", "model", "params", "finish_reason")
_MESSAGE_USAGE = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost",
)
_MESSAGE_TIMING = ("ttft_ms", "duration_ms", "created_at", "started_at", "finished_at")
_MESSAGE_ERROR = ("error_type", "error_message")


@admin.register(Message)
class MessageAdmin(_MessageAdminBase):
    list_display = (
        "short_id",
        "conversation",
        "role",
        "status",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "cost",
        "ttft_ms",
        "duration_ms",
        "created_at",
    )
    list_filter = ("status", "role", "provider", "model")
    list_select_related = ("conversation",)
    search_fields = ("content", "conversation__title")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    # COUNT(*) over a large message table is slow on PostgreSQL; the filtered count suffices.
    show_full_result_count = False
    fieldsets = (
        (None, {"fields": _MESSAGE_MAIN}),
        (_("Reasoning and tool calls"), {"fields": _MESSAGE_REASONING, "classes": ("collapse",)}),
        (_("Model"), {"fields": _MESSAGE_MODEL}),
        (_("Usage"), {"fields": _MESSAGE_USAGE}),
        (_("Timing"), {"fields": _MESSAGE_TIMING}),
        (_("Error"), {"fields": _MESSAGE_ERROR}),
    )
    readonly_fields = (
        _MESSAGE_MAIN
        + _MESSAGE_REASONING
        + _MESSAGE_MODEL
        + _MESSAGE_USAGE
        + _MESSAGE_TIMING
        + _MESSAGE_ERROR
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        # The replay log is internal and can be large; no page shows it.
        return super().get_queryset(request).defer("stream_log")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        # Viewing stays allowed (view permission); the change form renders read-only.
        return False

    @admin.display(description=_("id"), ordering="id")
    def short_id(self, obj: Message) -> str:
        return str(obj.id)[:8]

"""The admin as the operations console: transcripts, live turns, usage and cost, exports.

Transcripts are history: the admin shows them but never lets anyone write them (conversations
can be deleted; messages only with their conversation). Text written by users and models is
always shown through Django's escaping, never marked safe. Where
``LLMSTREAM["HIDE_CONTENT_FROM_STAFF"]`` is on, staff without the permission
``django_llmstream.view_message_content`` see everything about a conversation but its text:
see :mod:`django_llmstream.privacy`.

Pages added to the two model admins:

* ``conversation/usage/``: tokens and cost by day, model and user (:meth:`usage_view`).
* ``message/<id>/events/``: a turn's events for the live view (``AdminTurnEventsView``).
* ``message/<id>/stop/``: stop a running turn (POST).
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Model, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator, capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from django_llmstream.admin_views import (
    CSV_BREAKDOWNS,
    AdminTurnEventsView,
    UsageReportForm,
    chart_data,
    report_presets,
    usage_csv,
)
from django_llmstream.brokers import get_broker
from django_llmstream.exports import FORMATS, export_conversations
from django_llmstream.models import Conversation, Message
from django_llmstream.privacy import HIDDEN, can_view_content, content_hidden, redact_tool_calls
from django_llmstream.reports import annotate_conversations, usage_report

__all__ = ["ConversationAdmin", "MessageAdmin", "stop_turns"]

#: Characters of a message's content shown in lists.
EXCERPT_CHARS = 120

#: Statuses of a turn that is still running.
RUNNING = ("pending", "streaming")

# The admin classes are generic only for type checkers (django-stubs); at run time Django's
# classes cannot be subscripted, and django-stubs-ext is not a dependency of this package.
if TYPE_CHECKING:
    _AdminBase = admin.ModelAdmin[Any]
else:
    _AdminBase = admin.ModelAdmin


def _excerpt(text: str, chars: int = EXCERPT_CHARS) -> str:
    # Truncator returns plain text; the admin escapes it when rendering.
    return Truncator(" ".join(text.split())).chars(chars)


def _model_html(provider: str, model: str) -> str:
    if not model:
        return "—"
    return format_html('{}<br><span class="llm-quiet">{}</span>', model, provider)


def _hidden_html() -> str:
    return format_html('<span class="llm-hidden">{}</span>', HIDDEN)


def _tool_calls_html(calls: Any, *, visible: bool) -> str:
    calls = [call for call in calls or [] if isinstance(call, dict)]
    if not calls:
        return "—"
    return format_html_join(
        "",
        '<div class="llm-tool"><code>{}</code><pre>{}</pre></div>',
        (
            (call.get("name") or "?", str(call.get("arguments", "")) if visible else HIDDEN)
            for call in calls
        ),
    )


def status_badge(status: str | None) -> str:
    """A colored badge for a turn's status (``—`` when there is none)."""
    if not status:
        return "—"
    label = Message.Status(status).label if status in Message.Status.values else status
    return format_html('<span class="llm-badge llm-badge-{}">{}</span>', status, label)


def _format_cost(cost: Any) -> str:
    if cost is None:
        return "—"
    # Eight decimal places are stored; six are enough to read, at least two are shown.
    text = f"{cost:.6f}".rstrip("0")
    whole, _sep, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


# -- stopping turns ----------------------------------------------------------------------


async def _astop_turns(turns: Sequence[Message]) -> int:
    # The same steps as TurnStopView: ask the process that runs the turn; where nobody takes
    # the request (its process is gone), end the turn here as cancelled, text kept.
    from django_llmstream.turns import end_orphan_turn, is_orphan

    broker = get_broker()
    stopped = 0
    for turn in turns:
        if turn.is_terminal:
            continue
        taken = await broker.request_stop(str(turn.pk))
        if not taken or is_orphan(turn, broker):
            await end_orphan_turn(turn, broker, status="cancelled")
        stopped += 1
    return stopped


def stop_turns(turns: Iterable[Message]) -> int:
    """Stop the running turns among ``turns`` wherever they run; returns how many were asked.

    Call it from sync code (admin views and actions): under ASGI the request runs in a thread
    and the stop is carried out on the server's event loop, where generations run.
    """
    # Fresh, complete rows (a list's queryset defers fields the async code reads).
    running = list(Message.objects.filter(pk__in=[turn.pk for turn in turns], status__in=RUNNING))
    if not running:
        return 0
    return async_to_sync(_astop_turns)(running)


# -- privacy -----------------------------------------------------------------------------


class _Masked:
    """Stands for a model instance in admin templates, with a ``str()`` that shows no text."""

    def __init__(self, obj: Model, label: str) -> None:
        self._obj = obj
        self._label = label

    def __getattr__(self, name: str) -> Any:
        return getattr(self._obj, name)

    def __str__(self) -> str:
        return self._label


class ContentPrivacyMixin(_AdminBase):
    """Keeps users' text off every page of a model admin for staff who may not read it.

    Django puts ``str(obj)`` — a conversation's title, a message's first words — in page
    titles, breadcrumbs, delete confirmations, success messages and admin log entries; each
    of those is replaced by a label made of the model's name and the object's id.
    """

    #: Search fields over users' text, dropped for staff who may not read it.
    content_search_fields: tuple[str, ...] = ()
    #: Columns and fields that show text -> their stand-ins for staff who may not read it.
    #: Chosen per request in get_list_display() and get_fieldsets(): a model admin is shared
    #: by every request, so its display methods must not depend on who is asking.
    hidden_variants: dict[str, str] = {}

    def can_view_content(self, request: HttpRequest) -> bool:
        cached = getattr(request, "_llmstream_can_view_content", None)
        if cached is None:
            cached = can_view_content(request.user)
            request._llmstream_can_view_content = cached  # type: ignore[attr-defined]
        return bool(cached)

    def masked_label(self, obj: Any) -> str:
        return f"{capfirst(self.opts.verbose_name)} {obj.pk}"

    def _swap(self, request: HttpRequest, names: Sequence[Any]) -> list[Any]:
        if self.can_view_content(request):
            return list(names)
        return [self.hidden_variants.get(n, n) if isinstance(n, str) else n for n in names]

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        return self._swap(request, super().get_list_display(request))

    def get_list_display_links(
        self, request: HttpRequest, list_display: Sequence[Any]
    ) -> list[Any]:
        return list(list_display[:1])

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return [
            (name, {**options, "fields": self._swap(request, options["fields"])})
            for name, options in super().get_fieldsets(request, obj)
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), *self.hidden_variants.values()]

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        fields = list(super().get_search_fields(request))
        if not self.can_view_content(request):
            fields = [f for f in fields if f not in self.content_search_fields]
        return fields

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        # An id pasted from a log line (turn_id, conversation id) finds its object.
        try:
            wanted = uuid.UUID(search_term.strip())
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(self.id_search_q(wanted)), False

    def id_search_q(self, wanted: uuid.UUID) -> Q:
        return Q(pk=wanted)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        if obj is not None and not self.can_view_content(request):
            label = self.masked_label(obj)
            context["subtitle"] = label
            context["original"] = _Masked(obj, label)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().history_view(request, object_id, extra_context)
        if isinstance(response, TemplateResponse) and not self.can_view_content(request):
            data = response.context_data or {}
            obj = data.get("object")
            if obj is not None:
                label = self.masked_label(obj)
                data["object"] = _Masked(obj, label)
                data["title"] = _("Change history: %s") % label
        return response

    def render_delete_form(self, request: HttpRequest, context: dict[str, Any]) -> HttpResponse:
        obj = context.get("object")
        if obj is not None and not self.can_view_content(request):
            context["object"] = _Masked(obj, self.masked_label(obj))
        return super().render_delete_form(request, context)

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        if not self.can_view_content(request):
            obj_display = f"{capfirst(self.opts.verbose_name)} {obj_id}"
        return super().response_delete(request, obj_display, obj_id)

    def action_checkbox(self, obj: Any) -> SafeString:
        # Django labels each row's checkbox with str(obj). It is not told who is asking, so
        # while the setting is on, rows are labelled by id for everyone.
        if not content_hidden():
            return super().action_checkbox(obj)
        label = format_html(str(_("Select this object for an action - {}")), self.masked_label(obj))
        checkbox = forms.CheckboxInput(
            {"class": "action-select", "aria-label": label}, lambda value: False
        )
        return checkbox.render(helpers.ACTION_CHECKBOX_NAME, str(obj.pk))

    def get_deleted_objects(
        self, objs: Sequence[Any] | QuerySet[Any], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        # Messages are never deleted one by one (MessageAdmin refuses it), but they go with
        # their conversation: the conversation's delete permission is the one that counts.
        perms_needed = {p for p in perms_needed if p != str(Message._meta.verbose_name)}
        if not self.can_view_content(request):
            # Django lists every related object by str(): message excerpts. Ids only here;
            # model_count still says how many messages go with them.
            deleted = [self.masked_label(obj) for obj in objs]
        return deleted, model_count, perms_needed, protected

    def log_deletions(self, request: HttpRequest, queryset: Any) -> Any:
        if not content_hidden():
            return super().log_deletions(request, queryset)
        # Log entries are shown to every staff user later ("Recent actions"): by id only.
        content_type = ContentType.objects.get_for_model(self.model, for_concrete_model=False)
        return LogEntry.objects.bulk_create(
            [
                LogEntry(
                    user_id=cast(Any, request.user.pk),
                    content_type_id=content_type.pk,
                    object_id=str(obj.pk),
                    object_repr=self.masked_label(obj)[:200],
                    action_flag=DELETION,
                    change_message="",
                )
                for obj in queryset
            ]
        )


# -- list filters ------------------------------------------------------------------------


class LastTurnStatusFilter(admin.SimpleListFilter):
    """Conversations by the status of their newest assistant turn (an annotation)."""

    title = _("status of last turn")
    parameter_name = "last_status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, str(label)) for value, label in Message.Status.choices]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value in Message.Status.values:
            return queryset.filter(last_status=value)
        return queryset


# -- conversations -----------------------------------------------------------------------


@admin.register(Conversation)
class ConversationAdmin(ContentPrivacyMixin):
    change_form_template = "admin/django_llmstream/conversation/change_form.html"

    class Media:
        css = {"all": ("django_llmstream/admin/admin.css",)}

    change_list_template = "admin/django_llmstream/conversation/change_list.html"
    usage_report_template = "admin/django_llmstream/usage_report.html"

    list_display = (
        "title_display",
        "owner_display",
        "provider_model",
        "message_count",
        "total_tokens",
        "total_cost",
        "last_activity",
        "last_status_display",
    )
    hidden_variants = {
        "title_display": "title_hidden",
        "system_prompt_display": "system_prompt_hidden",
    }
    list_filter = (
        LastTurnStatusFilter,
        "provider",
        "model",
        ("owner", admin.RelatedOnlyFieldListFilter),
        "created_at",
    )
    list_select_related = ("owner",)
    search_fields = ("title", "messages__content")
    content_search_fields = ("title", "messages__content")
    date_hierarchy = "created_at"
    ordering = ("-updated_at",)
    list_per_page = 100
    # The session key identifies an anonymous visitor's session: a credential, not shown.
    fieldsets = (
        (None, {"fields": ("id", "title_display", "owner_display", "provider", "model")}),
        (_("System prompt and metadata"), {"fields": ("system_prompt_display", "metadata")}),
        (_("Dates"), {"fields": ("created_at", "updated_at")}),
    )
    readonly_fields = (
        "id",
        "title_display",
        "owner_display",
        "provider",
        "model",
        "system_prompt_display",
        "metadata",
        "created_at",
        "updated_at",
    )
    actions = ("export_jsonl", "export_markdown", "export_csv", "stop_running_turns")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return annotate_conversations(super().get_queryset(request))

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        fields = list(super().get_search_fields(request))
        return [*fields, f"owner__{get_user_model().USERNAME_FIELD}"]

    # Transcripts are history: viewed, deleted, never added or edited here.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False

    def has_stop_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_llmstream.change_message")

    # -- columns and fields ---------------------------------------------------------------

    @admin.display(description=_("title"), ordering="title")
    def title_display(self, obj: Conversation) -> str:
        return _excerpt(obj.title, 80) if obj.title else format_html("<i>{}</i>", _("untitled"))

    @admin.display(description=_("title"))
    def title_hidden(self, obj: Conversation) -> str:
        return _hidden_html()

    @admin.display(description=_("owner"), ordering="owner")
    def owner_display(self, obj: Conversation) -> str:
        if obj.owner_id is None:
            return str(_("anonymous visitor"))
        return str(obj.owner)

    @admin.display(description=_("model"), ordering="model")
    def provider_model(self, obj: Conversation) -> str:
        return _model_html(obj.provider, obj.model)

    @admin.display(description=_("messages"), ordering="message_count")
    def message_count(self, obj: Conversation) -> int:
        return int(getattr(obj, "message_count", 0) or 0)

    @admin.display(description=_("tokens"), ordering="total_tokens")
    def total_tokens(self, obj: Conversation) -> int:
        return int(getattr(obj, "total_tokens", 0) or 0)

    @admin.display(description=_("cost"), ordering="total_cost")
    def total_cost(self, obj: Conversation) -> str:
        return _format_cost(getattr(obj, "total_cost", None))

    @admin.display(description=_("last activity"), ordering="last_activity")
    def last_activity(self, obj: Conversation) -> str:
        value = getattr(obj, "last_activity", None) or obj.updated_at
        return date_format(timezone.localtime(value), "SHORT_DATETIME_FORMAT")

    @admin.display(description=_("last turn"), ordering="last_status")
    def last_status_display(self, obj: Conversation) -> str:
        return status_badge(getattr(obj, "last_status", None))

    @admin.display(description=_("system prompt"))
    def system_prompt_display(self, obj: Conversation) -> str:
        if not obj.system_prompt:
            return "—"
        return format_html('<div class="llm-text">{}</div>', obj.system_prompt)

    @admin.display(description=_("system prompt"))
    def system_prompt_hidden(self, obj: Conversation) -> str:
        return _hidden_html() if obj.system_prompt else "—"

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        if obj is not None:
            context.update(self.transcript_context(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    def transcript_context(self, request: HttpRequest, obj: Conversation) -> dict[str, Any]:
        """The transcript of the change page: every message, in order, and the totals."""
        visible = self.can_view_content(request)
        rows = []
        for message in obj.messages.order_by("created_at", "pk").defer("stream_log"):
            calls = list(message.tool_calls or [])
            if not visible:
                calls = redact_tool_calls(calls)
            rows.append(
                {
                    "message": message,
                    "tool_calls": calls,
                    "cost": _format_cost(message.cost),
                    "running": message.status in RUNNING,
                    "url": reverse(
                        f"{self.admin_site.name}:django_llmstream_message_change",
                        args=[message.pk],
                    ),
                    "stop_url": reverse(
                        f"{self.admin_site.name}:django_llmstream_message_stop",
                        args=[message.pk],
                    ),
                }
            )
        totals = obj.messages.aggregate(
            turns=Count("pk", filter=Q(role=Message.Role.ASSISTANT)),
            input_tokens=Coalesce(Sum("input_tokens"), 0),
            output_tokens=Coalesce(Sum("output_tokens"), 0),
            cached_input_tokens=Coalesce(Sum("cached_input_tokens"), 0),
            reasoning_tokens=Coalesce(Sum("reasoning_tokens"), 0),
            cost=Sum("cost"),
            duration_ms=Coalesce(Sum("duration_ms"), 0),
        )
        totals["cost"] = _format_cost(totals["cost"])
        return {
            "transcript": rows,
            "totals": totals,
            "content_visible": visible,
            "can_stop": self.has_stop_permission(request),
        }

    # -- actions ----------------------------------------------------------------------

    def _export(self, request: HttpRequest, queryset: QuerySet[Conversation], fmt: str) -> Any:
        spec = FORMATS[fmt]
        buffer = io.StringIO()
        # The list's annotations are not needed: export from the plain rows.
        plain = Conversation.objects.filter(pk__in=queryset.values("pk"))
        export_conversations(plain, fmt, buffer, include_content=self.can_view_content(request))
        response = HttpResponse(buffer.getvalue(), content_type=spec.content_type)
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = (
            f'attachment; filename="conversations-{stamp}.{spec.extension}"'
        )
        return response

    @admin.action(
        description=_("Export selected conversations as JSON Lines"), permissions=["view"]
    )
    def export_jsonl(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> Any:
        return self._export(request, queryset, "jsonl")

    @admin.action(description=_("Export selected conversations as Markdown"), permissions=["view"])
    def export_markdown(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> Any:
        return self._export(request, queryset, "markdown")

    @admin.action(description=_("Export selected conversations as CSV"), permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> Any:
        return self._export(request, queryset, "csv")

    @admin.action(
        description=_("Stop the running turns of selected conversations"), permissions=["stop"]
    )
    def stop_running_turns(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        turns = Message.objects.filter(
            conversation__in=queryset.values("pk"), status__in=RUNNING
        ).select_related("conversation")
        _report_stopped(self, request, stop_turns(turns))

    # -- usage report -----------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        custom = [
            path(
                "usage/",
                self.admin_site.admin_view(self.usage_view),
                name="{}_{}_usage".format(*info),
            ),
        ]
        return custom + super().get_urls()

    def usage_view(self, request: HttpRequest) -> HttpResponseBase:
        """Tokens and cost by day, provider and model, and user, for a chosen period."""
        if not (
            self.has_view_permission(request)
            or request.user.has_perm("django_llmstream.view_message")
        ):
            raise PermissionDenied
        providers = sorted(
            set(
                Message.objects.filter(role=Message.Role.ASSISTANT)
                .exclude(provider="")
                .order_by()
                .values_list("provider", flat=True)
                .distinct()
            )
        )
        start, end = UsageReportForm.default_period()
        data = request.GET if "start" in request.GET or "end" in request.GET else None
        form = UsageReportForm(data, initial={"start": start, "end": end}, providers=providers)
        report = None
        if data is None or form.is_valid():
            if data is not None:
                start, end = form.cleaned_data["start"], form.cleaned_data["end"]
            provider = form.cleaned_data.get("provider") if data is not None else None
            report = usage_report(start, end, provider=provider or None)
            export = request.GET.get("export")
            if export in CSV_BREAKDOWNS:
                return usage_csv(report, export)
            if export:
                form.add_error(None, _("Unknown export; use day, model or user."))
        query = request.GET.copy()
        query.pop("export", None)
        presets = [
            (label, f"?start={s.isoformat()}&end={e.isoformat()}")
            for label, s, e in report_presets(timezone.localdate())
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": _("Usage and cost"),
            "opts": self.opts,
            "form": form,
            "report": report,
            "chart": chart_data(report) if report is not None else None,
            "presets": presets,
            "export_query": query.urlencode(),
            "max_day_cost": max((r.cost for r in report.by_day), default=0) if report else 0,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.usage_report_template, context)


def _report_stopped(model_admin: admin.ModelAdmin[Any], request: HttpRequest, count: int) -> None:
    if count:
        model_admin.message_user(
            request,
            ngettext(
                "Asked %(count)d running turn to stop.",
                "Asked %(count)d running turns to stop.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )
    else:
        model_admin.message_user(request, _("No running turn was selected."), messages.WARNING)


# -- messages ----------------------------------------------------------------------------

_MESSAGE_MAIN = ("id", "conversation_link", "role", "status_display", "content_display")
_MESSAGE_REASONING = ("reasoning_display", "tool_calls_display")
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
class MessageAdmin(ContentPrivacyMixin):
    change_form_template = "admin/django_llmstream/message/change_form.html"

    class Media:
        css = {"all": ("django_llmstream/admin/admin.css",)}

    list_display = (
        "short_id",
        "conversation_display",
        "role",
        "status_display",
        "provider_model",
        "tokens",
        "cost_display",
        "ttft_ms",
        "duration_ms",
        "error_display",
        "created_at",
    )
    hidden_variants = {
        "conversation_display": "conversation_hidden",
        "conversation_link": "conversation_link_hidden",
        "content_display": "content_hidden",
        "reasoning_display": "reasoning_hidden",
        "tool_calls_display": "tool_calls_hidden",
    }
    list_filter = ("status", "role", "provider", "model", "error_type", "created_at")
    list_select_related = ("conversation",)
    search_fields = ("content", "conversation__title", "error_message")
    content_search_fields = ("content", "conversation__title")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    list_per_page = 100
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
    actions = ("stop_selected_turns",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        # The replay log is internal and can be large; no page shows it.
        return super().get_queryset(request).defer("stream_log")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        # Viewing stays allowed (view permission); the change form renders read-only.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        # A transcript is deleted whole, with its conversation.
        return False

    def has_stop_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_llmstream.change_message")

    def masked_label(self, obj: Any) -> str:
        return f"{capfirst(obj.role)} {self.opts.verbose_name} {obj.pk}"

    def id_search_q(self, wanted: uuid.UUID) -> Q:
        # A conversation's id lists its messages.
        return Q(pk=wanted) | Q(conversation_id=wanted)

    # -- columns and fields ---------------------------------------------------------------

    @admin.display(description=_("id"), ordering="id")
    def short_id(self, obj: Message) -> str:
        return str(obj.id)[:8]

    @admin.display(description=_("conversation"), ordering="conversation__title")
    def conversation_display(self, obj: Message) -> str:
        return _excerpt(obj.conversation.title or str(obj.conversation_id), 40)

    @admin.display(description=_("conversation"))
    def conversation_hidden(self, obj: Message) -> str:
        return str(obj.conversation_id)[:8]

    def _conversation_link(self, obj: Message, label: str) -> str:
        url = reverse(
            f"{self.admin_site.name}:django_llmstream_conversation_change",
            args=[obj.conversation_id],
        )
        return format_html('<a href="{}">{}</a>', url, label or obj.conversation_id)

    @admin.display(description=_("conversation"))
    def conversation_link(self, obj: Message) -> str:
        return self._conversation_link(obj, obj.conversation.title)

    @admin.display(description=_("conversation"))
    def conversation_link_hidden(self, obj: Message) -> str:
        return self._conversation_link(obj, "")

    @admin.display(description=_("status"), ordering="status")
    def status_display(self, obj: Message) -> str:
        return status_badge(obj.status)

    @admin.display(description=_("model"), ordering="model")
    def provider_model(self, obj: Message) -> str:
        return _model_html(obj.provider, obj.model)

    @admin.display(description=_("tokens in / out"))
    def tokens(self, obj: Message) -> str:
        if obj.input_tokens is None and obj.output_tokens is None:
            return "—"
        shown = ("—" if n is None else str(n) for n in (obj.input_tokens, obj.output_tokens))
        return " / ".join(shown)

    @admin.display(description=_("cost"), ordering="cost")
    def cost_display(self, obj: Message) -> str:
        return _format_cost(obj.cost)

    @admin.display(description=_("error"), ordering="error_type")
    def error_display(self, obj: Message) -> str:
        if not obj.error_type:
            return ""
        return format_html(
            '<span class="llm-error" title="{}">{}</span>',
            obj.error_message,
            obj.error_type,
        )

    @admin.display(description=_("content"))
    def content_display(self, obj: Message) -> str:
        if not obj.content:
            return "—"
        return format_html('<div class="llm-text">{}</div>', obj.content)

    @admin.display(description=_("content"))
    def content_hidden(self, obj: Message) -> str:
        return _hidden_html() if obj.content else "—"

    @admin.display(description=_("reasoning"))
    def reasoning_display(self, obj: Message) -> str:
        if not obj.reasoning:
            return "—"
        return format_html('<div class="llm-text">{}</div>', obj.reasoning)

    @admin.display(description=_("reasoning"))
    def reasoning_hidden(self, obj: Message) -> str:
        return _hidden_html() if obj.reasoning else "—"

    @admin.display(description=_("tool calls"))
    def tool_calls_display(self, obj: Message) -> str:
        return _tool_calls_html(obj.tool_calls, visible=True)

    @admin.display(description=_("tool calls"))
    def tool_calls_hidden(self, obj: Message) -> str:
        return _tool_calls_html(obj.tool_calls, visible=False)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        if obj is not None:
            running = obj.status in RUNNING and obj.role == Message.Role.ASSISTANT
            name = self.admin_site.name
            context.update(
                {
                    "running": running,
                    "content_visible": self.can_view_content(request),
                    "can_stop": running and self.has_stop_permission(request),
                    "events_url": reverse(f"{name}:django_llmstream_message_events", args=[obj.pk]),
                    "stop_url": reverse(f"{name}:django_llmstream_message_stop", args=[obj.pk]),
                }
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    # -- stopping ---------------------------------------------------------------------

    @admin.action(description=_("Stop selected running turns"), permissions=["stop"])
    def stop_selected_turns(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        _report_stopped(self, request, stop_turns(queryset.filter(status__in=RUNNING)))

    def stop_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        """POST: stop one running turn, then back to its page."""
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        if not self.has_stop_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            self.message_user(request, _("No such turn."), messages.WARNING)
            return HttpResponseRedirect(
                reverse(f"{self.admin_site.name}:django_llmstream_message_changelist")
            )
        _report_stopped(self, request, stop_turns([obj]))
        return HttpResponseRedirect(
            reverse(f"{self.admin_site.name}:django_llmstream_message_change", args=[obj.pk])
        )

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        custom = [
            # Not wrapped in admin_view(): an async view that checks staff and permissions
            # itself (admin_view's checks are sync) and answers 403, not a login redirect.
            path(
                "<uuid:turn>/events/",
                AdminTurnEventsView.as_view(),
                name="{}_{}_events".format(*info),
            ),
            path(
                "<path:object_id>/stop/",
                self.admin_site.admin_view(self.stop_view),
                name="{}_{}_stop".format(*info),
            ),
        ]
        return custom + super().get_urls()

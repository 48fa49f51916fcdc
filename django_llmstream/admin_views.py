"""Views the admin adds: the live event stream of a turn for staff, and the usage report.

They are mounted by the model admins' ``get_urls`` (see :mod:`django_llmstream.admin`), so
they live under ``/admin/django_llmstream/…`` and follow the admin site's login.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any, cast

from asgiref.sync import sync_to_async
from django import forms
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_llmstream.conf import app_settings
from django_llmstream.models import Message
from django_llmstream.privacy import can_view_content
from django_llmstream.reports import UsageReport, UsageRow
from django_llmstream.sse import SSEParser, encode
from django_llmstream.views import Owner, TurnEventsView

__all__ = [
    "MAX_REPORT_DAYS",
    "AdminTurnEventsView",
    "UsageReportForm",
    "redact_event_data",
    "usage_csv",
]

#: The longest period the usage report covers at once.
MAX_REPORT_DAYS = 366

_PING = b": ping\n\n"


def redact_event_data(event: str, data: dict[str, Any]) -> dict[str, Any]:
    """An event's data with its text removed: how much arrived is kept (``chars``)."""
    if event in {"delta", "reasoning"}:
        text = str(data.get("text") or "")
        return {"text": "", "hidden": True, "chars": len(text)}
    if event == "tool_call":
        arguments = str(data.get("arguments") or "")
        return {**data, "arguments": "", "hidden": True, "chars": len(arguments)}
    return data


async def _redacted_stream(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Re-frame an event stream with every event's text removed (``redact_event_data``)."""
    parser = SSEParser()
    first = True
    try:
        async for chunk in chunks:
            out = encode(retry=int(app_settings.RETRY_MS)) if first else b""
            first = False
            if chunk == _PING:
                yield out + chunk
                continue
            for sse in parser.feed(chunk):
                try:
                    data = json.loads(sse.data)
                except ValueError:
                    continue
                if isinstance(data, dict):
                    data = redact_event_data(sse.event, data)
                out += encode(data, event=sse.event, id=sse.id or None)
            yield out or _PING
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class AdminTurnEventsView(TurnEventsView):
    """The events of any turn, for staff with the view permission on messages.

    The public endpoint only serves a turn to its owner (user or visitor session); this one
    serves every turn to staff, with the very same logic (attach, resume, replay), and hides
    the text where ``HIDE_CONTENT_FROM_STAFF`` says so. It answers ``403`` (JSON) to anyone
    else rather than redirecting: its client is an ``EventSource``, not a person.
    """

    content_visible: bool = True

    @staticmethod
    def has_permission(user: AbstractBaseUser | AnonymousUser) -> bool:
        has_perm = getattr(user, "has_perm", None)
        return bool(
            user.is_active
            and getattr(user, "is_staff", False)
            and callable(has_perm)
            and (
                has_perm("django_llmstream.view_message")
                or has_perm("django_llmstream.change_message")
            )
        )

    async def get_owner(self, request: HttpRequest) -> Owner | None:
        user = await request.auser()
        if not user.is_authenticated:
            return None
        allowed, visible = await sync_to_async(
            lambda: (self.has_permission(user), can_view_content(user))
        )()
        if not allowed:
            return None
        self.content_visible = visible
        return Owner(user=user, session_key=None)

    def get_turn_queryset(self) -> QuerySet[Message]:
        return Message.objects.filter(role=Message.Role.ASSISTANT).select_related("conversation")

    async def get(self, request: HttpRequest, turn: Any) -> HttpResponseBase:
        if self.content_visible:
            return await super().get(request, turn)
        # The text is taken out of each event below: that needs the plain bytes, so this
        # response is never compressed (GZipMiddleware also leaves it alone without the header).
        # Events whose data is not JSON (?format=html) are dropped: no text either way.
        request.META["HTTP_ACCEPT_ENCODING"] = ""
        response = await super().get(request, turn)
        if isinstance(response, StreamingHttpResponse) and response.is_async:
            content = cast(AsyncIterator[bytes], response.streaming_content)
            response.streaming_content = _redacted_stream(content)
        return response


def _month_start(day: date) -> date:
    return day.replace(day=1)


def report_presets(today: date) -> list[tuple[str, date, date]]:
    """Quick periods offered above the form: label, start, end."""
    this_month = _month_start(today)
    last_month_end = this_month - timedelta(days=1)
    return [
        (str(_("Last 7 days")), today - timedelta(days=6), today),
        (str(_("Last 30 days")), today - timedelta(days=29), today),
        (str(_("This month")), this_month, today),
        (str(_("Last month")), _month_start(last_month_end), last_month_end),
    ]


class UsageReportForm(forms.Form):
    """The period (and optionally one provider) of the usage report, from GET parameters."""

    start = forms.DateField(label=_("From"), widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label=_("To"), widget=forms.DateInput(attrs={"type": "date"}))
    provider = forms.ChoiceField(label=_("Provider"), required=False)

    def __init__(self, *args: Any, providers: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", _("all providers"))] + [(p, p) for p in providers or []]
        self.fields["provider"].choices = choices  # type: ignore[attr-defined]

    @staticmethod
    def default_period() -> tuple[date, date]:
        today = timezone.localdate()
        return today - timedelta(days=29), today

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end:
            if end < start:
                raise forms.ValidationError(_("The end date must not be before the start date."))
            if (end - start).days + 1 > MAX_REPORT_DAYS:
                raise forms.ValidationError(
                    _("Choose a period of at most %(days)d days.") % {"days": MAX_REPORT_DAYS}
                )
        return cleaned


#: The breakdowns of the report that can be exported as CSV.
CSV_BREAKDOWNS = ("day", "model", "user")


def _csv_key(breakdown: str, row: UsageRow) -> list[Any]:
    if breakdown == "day":
        return [row.key["day"].isoformat()]
    if breakdown == "model":
        return [row.key["provider"], row.key["model"]]
    return [row.key["username"] or "", row.key["user_id"] or ""]


def usage_csv(report: UsageReport, breakdown: str) -> HttpResponse:
    """One breakdown of the report as a CSV download."""
    headers = {
        "day": ["day"],
        "model": ["provider", "model"],
        "user": ["username", "user_id"],
    }[breakdown]
    rows = {"day": report.by_day, "model": report.by_model, "user": report.by_user}[breakdown]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(
        [*headers, "turns", "failed", "input_tokens", "output_tokens", "total_tokens", "cost"]
    )
    for row in rows:
        writer.writerow(
            [
                *_csv_key(breakdown, row),
                row.turns,
                row.failed,
                row.input_tokens,
                row.output_tokens,
                row.total_tokens,
                f"{row.cost:f}",
            ]
        )
    response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
    filename = f"llmstream-usage-{breakdown}-{report.start.isoformat()}-{report.end.isoformat()}"
    response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
    return response


def chart_data(report: UsageReport) -> dict[str, Any]:
    """What ``report.js`` draws: one entry per day."""
    return {
        "days": [
            {
                "day": row.key["day"].isoformat(),
                "turns": row.turns,
                "input_tokens": row.input_tokens,
                "output_tokens": row.output_tokens,
                "cost": f"{row.cost:f}",
            }
            for row in report.by_day
        ]
    }

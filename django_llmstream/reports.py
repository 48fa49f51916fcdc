"""Numbers about conversations and turns, computed by the database.

Used by the admin (list columns, filters, the usage report) and the management commands
(``prune``). Everything here is a queryset annotation or an aggregate: no Python loop over
rows, so a page of 100 conversations costs the same number of queries as a page of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import (
    Count,
    DateTimeField,
    DecimalField,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Greatest, TruncDate
from django.utils import timezone

from django_llmstream.models import Conversation, Message

__all__ = [
    "UsageReport",
    "UsageRow",
    "annotate_conversations",
    "usage_report",
]

_COST = DecimalField(max_digits=20, decimal_places=8)
_PLACES = Decimal("0.00000001")


def _per_conversation(aggregate: Any) -> QuerySet[Any, Any]:
    # GROUP BY the outer conversation only: a correlated subquery per column, no GROUP BY
    # over every column of the list, and no double counting when a search joins messages.
    grouped: QuerySet[Any, Any] = (
        Message.objects.filter(conversation=OuterRef("pk")).order_by().values("conversation")
    )
    values: QuerySet[Any, Any] = grouped.annotate(n=aggregate).values("n")
    return values


def annotate_conversations(queryset: QuerySet[Conversation]) -> QuerySet[Any]:
    """Add ``message_count``, ``total_tokens``, ``total_cost``, ``last_activity`` and
    ``last_status`` (the status of the newest assistant turn, or ``None``)."""
    count = _per_conversation(Count("pk"))
    tokens = _per_conversation(Sum(Coalesce("input_tokens", 0) + Coalesce("output_tokens", 0)))
    cost = _per_conversation(Sum("cost"))
    newest = _per_conversation(
        Max(Coalesce("finished_at", "created_at", output_field=DateTimeField()))
    )
    last_status = (
        Message.objects.filter(conversation=OuterRef("pk"), role=Message.Role.ASSISTANT)
        .order_by("-created_at", "-pk")
        .values("status")[:1]
    )
    return queryset.annotate(
        message_count=Coalesce(Subquery(count, output_field=IntegerField()), Value(0)),
        total_tokens=Coalesce(Subquery(tokens, output_field=IntegerField()), Value(0)),
        total_cost=Subquery(cost, output_field=_COST),
        # Greatest() is NULL on SQLite when any argument is: coalesce the subquery first.
        last_activity=Greatest(
            F("updated_at"),
            Coalesce(Subquery(newest, output_field=DateTimeField()), F("updated_at")),
            output_field=DateTimeField(),
        ),
        last_status=Subquery(last_status),
    )


@dataclass(frozen=True)
class UsageRow:
    """One line of the usage report."""

    key: dict[str, Any]
    turns: int
    failed: int
    input_tokens: int
    output_tokens: int
    cost: Decimal

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class UsageReport:
    """Usage of assistant turns started in ``[start, end]`` (dates, inclusive)."""

    start: date
    end: date
    by_day: list[UsageRow]
    by_model: list[UsageRow]
    by_user: list[UsageRow]
    totals: UsageRow


_SUMS: dict[str, Any] = {
    "turns": Count("pk"),
    "failed": Count("pk", filter=Q(status__in=["failed", "interrupted"])),
    "input_tokens": Coalesce(Sum("input_tokens"), 0),
    "output_tokens": Coalesce(Sum("output_tokens"), 0),
    "cost": Coalesce(Sum("cost"), Value(Decimal(0)), output_field=_COST),
}


def _row(values: Mapping[str, Any], key_names: tuple[str, ...]) -> UsageRow:
    return UsageRow(
        key={name: values[name] for name in key_names},
        turns=int(values["turns"]),
        failed=int(values["failed"]),
        input_tokens=int(values["input_tokens"]),
        output_tokens=int(values["output_tokens"]),
        # Eight places, as stored: the same text from every database backend.
        cost=Decimal(values["cost"] or 0).quantize(_PLACES),
    )


def usage_report(
    start: date,
    end: date,
    *,
    provider: str | None = None,
    tz: Any = None,
) -> UsageReport:
    """Tokens and cost of the assistant turns started between ``start`` and ``end``
    (inclusive, in the current time zone), by day, by provider and model, and by owner."""
    tz = tz or timezone.get_current_timezone()
    since = datetime.combine(start, time.min, tzinfo=tz)
    until = datetime.combine(end + timedelta(days=1), time.min, tzinfo=tz)
    turns = Message.objects.filter(
        role=Message.Role.ASSISTANT, created_at__gte=since, created_at__lt=until
    )
    if provider:
        turns = turns.filter(provider=provider)
    turns = turns.order_by()
    summed: Any = turns  # the annotations below are beyond django-stubs' plugin
    username = f"conversation__owner__{get_user_model().USERNAME_FIELD}"

    by_day_rows = {
        values["day"]: _row(values, ("day",))
        for values in summed.annotate(day=TruncDate("created_at", tzinfo=tz))
        .values("day")
        .annotate(**_SUMS)
        .order_by("day")
    }
    # Days without turns are shown as zeros, so the chart's time axis has no gaps.
    by_day = []
    day = start
    while day <= end:
        by_day.append(
            by_day_rows.get(day)
            or UsageRow(
                key={"day": day},
                turns=0,
                failed=0,
                input_tokens=0,
                output_tokens=0,
                cost=Decimal(0),
            )
        )
        day += timedelta(days=1)
    by_model = [
        _row(values, ("provider", "model"))
        for values in summed.values("provider", "model")
        .annotate(**_SUMS)
        .order_by("-cost", "-turns", "provider", "model")
    ]
    by_user = [
        _row(values, ("user_id", "username"))
        for values in summed.annotate(user_id=F("conversation__owner"), username=F(username))
        .values("user_id", "username")
        .annotate(**_SUMS)
        .order_by("-cost", "-turns", "username")
    ]
    totals = _row({"total": None, **turns.aggregate(**_SUMS)}, ("total",))
    return UsageReport(
        start=start, end=end, by_day=by_day, by_model=by_model, by_user=by_user, totals=totals
    )

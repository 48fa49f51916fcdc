"""Turns whose process died: found by their lapsed lease and ended as ``interrupted``.

A running turn's process renews ``Message.lease_expires_at`` with its batched writes. When a
worker is killed, nobody renews it; the sweep — at a process's first request, when a turn is
accessed, and from ``manage.py llmstream sweep`` — ends such turns as ``interrupted`` with the
text that was persisted, so that no turn stays ``streaming`` forever.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.db.models import Q, QuerySet
from django.utils import timezone

from django_llmstream.conf import app_settings
from django_llmstream.models import Message

__all__ = [
    "INTERRUPTED_MESSAGE",
    "asweep_interrupted",
    "dead_turns",
    "end_orphan",
    "is_dead",
    "lease_deadline",
    "sweep_interrupted",
]

INTERRUPTED_MESSAGE = "The server stopped before the answer was complete."

_RUNNING = ("pending", "streaming")


def lease_deadline(now: datetime | None = None) -> datetime:
    """When a lease taken now runs out."""
    return (now or timezone.now()) + timedelta(seconds=float(app_settings.LEASE_SECONDS))


def dead_turns(now: datetime | None = None) -> QuerySet[Message]:
    """Running turns nobody vouches for any more."""
    now = now or timezone.now()
    unleased_since = now - timedelta(seconds=float(app_settings.LEASE_SECONDS))
    return Message.objects.filter(status__in=_RUNNING).filter(
        Q(lease_expires_at__lt=now)
        | Q(lease_expires_at__isnull=True, created_at__lt=unleased_since)
    )


def is_dead(message: Message, now: datetime | None = None) -> bool:
    if message.status not in _RUNNING:
        return False
    now = now or timezone.now()
    if message.lease_expires_at is not None:
        return message.lease_expires_at < now
    window = timedelta(seconds=float(app_settings.LEASE_SECONDS))
    return message.created_at is not None and message.created_at < now - window


def sweep_interrupted(now: datetime | None = None, *, turn_ids: list[str] | None = None) -> int:
    """End every dead turn (or those of ``turn_ids`` that are dead) as ``interrupted``.

    Returns how many turns it ended. The text they had persisted stays as it is.
    """
    now = now or timezone.now()
    query = dead_turns(now)
    if turn_ids is not None:
        query = query.filter(pk__in=turn_ids)
    return query.update(
        status=Message.Status.INTERRUPTED,
        error_type="interrupted",
        error_message=INTERRUPTED_MESSAGE,
        finished_at=now,
        lease_expires_at=None,
    )


async def asweep_interrupted(
    now: datetime | None = None, *, turn_ids: list[str] | None = None
) -> int:
    return await sync_to_async(sweep_interrupted)(now, turn_ids=turn_ids)


def end_orphan(
    turn_id: str,
    *,
    terminal_id: int,
    status: str = "interrupted",
    now: datetime | None = None,
) -> bool:
    """End one running turn that no process runs any more, as ``interrupted`` (its worker
    died) or ``cancelled`` (stopped while orphaned), recording its terminal event id so every
    later replay ends with the same event. Returns whether this call ended it."""
    from django.db import transaction

    from django_llmstream.replay import StreamLog

    now = now or timezone.now()
    with transaction.atomic():
        message = (
            Message.objects.select_for_update()
            .filter(pk=turn_id, status__in=_RUNNING)
            .only("pk", "stream_log")
            .first()
        )
        if message is None:
            return False
        log = StreamLog([list(run) for run in message.stream_log or []])
        if not log.runs:
            log.add(1, "s")
        interrupted = status == "interrupted"
        log.add_terminal(terminal_id, True if interrupted else None)
        fields: dict[str, object] = {
            "status": status,
            "stream_log": log.runs,
            "finished_at": now,
            "lease_expires_at": None,
        }
        if interrupted:
            fields.update(error_type="interrupted", error_message=INTERRUPTED_MESSAGE)
        else:
            fields.update(finish_reason="cancelled")
        Message.objects.filter(pk=turn_id).update(**fields)
    return True

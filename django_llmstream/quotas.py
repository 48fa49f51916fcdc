"""Per-owner quotas (``LLMSTREAM["LIMITS"]``): running turns, turn starts per minute, tokens
per day. Each refusal is a ``429`` with ``Retry-After``.

Every count lives where all workers see it, never in process memory:

- running turns are the owner's ``pending``/``streaming`` assistant rows whose lease is live
  (a turn whose worker died stops counting when its lease runs out);
- tokens are an aggregate over the owner's stored usage of the last 24 hours;
- turn starts per minute are a counter in Django's cache (``LIMITS["CACHE"]``), incremented
  atomically (``add`` then ``incr``) in a fixed one-minute window. For several workers the
  cache must be shared (Redis, Memcached, or the database cache); a ``LocMemCache`` counts
  per process (check ``llmstream.W030``).

The checks run after validation and before anything is written: a refused request leaves no
row behind.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.cache import caches
from django.db.models import Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from django_llmstream.conf import DEFAULT_LIMITS, app_settings
from django_llmstream.exceptions import RequestValidationError
from django_llmstream.models import Conversation, Message

__all__ = [
    "CONCURRENCY_RETRY_AFTER",
    "RATE_WINDOW_SECONDS",
    "QuotaExceeded",
    "check_limits",
    "check_limits_settings",
    "limits",
    "running_turns",
    "tokens_used",
]

#: The fixed window of ``REQUESTS_PER_MINUTE``, in seconds.
RATE_WINDOW_SECONDS = 60
#: ``Retry-After`` of a refusal for too many running turns: when one will have ended is not
#: known, so this is a polite pause, not a promise.
CONCURRENCY_RETRY_AFTER = 5
TOKEN_WINDOW = timedelta(days=1)
_RUNNING = (Message.Status.PENDING, Message.Status.STREAMING)


class QuotaExceeded(RequestValidationError):
    """A quota refuses the turn: ``429`` with ``Retry-After`` (seconds, at least 1)."""

    def __init__(self, message: str, *, error_type: str, retry_after: float) -> None:
        super().__init__(message, field=None, status=429)
        self.error_type = error_type
        self.retry_after = max(1, math.ceil(retry_after))
        self.headers = {"Retry-After": str(self.retry_after)}


def limits() -> dict[str, Any]:
    """``LIMITS`` with every key filled in (``None`` or missing means "off")."""
    configured = app_settings.LIMITS
    merged = dict(DEFAULT_LIMITS)
    if isinstance(configured, Mapping):
        merged.update(configured)
    return merged


def any_limit() -> bool:
    """Whether ``LIMITS`` sets any limit (the views skip building querysets when none)."""
    config = limits()
    return any(config[name] is not None for name in _COUNTS)


def running_turns(
    conversations: QuerySet[Conversation], now: datetime | None = None
) -> QuerySet[Message]:
    """The running turns of ``conversations`` that a live process vouches for."""
    now = now or timezone.now()
    unleased_since = now - timedelta(seconds=float(app_settings.LEASE_SECONDS))
    return Message.objects.filter(
        conversation__in=conversations,
        role=Message.Role.ASSISTANT,
        status__in=_RUNNING,
    ).filter(
        Q(lease_expires_at__gte=now)
        | Q(lease_expires_at__isnull=True, created_at__gte=unleased_since)
    )


def _tokens() -> Any:
    return Coalesce("input_tokens", Value(0)) + Coalesce("output_tokens", Value(0))


async def tokens_used(conversations: QuerySet[Conversation], since: datetime) -> int:
    """Input plus output tokens of the turns of ``conversations`` created since ``since``."""
    result = await Message.objects.filter(
        conversation__in=conversations, role=Message.Role.ASSISTANT, created_at__gte=since
    ).aaggregate(total=Sum(_tokens()))
    return int(result["total"] or 0)


async def _token_retry_after(
    conversations: QuerySet[Conversation], since: datetime, used: int, limit: int, now: datetime
) -> float:
    """Seconds until enough of the window's usage has aged out to be under ``limit``."""
    rows = (
        Message.objects.filter(
            conversation__in=conversations, role=Message.Role.ASSISTANT, created_at__gte=since
        )
        .annotate(tokens=_tokens())
        .filter(tokens__gt=0)
        .order_by("created_at")
        .values_list("created_at", "tokens")
    )
    async for created_at, tokens in rows:
        used -= tokens
        if used < limit:
            return (created_at + TOKEN_WINDOW - now).total_seconds()
    return TOKEN_WINDOW.total_seconds()  # pragma: no cover - the rows are what made `used`


async def _count_request(owner_key: str, limit: int, alias: str) -> None:
    """Count one turn start in the owner's current window; refuse it over ``limit``."""
    now = time.time()
    window = int(now // RATE_WINDOW_SECONDS)
    key = f"llmstream:rpm:{owner_key}:{window}"
    cache = caches[alias]
    timeout = RATE_WINDOW_SECONDS + 5
    # add() creates the counter only if it is missing and incr() is atomic in Redis, Memcached
    # and LocMemCache, so concurrent requests on several workers each get their own number.
    await cache.aadd(key, 0, timeout=timeout)
    try:
        count = await cache.aincr(key)
    except ValueError:  # evicted between add() and incr()
        await cache.aset(key, 1, timeout=timeout)
        count = 1
    if count > limit:
        raise QuotaExceeded(
            f"Too many requests: at most {limit} new answers per minute. "
            "Wait a moment before sending the next prompt.",
            error_type="rate_limited",
            retry_after=(window + 1) * RATE_WINDOW_SECONDS - now,
        )


async def check_limits(*, conversations: QuerySet[Conversation], owner_key: str) -> None:
    """Raise :class:`QuotaExceeded` if the owner of ``conversations`` (all of them, as the
    views' ``get_queryset`` gives them) may not start another turn now.

    The cheap database checks come first; the request is only counted towards
    ``REQUESTS_PER_MINUTE`` when the others let it through.
    """
    config = limits()
    concurrent = config["CONCURRENT_TURNS_PER_OWNER"]
    if concurrent is not None:
        running = await running_turns(conversations).acount()
        if running >= concurrent:
            raise QuotaExceeded(
                f"Too many answers at once: {running} of yours are still being written and "
                f"the limit is {concurrent}. Wait for one to end, or stop one.",
                error_type="too_many_running_turns",
                retry_after=CONCURRENCY_RETRY_AFTER,
            )
    per_day = config["TOKENS_PER_DAY"]
    if per_day is not None:
        now = timezone.now()
        since = now - TOKEN_WINDOW
        used = await tokens_used(conversations, since)
        if used >= per_day:
            retry_after = await _token_retry_after(conversations, since, used, per_day, now)
            raise QuotaExceeded(
                f"Daily token quota used up: {used} of {per_day} tokens in the last 24 hours.",
                error_type="token_quota_exceeded",
                retry_after=retry_after,
            )
    per_minute = config["REQUESTS_PER_MINUTE"]
    if per_minute is not None:
        await _count_request(owner_key, per_minute, str(config["CACHE"]))


# -- system checks -------------------------------------------------------------------------------

_COUNTS = ("CONCURRENT_TURNS_PER_OWNER", "REQUESTS_PER_MINUTE", "TOKENS_PER_DAY")


def check_limits_settings() -> list[checks.CheckMessage]:
    """``llmstream.E032`` (an invalid ``LIMITS``) and ``llmstream.W030`` (a per-process cache
    counting ``REQUESTS_PER_MINUTE``)."""
    configured = app_settings.LIMITS
    where = 'LLMSTREAM["LIMITS"]'
    if configured is None:
        return []
    if not isinstance(configured, Mapping):
        return [
            checks.Error(
                f"{where} must be a dict.",
                hint=f"For example {{{', '.join(f'{k!r}: None' for k in _COUNTS)}}}.",
                id="llmstream.E032",
            )
        ]
    errors: list[checks.CheckMessage] = []
    unknown = set(configured) - set(DEFAULT_LIMITS)
    if unknown:
        errors.append(
            checks.Error(
                f"{where} has unknown key(s): {', '.join(sorted(map(str, unknown)))}.",
                hint=f"It understands: {', '.join(DEFAULT_LIMITS)}.",
                id="llmstream.E032",
            )
        )
    for name in _COUNTS:
        value = configured.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            errors.append(
                checks.Error(
                    f'{where}["{name}"] = {value!r} is not a whole number >= 1 or None.',
                    hint="None switches this limit off.",
                    id="llmstream.E032",
                )
            )
    config = limits()
    if config["REQUESTS_PER_MINUTE"] is None:
        return errors
    alias = config["CACHE"]
    cache_settings = getattr(settings, "CACHES", {}) or {}
    if not isinstance(alias, str) or alias not in cache_settings:
        errors.append(
            checks.Error(
                f'{where}["CACHE"] = {alias!r} is not an alias of CACHES.',
                hint=f"Use one of: {', '.join(map(repr, cache_settings)) or 'none configured'}.",
                id="llmstream.E032",
            )
        )
        return errors
    backend = str(cache_settings[alias].get("BACKEND", ""))
    if backend.endswith("DummyCache"):
        errors.append(
            checks.Error(
                f'{where}["REQUESTS_PER_MINUTE"] is counted in the cache {alias!r}, a '
                "DummyCache, which stores nothing: the limit would never apply.",
                hint='Point LIMITS["CACHE"] at a real cache (Redis, Memcached, database).',
                id="llmstream.E032",
            )
        )
    elif backend.endswith("LocMemCache"):
        errors.append(
            checks.Warning(
                f'{where}["REQUESTS_PER_MINUTE"] is counted in the cache {alias!r}, a '
                "LocMemCache: each worker process counts on its own, so N workers allow N "
                "times the limit.",
                hint='With several workers, point LIMITS["CACHE"] at a shared cache (Redis, '
                "Memcached, or the database cache); with one process, silence llmstream.W030.",
                id="llmstream.W030",
            )
        )
    return errors

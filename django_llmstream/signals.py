"""Signals sent once per turn, after the database holds what they report.

Every signal is sent with ``sender`` the provider's class and these keyword arguments:
``turn_id`` and ``conversation_id`` (strings), ``provider`` (the alias) and ``model``.
``turn_finished``, ``turn_failed`` and ``turn_cancelled`` add ``status``, ``usage`` (a dict of
token counts, ``None`` where unknown), ``cost`` (``Decimal`` or ``None``) and ``duration_ms``;
``turn_failed`` adds ``error_type`` and ``error_message`` (an ``interrupted`` turn is a failed
one); ``turn_cancelled`` adds ``reason`` (``"stopped"``, ``"disconnected"``, ``"unwatched"`` or
``"replaced"``). Receivers may be sync or async; an exception in one is logged, never raised
into the turn.
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["turn_cancelled", "turn_failed", "turn_finished", "turn_started"]

turn_started = Signal()
turn_finished = Signal()
turn_failed = Signal()
turn_cancelled = Signal()

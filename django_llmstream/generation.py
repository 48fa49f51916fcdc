"""One asyncio task per assistant turn: provider → broker → writer.

A :class:`Generation` is independent of any HTTP request: requests only subscribe to the
broker, so a turn keeps its text when a tab closes, can be watched from several tabs, resumed
after a reload and stopped from anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.dispatch import Signal
from django.utils import timezone

from django_llmstream import signals
from django_llmstream.brokers import BaseBroker, TurnEvent, get_broker
from django_llmstream.conf import app_settings
from django_llmstream.events import (
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from django_llmstream.exceptions import LLMStreamError, OutputTooLong
from django_llmstream.models import Message
from django_llmstream.providers import BaseProvider, ChatRequest
from django_llmstream.recovery import lease_deadline
from django_llmstream.replay import StreamLog, done_data, error_data
from django_llmstream.text import StreamTextCleaner
from django_llmstream.writer import TranscriptWriter, get_writer, run_db

__all__ = ["Generation", "running_generations"]

logger = logging.getLogger("django_llmstream.generation")

#: Generations running in this process, by turn id.
_running: dict[str, Generation] = {}


def running_generations() -> dict[str, Generation]:
    return _running


class Generation:
    """Runs one turn. Create it, ``await begin()`` (publishes ``start``), then ``start()``."""

    def __init__(
        self,
        *,
        turn_id: str,
        conversation_id: str,
        provider: BaseProvider,
        request: ChatRequest,
        started_at: datetime | None = None,
        started_monotonic: float | None = None,
        cancel_when_unwatched: float | None = None,
        broker: BaseBroker | None = None,
        writer: TranscriptWriter | None = None,
        wait_for: str | None = None,
        prepare: Callable[[], Awaitable[ChatRequest]] | None = None,
    ) -> None:
        self.turn_id = turn_id
        self.conversation_id = conversation_id
        self.provider = provider
        self.request = request
        self.started_at = started_at or timezone.now()
        self.t0 = started_monotonic if started_monotonic is not None else time.monotonic()
        self.cancel_when_unwatched = cancel_when_unwatched
        self.broker = broker or get_broker()
        # A turn queued behind another of its conversation: wait for that one to end, then
        # build the request (``prepare``) from the conversation as it stands.
        self.wait_for = wait_for
        self.prepare = prepare
        self.writer = writer or get_writer()
        self.seq = 0
        self.log = StreamLog()
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._tool_calls: dict[int, dict[str, Any]] = {}
        self._text_cleaner = StreamTextCleaner()
        self._reasoning_cleaner = StreamTextCleaner()
        self.usage = Usage()
        self.finish: Finish | None = None
        self.ttft_ms: int | None = None
        self.status = "pending"
        self.cancel_reason: str | None = None
        self.task: asyncio.Task[None] | None = None
        self._consume_task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()
        # Deltas that arrived in the same turn of the event loop (one upstream read) go out
        # as one event: what is pending, of one kind ("d", "r" or "t<index>").
        self._pending_kind: str | None = None
        self._pending_parts: list[str] = []
        self._pending_head: dict[str, Any] = {}
        self._flush_handle: asyncio.Handle | None = None
        self._publish_error: Exception | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def begin(self) -> None:
        """Publish ``start`` so that the turn is known to the broker before anyone asks."""
        await self._publish(
            "start",
            {
                "conversation": self.conversation_id,
                "turn": self.turn_id,
                "provider": self.provider.alias,
                "model": self.request.model,
            },
            "s",
            None,
        )

    def start(self) -> asyncio.Task[None]:
        """Run the turn as a background task with a fresh context (no request state)."""
        _running[self.turn_id] = self
        self.loop = asyncio.get_running_loop()
        self.task = self.loop.create_task(
            self.run(), name=f"llmstream-turn-{self.turn_id}", context=contextvars.Context()
        )
        return self.task

    def cancel(self, reason: str = "stopped") -> None:
        """Stop the turn: the upstream connection is closed, the partial text kept.

        Safe to call from any thread (under WSGI a turn runs in its own event loop thread).
        """
        loop = getattr(self, "loop", None)
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if loop is not None and current is not loop and not loop.is_closed():
            loop.call_soon_threadsafe(self._cancel_now, reason)
            return
        self._cancel_now(reason)

    def _cancel_now(self, reason: str) -> None:
        if self.cancel_reason is None and not self.finished.is_set():
            self.cancel_reason = reason
            if self._consume_task is not None:
                self._consume_task.cancel()

    async def run(self) -> None:
        unregister = self.broker.on_stop(self.turn_id, lambda: self.cancel("stopped"))
        watchdog = asyncio.create_task(self._keepalive())
        error: LLMStreamError | None = None
        interrupted = False
        try:
            await _send(signals.turn_started, type(self.provider), **self._signal_args())
            self.status = "streaming"
            # The row becomes "streaming" with the next batched flush: no database round trip
            # stands between the request and the upstream call.
            self.writer.mark_dirty(self)
            self._consume_task = asyncio.create_task(self._consume())
            if self.cancel_reason is not None:
                self._consume_task.cancel()
            try:
                await self._consume_task
            except asyncio.CancelledError:
                if self.cancel_reason is None:
                    # Our own task was cancelled from outside (server shutdown).
                    interrupted = True
                    self._consume_task.cancel()
        except LLMStreamError as exc:
            error = exc
        except asyncio.CancelledError:
            interrupted = True
        except Exception as exc:
            logger.exception("Turn %s failed unexpectedly", self.turn_id)
            error = LLMStreamError("The answer could not be completed (internal error).")
            error.__cause__ = exc
        finally:
            unregister()
            watchdog.cancel()
            try:
                await self._end(error, interrupted)
            finally:
                _running.pop(self.turn_id, None)
                self.finished.set()

    async def _wait_for_previous(self, turn_id: str) -> None:
        async with self.broker.subscribe(turn_id) as subscription:
            while True:
                events = await subscription.get(1.0)
                if events and events[-1].terminal:
                    return
                if not events and await run_db(
                    lambda: Message.objects.filter(
                        pk=turn_id, status__in=Message.TERMINAL_STATUSES
                    ).exists()
                ):
                    return

    async def _consume(self) -> None:
        if self.wait_for is not None:
            await self._wait_for_previous(self.wait_for)
        if self.prepare is not None:
            self.request = await self.prepare()
        limit = app_settings.MAX_OUTPUT_CHARS
        # Characters of text, reasoning and tool call arguments this turn may still produce.
        room = None if limit is None else int(limit)
        stream = self.provider.stream(self.request)
        try:
            async for event in stream:
                if room is not None and isinstance(
                    event, TextDelta | ReasoningDelta | ToolCallDelta
                ):
                    size = _output_size(event)
                    if size > room:
                        # Keep what fits, then end the turn (the finally closes the upstream).
                        if room:
                            await self._dispatch(_cut_output(event, room))
                        logger.warning(
                            "Turn %s stopped: its output passed MAX_OUTPUT_CHARS (%d).",
                            self.turn_id,
                            limit,
                        )
                        raise OutputTooLong(
                            f"The answer was stopped after {limit} characters (MAX_OUTPUT_CHARS)."
                        )
                    room -= size
                await self._dispatch(event)
        finally:
            # Closes the upstream response at once, also on cancellation.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _dispatch(self, event: Event) -> None:
        if self._publish_error is not None:
            raise self._publish_error
        if isinstance(event, TextDelta):
            await self._on_text(event.text)
        elif isinstance(event, ReasoningDelta):
            await self._on_reasoning(event.text)
        elif isinstance(event, ToolCallDelta):
            await self._on_tool_call(event)
        elif isinstance(event, Usage):
            self.usage = self.usage.merged(event)
        elif isinstance(event, Finish):
            self.finish = event

    async def _keepalive(self) -> None:
        """Renew the lease while the turn runs (also while the upstream is silent), and
        cancel the turn once nobody has watched it for the grace period, if asked to."""
        grace = self.cancel_when_unwatched
        renew_every = float(app_settings.LEASE_SECONDS) / 3
        interval = renew_every if grace is None else min(renew_every, 1.0, max(grace / 4, 0.05))
        unwatched_since = self.t0
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            if now - renewed >= renew_every:
                renewed = now
                self.writer.mark_dirty(self)
            if grace is None:
                continue
            if await self.broker.watchers(self.turn_id) > 0:
                unwatched_since = now
            elif now - unwatched_since >= grace:
                self.cancel("unwatched")
                return

    # -- events ------------------------------------------------------------------------

    def _elapsed_ms(self) -> int:
        return max(0, int((time.monotonic() - self.t0) * 1000))

    async def _publish(
        self, event: str, data: dict[str, Any], kind: str, length: int | None
    ) -> None:
        """Publish ``event`` after what is pending, and wait until the broker has it."""
        self._flush_pending()
        self._queue(event, data, kind, length)
        await self.broker.flush(self.turn_id)

    def _queue(self, event: str, data: dict[str, Any], kind: str, length: int | None) -> None:
        self.seq += 1
        self.log.add(self.seq, kind, length)
        self.broker.publish_nowait(self.turn_id, TurnEvent(self.seq, event, data))

    def _add_pending(self, kind: str, text: str, head: dict[str, Any] | None = None) -> None:
        """Hold ``text`` until the event loop's next turn: pieces of one kind that arrive
        together (a read of several upstream events) become one event. A read of one event
        is published as soon as the stream waits for the next, with no timer in between."""
        if kind != self._pending_kind or head is not None:
            self._flush_pending()
            self._pending_kind = kind
            self._pending_head = head or {}
        self._pending_parts.append(text)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_handle = None
        try:
            self._flush_pending()
        except Exception as exc:  # a broker that failed: the stream stops at its next event
            self._publish_error = exc

    def _flush_pending(self) -> None:
        """Publish what is pending (without waiting), and keep it for the transcript."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        kind = self._pending_kind
        if kind is None:
            return
        text = "".join(self._pending_parts)
        self._pending_kind = None
        self._pending_parts = []
        if kind == "d":
            self._text.append(text)
            self._queue("delta", {"text": text}, kind, len(text))
        elif kind == "r":
            self._reasoning.append(text)
            self._queue("reasoning", {"text": text}, kind, len(text))
        else:
            head = self._pending_head
            self._tool_calls[head["index"]]["arguments"] += text
            self._queue(
                "tool_call",
                {
                    "index": head["index"],
                    "id": head.get("id"),
                    "name": head.get("name"),
                    "arguments": text,
                },
                kind,
                len(text),
            )
        # The transcript and the stream log change together: a snapshot never has text
        # that no event of the log covers.
        self.writer.mark_dirty(self)

    async def _on_text(self, raw: str) -> None:
        text = self._text_cleaner.feed(raw)
        if text:
            if self.ttft_ms is None:
                self.ttft_ms = self._elapsed_ms()
            self._add_pending("d", text)

    async def _on_reasoning(self, raw: str) -> None:
        text = self._reasoning_cleaner.feed(raw)
        if text:
            if self.ttft_ms is None:
                self.ttft_ms = self._elapsed_ms()
            self._add_pending("r", text)

    async def _on_tool_call(self, delta: ToolCallDelta) -> None:
        call = self._tool_calls.get(delta.index)
        head: dict[str, Any] | None = None
        if call is None:
            call = self._tool_calls[delta.index] = {
                "index": delta.index,
                "id": delta.id,
                "name": delta.name,
                "arguments": "",
            }
            head = {"index": delta.index, "id": call["id"], "name": call["name"]}
        else:
            call["id"] = call["id"] or delta.id
            call["name"] = call["name"] or delta.name
            if self._pending_kind != f"t{delta.index}":
                head = {"index": delta.index, "id": None, "name": None}
        self._add_pending(f"t{delta.index}", delta.arguments, head)

    # -- persistence -------------------------------------------------------------------

    @property
    def text(self) -> str:
        return "".join(self._text)

    def _tool_call_list(self) -> list[dict[str, Any]]:
        return [dict(self._tool_calls[i]) for i in sorted(self._tool_calls)]

    def snapshot(self) -> dict[str, Any]:
        """The fields of a running turn, copied so the writer thread never sees them change."""
        return {
            "status": "streaming",
            "content": "".join(self._text),
            "reasoning": "".join(self._reasoning),
            "tool_calls": self._tool_call_list(),
            "stream_log": self.log.copy(),
            "ttft_ms": self.ttft_ms,
            "lease_expires_at": lease_deadline(),
        }

    def _signal_args(self) -> dict[str, Any]:
        return {
            "turn_id": self.turn_id,
            "conversation_id": self.conversation_id,
            "provider": self.provider.alias,
            "model": self.request.model,
        }

    async def _send_end_signal(
        self,
        usage: Usage,
        cost: Decimal | None,
        duration_ms: int,
        error_type: str,
        error_message: str,
    ) -> None:
        args = {
            **self._signal_args(),
            "status": self.status,
            "usage": usage.as_dict(),
            "cost": cost,
            "duration_ms": duration_ms,
        }
        sender = type(self.provider)
        if self.status == "completed":
            await _send(signals.turn_finished, sender, **args)
        elif self.status == "cancelled":
            await _send(signals.turn_cancelled, sender, reason=self.cancel_reason, **args)
        else:
            await _send(
                signals.turn_failed,
                sender,
                error_type=error_type,
                error_message=error_message,
                **args,
            )

    async def _end(self, error: LLMStreamError | None, interrupted: bool) -> None:
        # Text held back by a cleaner (a trailing high surrogate) is flushed as U+FFFD.
        for kind, cleaner in (("d", self._text_cleaner), ("r", self._reasoning_cleaner)):
            rest = cleaner.flush()
            if rest:
                self._add_pending(kind, rest)
        try:
            self._flush_pending()
        except Exception:
            logger.exception("Could not publish the last events of turn %s", self.turn_id)
        duration_ms = self._elapsed_ms()
        usage = self.usage
        cost: Decimal | None = None
        finish_reason = ""
        error_type = ""
        error_message = ""
        if interrupted:
            self.status = "interrupted"
            error_type = "interrupted"
            error_message = "The server stopped before the answer was complete."
        elif error is not None:
            self.status = "failed"
            error_type = error.type
            error_message = error.message
        elif self.cancel_reason is not None:
            self.status = "cancelled"
            finish_reason = "cancelled"
        else:
            self.status = "completed"
            finish_reason = self.finish.reason if self.finish is not None else "stop"
        if self.status in {"completed", "cancelled", "failed"}:
            cost = self.provider.cost(self.request.model, usage)
        terminal_id = self.seq + 1
        retryable = error.retryable if error is not None else None
        self.log.add_terminal(terminal_id, retryable)
        fields: dict[str, Any] = {
            "status": self.status,
            "content": "".join(self._text),
            "reasoning": "".join(self._reasoning),
            "tool_calls": self._tool_call_list(),
            "stream_log": self.log.copy(),
            "finish_reason": finish_reason,
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cached_input_tokens": usage.cached_input_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "cost": cost,
            "ttft_ms": self.ttft_ms,
            "duration_ms": duration_ms,
            "error_type": error_type,
            "error_message": error_message,
            "finished_at": timezone.now(),
            "lease_expires_at": None,
        }
        try:
            await asyncio.shield(self.writer.finalize(self.turn_id, fields))
        except Exception:
            logger.exception("Could not save the end of turn %s", self.turn_id)
        if error_type:
            data = error_data(error_type, error_message, retryable)
            event = "error"
        else:
            data = done_data(
                finish_reason=finish_reason,
                usage=usage.as_dict(),
                cost=cost,
                ttft_ms=self.ttft_ms,
                duration_ms=duration_ms,
            )
            event = "done"
        self.seq = terminal_id
        try:
            await self.broker.flush(self.turn_id)
        except Exception:
            logger.exception("Could not publish the events of turn %s", self.turn_id)
        await self.broker.publish(self.turn_id, TurnEvent(terminal_id, event, data))
        await self._send_end_signal(usage, cost, duration_ms, error_type, error_message)
        logger.info(
            "Turn %s ended: %s%s in %d ms",
            self.turn_id,
            self.status,
            f" ({error_type})" if error_type else "",
            duration_ms,
            # For structured logging (JSON formatters): figures only, never text or keys.
            extra={
                "turn_id": self.turn_id,
                "conversation_id": self.conversation_id,
                "provider": self.provider.alias,
                "model": self.request.model,
                "status": self.status,
                "finish_reason": finish_reason or None,
                "error_type": error_type or None,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "tokens": (usage.input_tokens or 0) + (usage.output_tokens or 0),
                "cost": None if cost is None else str(cost),
                "ttft_ms": self.ttft_ms,
                "duration_ms": duration_ms,
            },
        )


def _output_size(event: TextDelta | ReasoningDelta | ToolCallDelta) -> int:
    """Characters ``event`` adds to the turn's output (for ``MAX_OUTPUT_CHARS``)."""
    return len(event.arguments if isinstance(event, ToolCallDelta) else event.text)


def _cut_output(
    event: TextDelta | ReasoningDelta | ToolCallDelta, size: int
) -> TextDelta | ReasoningDelta | ToolCallDelta:
    """``event`` with only the first ``size`` characters of its text or arguments."""
    if isinstance(event, ToolCallDelta):
        return dataclasses.replace(event, arguments=event.arguments[:size])
    return dataclasses.replace(event, text=event.text[:size])


async def _send(signal: Signal, sender: type, **kwargs: Any) -> None:
    for receiver, result in await signal.asend_robust(sender, **kwargs):
        if isinstance(result, Exception):
            logger.error(
                "A receiver of a django_llmstream signal failed: %r",
                receiver,
                exc_info=(type(result), result, result.__traceback__),
            )


_draining = False


def is_draining() -> bool:
    """Whether this process is shutting down (its running turns are being drained)."""
    return _draining


async def drain(timeout: float) -> None:
    """Shut down this process's turns: let them finish for up to ``timeout`` seconds, then end
    the rest as ``interrupted`` — saved, and their watchers told."""
    global _draining
    _draining = True
    gens = list(_running.values())
    if gens:
        logger.info("Shutting down: %d running turn(s), %.1f s to finish", len(gens), timeout)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(gen.finished.wait() for gen in gens)), max(timeout, 0)
            )
    await shutdown()


async def shutdown(timeout: float = 5.0) -> None:
    """End every running turn of this process as ``interrupted`` at once (tests, shutdown)."""
    gens = list(_running.values())
    for gen in gens:
        if gen.task is not None:
            gen.task.cancel()
    for gen in gens:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(gen.finished.wait(), timeout)

"""A test kit for projects that use django-llmstream.

- :class:`ScriptedProvider`, a provider backend that plays a script: text, reasoning, tool
  calls, usage, pauses, an error in the middle — configured in ``OPTIONS`` or, in a test, with
  :func:`script_provider`;
- :func:`run_turn` / :func:`arun_turn`, which run a turn through Django's test client and
  return a :class:`TurnResult` with the parsed events;
- :func:`parse_sse` and :func:`assert_sse_response`, which check an event stream against the
  protocol (``retry:`` first, increasing ids, compact JSON, one terminal event at the end;
  the response headers);
- a pytest plugin (:mod:`django_llmstream.pytest_plugin`, registered when the package is
  installed) with the fixtures ``llmstream_script`` and ``llmstream_settings``.

The turns run for real (a :class:`~django_llmstream.generation.Generation`, the broker, the
batched writer): only the upstream is scripted. The generation writes from its own task, so
tests that run turns need a database that other connections see:
``@pytest.mark.django_db(transaction=True)`` or Django's ``TransactionTestCase``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Literal

from django.conf import settings
from django.core import checks
from django.http.response import HttpResponseBase
from django.test import AsyncClient, Client, override_settings
from django.urls import reverse

from django_llmstream.brokers import TurnEvent
from django_llmstream.conf import DEFAULTS
from django_llmstream.events import Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from django_llmstream.exceptions import ProviderError
from django_llmstream.providers import get_provider
from django_llmstream.providers.base import BaseProvider, ChatRequest
from django_llmstream.sse import SSEParser

__all__ = [
    "Fail",
    "Pause",
    "ScriptHandle",
    "ScriptedProvider",
    "TurnResult",
    "arun_turn",
    "assert_sse_response",
    "parse_sse",
    "run_turn",
    "script_provider",
]

# -- the scripted provider ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait ``seconds`` before the next step; ``None`` waits until the turn is stopped."""

    seconds: float | None = 0.0


@dataclass(frozen=True, slots=True)
class Fail:
    """Fail the turn here, as an upstream error: an ``error`` event with this ``type``,
    ``message`` and ``retryable`` (default: what the type usually means)."""

    type: str = "upstream_error"
    message: str = "The scripted upstream failed."
    retryable: bool | None = None

    def exception(self) -> ProviderError:
        error = ProviderError(self.message, retryable=self.retryable)
        error.type = self.type
        if self.retryable is None:
            from django_llmstream.exceptions import is_retryable

            error.retryable = is_retryable(self.type)
        return error


Step = Event | Pause | Fail
_DICT_STEPS = ("text", "reasoning", "tool_call", "usage", "finish", "pause", "error")


def to_step(raw: Any) -> Step:
    """One step of a script: a string (text), an event of :mod:`django_llmstream.events`,
    :class:`Pause`, :class:`Fail`, or its dict form for settings files (``{"text": "Hi"}``,
    ``{"reasoning": "…"}``, ``{"tool_call": {"index", "id", "name", "arguments"}}``,
    ``{"usage": {"input_tokens": 3, …}}``, ``{"finish": "length"}``, ``{"pause": 0.1}``,
    ``{"error": {"type", "message", "retryable"}}``). Raises ``ValueError`` otherwise."""
    if isinstance(raw, str):
        return TextDelta(raw)
    if isinstance(raw, TextDelta | ReasoningDelta | ToolCallDelta | Usage | Finish | Pause | Fail):
        return raw
    if isinstance(raw, Mapping) and len(raw) == 1:
        ((kind, value),) = raw.items()
        try:
            if kind == "text":
                return TextDelta(str(value))
            if kind == "reasoning":
                return ReasoningDelta(str(value))
            if kind == "tool_call":
                return ToolCallDelta(**value)
            if kind == "usage":
                return Usage(**value)
            if kind == "finish":
                return Finish(str(value), str(value))
            if kind == "pause":
                return Pause(None if value is None else float(value))
            if kind == "error":
                return Fail(**value) if isinstance(value, Mapping) else Fail(message=str(value))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Script step {raw!r} is not valid: {exc}") from exc
    raise ValueError(
        f"Script step {raw!r} is not valid: use a string, an event, Pause, Fail, or a dict with "
        f"one of the keys {', '.join(_DICT_STEPS)}."
    )


class ScriptedProvider(BaseProvider):
    """A provider that plays a script instead of calling a model (for tests and demos).

    ``OPTIONS``:

    - ``SCRIPT``: the steps of every answer (see :func:`to_step`);
    - ``SCRIPTS``: a list of scripts for successive turns, the last one repeated (instead of
      ``SCRIPT``);
    - ``DELAY``: seconds before each step (default ``0``).

    Without a ``Finish`` step an answer that plays to its end finishes with ``stop``; a
    ``Fail`` step ends it with an ``error`` event, after the text streamed before it. Each
    :class:`~django_llmstream.providers.base.ChatRequest` received is kept in
    :attr:`requests`, to check what a view sent upstream.
    """

    default_base_url: ClassVar[str | None] = "scripted://offline"
    default_models: ClassVar[Sequence[str]] = ("scripted",)
    option_names: ClassVar[frozenset[str]] = frozenset({"SCRIPT", "SCRIPTS", "DELAY"})

    def __init__(self, alias: str, config: Mapping[str, Any]) -> None:
        super().__init__(alias, config)
        #: The requests this provider answered, in order.
        self.requests: list[ChatRequest] = []

    def scripts(self) -> list[list[Step]]:
        raw = self.options.get("SCRIPTS")
        if raw is None:
            raw = [self.options.get("SCRIPT", ["This is a scripted answer."])]
        if not isinstance(raw, list | tuple) or not all(isinstance(s, list | tuple) for s in raw):
            raise ValueError("SCRIPT must be a list of steps, SCRIPTS a list of such lists.")
        return [[to_step(step) for step in script] for script in raw]

    def check(self) -> list[checks.CheckMessage]:
        errors = super().check()
        where = f'LLMSTREAM["PROVIDERS"]["{self.alias}"]["OPTIONS"]'
        try:
            scripts = self.scripts()
            if not scripts:
                raise ValueError("SCRIPTS is empty.")
        except (TypeError, ValueError) as exc:
            errors.append(
                checks.Error(
                    f"{where} has an invalid script: {exc}",
                    hint='For example "SCRIPT": ["Hello", " world", {"finish": "stop"}].',
                    id="llmstream.E011",
                )
            )
        delay = self.options.get("DELAY", 0)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            errors.append(
                checks.Error(
                    f'{where}["DELAY"] = {delay!r} is not a number of seconds >= 0.',
                    id="llmstream.E011",
                )
            )
        return errors

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        scripts = self.scripts()
        script = scripts[min(len(self.requests), len(scripts) - 1)]
        self.requests.append(request)
        delay = float(self.options.get("DELAY", 0))
        finished = False
        for step in script:
            # A suspension point per step (also with DELAY 0) keeps a stop prompt.
            await asyncio.sleep(delay)
            if isinstance(step, Pause):
                if step.seconds is None:
                    await asyncio.Event().wait()  # until the turn is stopped
                await asyncio.sleep(step.seconds or 0)
            elif isinstance(step, Fail):
                raise step.exception()
            else:
                finished = finished or isinstance(step, Finish)
                yield step
        if not finished:
            yield Finish("stop", "stop")


class ScriptHandle:
    """What :func:`script_provider` returns: a context manager that adds the scripted provider
    (the default one, unless ``default=False``) while active. :attr:`requests` holds the
    requests it answered."""

    def __init__(
        self,
        steps: Sequence[Any],
        *,
        scripts: Sequence[Sequence[Any]] | None,
        alias: str,
        default: bool,
        delay: float,
        models: Sequence[str] | None,
    ) -> None:
        self.alias = alias
        options: dict[str, Any] = {"DELAY": delay}
        if scripts is not None:
            options["SCRIPTS"] = [list(s) for s in scripts]
        else:
            options["SCRIPT"] = list(steps) or ["This is a scripted answer."]
        # Fail fast, in the test, on a step the provider would refuse mid-turn.
        for script in options.get("SCRIPTS", [options.get("SCRIPT")]):
            for step in script:
                to_step(step)
        self._entry: dict[str, Any] = {
            "BACKEND": f"{__name__}.ScriptedProvider",
            "OPTIONS": options,
        }
        if models:
            self._entry["MODELS"] = list(models)
        self._default = default
        self._override: override_settings | None = None
        self._requests: list[ChatRequest] = []

    @property
    def provider(self) -> ScriptedProvider:
        provider = get_provider(self.alias)
        assert isinstance(provider, ScriptedProvider)
        return provider

    @property
    def requests(self) -> list[ChatRequest]:
        """The requests the provider answered (kept after the block ends)."""
        if self._override is not None:
            return self.provider.requests
        return self._requests

    def __enter__(self) -> ScriptHandle:
        current = dict(getattr(settings, "LLMSTREAM", None) or {})
        providers = dict(current.get("PROVIDERS") or DEFAULTS["PROVIDERS"])
        providers[self.alias] = self._entry
        current["PROVIDERS"] = providers
        if self._default:
            current["DEFAULT_PROVIDER"] = self.alias
        self._override = override_settings(LLMSTREAM=current)
        self._override.enable()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._override is not None:
            self._requests = list(self.provider.requests)
            self._override.disable()
            self._override = None


def script_provider(
    *steps: Any,
    scripts: Sequence[Sequence[Any]] | None = None,
    alias: str = "scripted",
    default: bool = True,
    delay: float = 0.0,
    models: Sequence[str] | None = None,
) -> ScriptHandle:
    """Add a :class:`ScriptedProvider` named ``alias`` to ``LLMSTREAM["PROVIDERS"]`` (and make
    it the default provider) while the ``with`` block runs::

        with script_provider("Hel", "lo", Usage(input_tokens=3, output_tokens=2)) as script:
            result = run_turn(client, prompt="Hi")
        assert result.text == "Hello"
        assert script.requests[0].messages[-1].content == "Hi"

    ``steps`` is the script of every answer, ``scripts`` one script per turn instead (the last
    repeated); see :func:`to_step` for what a step can be.
    """
    return ScriptHandle(
        steps, scripts=scripts, alias=alias, default=default, delay=delay, models=models
    )


# -- reading event streams ------------------------------------------------------------------


def parse_sse(data: bytes, *, check: bool = True) -> list[TurnEvent]:
    """The events of an event stream body (JSON format) as :class:`TurnEvent` objects.

    With ``check`` (the default) it also asserts the framing of the protocol: the stream opens
    with ``retry:``; every event has an ``id``, strictly increasing; ``data`` is one line of
    compact JSON; ``start`` comes first; and a terminal event (``done`` or ``error``), if
    any, is the last event and the only one.
    """
    parser = SSEParser()
    raw = parser.feed(data)
    parser.close()
    events = [
        TurnEvent(int(e.id) if e.id.isascii() and e.id.isdigit() else 0, e.event, e.json())
        for e in raw
    ]
    if check:
        assert data.startswith(b"retry:"), f"the stream must open with retry:, not {data[:20]!r}"
        last = 0
        for event, source in zip(events, raw, strict=True):
            assert source.id, f"event {event.event!r} has no id"
            assert event.id > last, f"ids must increase: {event.id} after {last}"
            last = event.id
            assert "\n" not in source.data, f"event {event.id}: data spans several lines"
            compact = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)
            assert source.data == compact, f"event {event.id}: data is not compact JSON"
        if events:
            assert events[0].event == "start", f"the first event is {events[0].event!r}"
        terminal = [i for i, e in enumerate(events) if e.terminal]
        assert len(terminal) <= 1, "more than one terminal event"
        assert not terminal or terminal[0] == len(events) - 1, "events after the terminal one"
    return events


def assert_sse_response(response: HttpResponseBase, status: int = 200) -> None:
    """Assert that ``response`` is an event stream as the protocol says: the status, the
    ``Content-Type``, ``Cache-Control: no-cache``, ``X-Accel-Buffering: no``, and no
    ``Connection``, ``ETag`` or ``Last-Modified`` header. The body is left unread."""
    assert response.status_code == status, (
        f"status {response.status_code}, expected {status}: {_body_preview(response)}"
    )
    content_type = response.get("Content-Type")
    assert content_type == "text/event-stream; charset=utf-8", (
        f"Content-Type {content_type!r}, expected text/event-stream; charset=utf-8"
    )
    assert response.get("Cache-Control") == "no-cache"
    assert response.get("X-Accel-Buffering") == "no"
    for name in ("Connection", "ETag", "Last-Modified"):
        assert not response.has_header(name), f"an event stream must not send {name}"


def _body_preview(response: HttpResponseBase) -> str:
    if getattr(response, "streaming", False):
        return "(streaming)"
    return bytes(getattr(response, "content", b""))[:300].decode("utf-8", "replace")


def _read_sync(response: HttpResponseBase) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)  # type: ignore[attr-defined]
    return bytes(getattr(response, "content", b""))


async def _read_async(response: HttpResponseBase) -> bytes:
    if not getattr(response, "streaming", False):
        return bytes(getattr(response, "content", b""))
    chunks = []
    async for chunk in response.streaming_content:  # type: ignore[attr-defined]
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip(response: HttpResponseBase, data: bytes) -> bytes:
    if response.get("Content-Encoding") == "gzip":
        import gzip

        return gzip.decompress(data)
    return data


# -- running a turn -------------------------------------------------------------------------


@dataclass(frozen=True)
class TurnResult:
    """What :func:`run_turn` saw. For a refused request (a JSON error, no stream), ``events``
    is empty, ``refused`` is true and ``error`` is the JSON error's
    ``{"type", "message", "field"}``."""

    status_code: int
    events: list[TurnEvent]
    #: The request's response (its body already read).
    response: HttpResponseBase = field(repr=False)
    #: The JSON error of a refused request.
    refusal: dict[str, Any] | None = None

    @property
    def refused(self) -> bool:
        return self.refusal is not None

    @property
    def start(self) -> dict[str, Any] | None:
        return next((dict(e.data) for e in self.events if e.event == "start"), None)

    @property
    def turn(self) -> str | None:
        """The turn id (the assistant ``Message``'s primary key), once ``start`` came."""
        start = self.start
        return start["turn"] if start else None

    @property
    def conversation(self) -> str | None:
        start = self.start
        return start["conversation"] if start else None

    @property
    def text(self) -> str:
        return "".join(e.data["text"] for e in self.events if e.event == "delta")

    @property
    def reasoning(self) -> str:
        return "".join(e.data["text"] for e in self.events if e.event == "reasoning")

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The complete tool calls: ``[{"index", "id", "name", "arguments"}]``."""
        calls: dict[int, dict[str, Any]] = {}
        for event in self.events:
            if event.event != "tool_call":
                continue
            index = int(event.data["index"])
            call = calls.setdefault(
                index, {"index": index, "id": None, "name": None, "arguments": ""}
            )
            call["id"] = call["id"] or event.data.get("id")
            call["name"] = call["name"] or event.data.get("name")
            call["arguments"] += event.data.get("arguments") or ""
        return [calls[i] for i in sorted(calls)]

    @property
    def done(self) -> dict[str, Any] | None:
        """The ``done`` event's data, if the turn completed (or was stopped)."""
        return next((dict(e.data) for e in self.events if e.event == "done"), None)

    @property
    def error(self) -> dict[str, Any] | None:
        """The ``error`` event's data, or the JSON error of a refused request."""
        if self.refusal is not None:
            return self.refusal
        return next((dict(e.data) for e in self.events if e.event == "error"), None)

    @property
    def finish_reason(self) -> str | None:
        done = self.done
        return done["finish_reason"] if done else None


Endpoint = Literal["stream", "turns"]


def _body(prompt: str | None, body: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(body)
    if prompt is not None:
        data["prompt"] = prompt
    return data


def _result(response: HttpResponseBase, data: bytes, check: bool) -> TurnResult:
    data = _gunzip(response, data)
    if response.get("Content-Type", "").startswith("application/json"):
        error = json.loads(data)["error"]
        return TurnResult(response.status_code, [], response, refusal=error)
    assert_sse_response(response)
    return TurnResult(response.status_code, parse_sse(data, check=check), response)


def run_turn(
    client: Client,
    prompt: str | None = None,
    *,
    endpoint: Endpoint = "stream",
    check: bool = True,
    **body: Any,
) -> TurnResult:
    """Run one turn through Django's test ``client`` and read its whole event stream.

    ``prompt`` and ``body`` (``conversation``, ``provider``, ``model``, ``system``,
    ``params``) are the request body of the protocol. It posts to ``stream/`` (the one-step
    endpoint; the only one a sync client, which goes through WSGI, can use). With
    ``check``, the stream is checked as :func:`parse_sse` and :func:`assert_sse_response` do.
    """
    if endpoint == "turns":
        created = client.post(
            reverse("llmstream:turn-create"), _body(prompt, body), content_type="application/json"
        )
        if created.status_code != 201:
            return _result(created, _read_sync(created), check)
        response = client.get(json.loads(_read_sync(created))["events_url"])
    else:
        response = client.post(
            reverse("llmstream:stream"), _body(prompt, body), content_type="application/json"
        )
    return _result(response, _read_sync(response), check)


async def arun_turn(
    client: AsyncClient,
    prompt: str | None = None,
    *,
    endpoint: Endpoint = "stream",
    check: bool = True,
    **body: Any,
) -> TurnResult:
    """:func:`run_turn` for Django's ``AsyncClient`` (ASGI): ``endpoint="turns"`` posts to
    ``turns/`` and then reads the turn's ``events/``."""
    if endpoint == "turns":
        created = await client.post(
            reverse("llmstream:turn-create"), _body(prompt, body), content_type="application/json"
        )
        if created.status_code != 201:
            return _result(created, await _read_async(created), check)
        response = await client.get(json.loads(await _read_async(created))["events_url"])
    else:
        response = await client.post(
            reverse("llmstream:stream"), _body(prompt, body), content_type="application/json"
        )
    return _result(response, await _read_async(response), check)

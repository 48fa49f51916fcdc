"""LiteLLM: every provider LiteLLM supports, behind the same events (the extra ``litellm``).

``pip install "django-llmstream[litellm]"``. The entry's ``MODELS`` are LiteLLM model names —
``"anthropic/claude-sonnet-4-5"``, ``"gemini/gemini-2.5-flash"``, ``"bedrock/…"``,
``"openai/my-model"`` with a ``BASE_URL`` for any OpenAI-compatible server — and each turn is
one ``litellm.acompletion(..., stream=True)`` call. LiteLLM turns every provider's stream into
OpenAI-shaped chunks; this backend reads those (``content``, ``reasoning_content``,
``tool_calls``, ``finish_reason`` and, with ``stream_options.include_usage``, ``usage``) into
the normalized events, and LiteLLM's exceptions into ours, scrubbed of secrets.

What this backend does itself rather than leave to LiteLLM, so that it behaves like the
others: retries (LiteLLM's and the OpenAI SDK's are switched off; ours retry only before the
first event, with ``MAX_RETRIES`` and ``RETRY_BACKOFF``), the idle and total timeouts,
closing the upstream when the stream is closed or cancelled, the cost (from ``PRICES``, never
LiteLLM's price list), and honesty about usage: LiteLLM *estimates* token counts with a
tokenizer when the provider reports none, and this backend reports none then (``null``).

``BASE_URL`` (optional) is LiteLLM's ``api_base`` and ``API_KEY`` (optional: LiteLLM also
reads the provider's usual environment variable) its ``api_key``. ``OPTIONS``:
``LITELLM_PARAMS`` (a dict of further keyword arguments for ``acompletion``, such as
``api_version``, ``aws_region_name`` or ``extra_headers``), ``STREAM_USAGE`` (default
``True``), and the timeout, retry and ``CONTEXT_BUDGET`` overrides every backend takes.

LiteLLM is imported on the first stream (in a worker thread: the import takes seconds), and
made to use the model price map it ships with instead of downloading one at import time
(``LITELLM_LOCAL_MODEL_COST_MAP``, unless the environment sets it) and not to print its
"Give Feedback" banner on errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import re
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import httpx
from django.core import checks

from django_llmstream.conf import app_settings
from django_llmstream.events import Event, Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from django_llmstream.exceptions import (
    ProviderError,
    UpstreamConnectionError,
    UpstreamHTTPError,
    UpstreamProtocolError,
    UpstreamStreamError,
    UpstreamTimeout,
)
from django_llmstream.providers.base import (
    BaseProvider,
    ChatMessage,
    ChatRequest,
    tool_call_fields,
    without_unanswered_tool_calls,
)
from django_llmstream.providers.http import (
    MAX_MESSAGE_CHARS,
    RETRYABLE_STATUSES,
    base_url_password,
    parse_retry_after,
    status_error,
    with_retries,
)
from django_llmstream.providers.openai import FINISH_REASON_MAP

__all__ = [
    "INSTALL_HINT",
    "LiteLLMProvider",
    "aclose_litellm_clients",
    "import_litellm",
    "litellm_installed",
]

logger = logging.getLogger("django_llmstream.providers")

#: What to run when LiteLLM is missing (the ImportError and check ``llmstream.E020`` say it).
INSTALL_HINT = 'pip install "django-llmstream[litellm]"'

#: ``acompletion`` arguments that this backend sets itself: neither ``LITELLM_PARAMS`` nor a
#: client's ``params`` may replace them.
RESERVED_PARAMS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "api_key",
        "api_base",
        "base_url",
        "timeout",
        "num_retries",
        "max_retries",
    }
)

# Error types/codes of an error object that another try would not fix (as in openai.py).
_PERMANENT_ERROR_MARKERS = ("invalid_request", "auth", "permission")
# Names of parameters whose values are credentials (scrubbed like API_KEY).
_SECRET_NAME = re.compile(r"(?i)(auth|key|token|secret|password|signature|cookie|credential)")
# LiteLLM's prefixes of its messages: "litellm.RateLimitError: RateLimitError: OpenAIException
# - the provider's message".
_NOISE = re.compile(
    r"^(?:(?:litellm\.)?[A-Za-z]*(?:Error|Exception|Timeout):\s*|[A-Za-z]+Exception\s+-\s+)+"
)
# Timeouts while connecting (httpx's; aiohttp's, LiteLLM's default transport): retried.
_CONNECT_TIMEOUTS = frozenset({"ConnectTimeout", "ConnectionTimeoutError", "PoolTimeout"})
_END: Any = object()
_T = TypeVar("_T")

_litellm: Any = None
_import_lock = threading.Lock()


# -- the optional import -----------------------------------------------------------------------


def litellm_installed() -> bool:
    """Whether LiteLLM can be imported (without importing it: that takes seconds)."""
    try:
        return importlib.util.find_spec("litellm") is not None
    except (ImportError, ValueError):
        return False


def import_litellm() -> Any:
    """The ``litellm`` module, imported on first use.

    Raises :class:`ImportError` naming the extra to install when LiteLLM is missing. Before
    the import, ``LITELLM_LOCAL_MODEL_COST_MAP`` defaults to ``True`` (LiteLLM would otherwise
    download its model price map from the internet while being imported); afterwards its
    debug banner is switched off.
    """
    global _litellm
    if _litellm is not None:
        return _litellm
    with _import_lock:
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            try:
                module: Any = importlib.import_module("litellm")
            except ImportError as exc:
                raise ImportError(
                    f"The LiteLLM backend needs the litellm package: {INSTALL_HINT}"
                ) from exc
            module.suppress_debug_info = True
            _litellm = module
    return _litellm


async def aclose_litellm_clients() -> None:
    """Close LiteLLM's cached HTTP clients and forget them (tests, shutdown).

    LiteLLM keeps one client per provider, key and event loop; a loop that ends with its
    clients open leaves unclosed sockets behind. Nothing happens if LiteLLM was never used.
    """
    if _litellm is None:
        return
    with contextlib.suppress(Exception):
        cleanup = importlib.import_module("litellm.llms.custom_httpx.async_client_cleanup")
        await cleanup.close_litellm_async_clients()
    cache = getattr(_litellm, "in_memory_llm_clients_cache", None)
    if cache is not None:
        with contextlib.suppress(Exception):
            cache.flush_cache()


# -- per-stream state --------------------------------------------------------------------------


@dataclass
class _State:
    usage: Usage | None = None
    finish_raw: str | None = None
    started: bool = False
    tool_calls: dict[object, int] = field(default_factory=dict)

    def tool_call_index(self, key: object) -> tuple[int, bool]:
        index = self.tool_calls.get(key)
        if index is None:
            index = self.tool_calls[key] = len(self.tool_calls)
            return index, True
        return index, False


class _ConnectTimeout(UpstreamTimeout):
    """A timeout while connecting: worth a retry (an idle timeout is not)."""


# -- the backend -------------------------------------------------------------------------------


class LiteLLMProvider(BaseProvider):
    """Any provider LiteLLM supports (``litellm.acompletion``); see the module docstring."""

    option_names: ClassVar[frozenset[str]] = frozenset({"LITELLM_PARAMS", "STREAM_USAGE"})
    #: Settings an entry may override in its ``OPTIONS`` (as for the HTTP backends).
    overridable_settings: ClassVar[frozenset[str]] = frozenset(
        {"CONNECT_TIMEOUT", "IDLE_TIMEOUT", "TOTAL_TIMEOUT", "MAX_RETRIES", "RETRY_BACKOFF"}
    )

    # -- configuration -----------------------------------------------------------------

    @property
    def litellm_params(self) -> Mapping[str, Any]:
        params = self.options.get("LITELLM_PARAMS")
        return params if isinstance(params, Mapping) else {}

    @property
    def stream_usage(self) -> bool:
        return bool(self.options.get("STREAM_USAGE", True))

    def setting(self, name: str) -> Any:
        """``name`` from this entry's ``OPTIONS`` if it overrides it, else ``LLMSTREAM``."""
        if name in self.overridable_settings and name in self.options:
            return self.options[name]
        return getattr(app_settings, name)

    def check(self) -> list[checks.CheckMessage]:
        # BASE_URL is optional: LiteLLM knows each provider's endpoint from the model name.
        errors = [e for e in super().check() if e.id != "llmstream.E007"]
        where = f'LLMSTREAM["PROVIDERS"]["{self.alias}"]'
        if not litellm_installed():
            errors.append(
                checks.Error(
                    f"{where} uses the LiteLLM backend, but LiteLLM is not installed.",
                    hint=f"Install it: {INSTALL_HINT}",
                    id="llmstream.E020",
                )
            )
        if self.base_url and not _is_http_url(self.base_url):
            errors.append(
                checks.Error(
                    f'{where}["BASE_URL"] is not an http:// or https:// URL with a host.',
                    hint="Set it to the API root LiteLLM should call (its api_base), or leave "
                    "it out to use the provider's own.",
                    id="llmstream.E011",
                )
            )
        for name in sorted(self.overridable_settings & set(self.options)):
            if not _valid_override(name, self.options[name]):
                errors.append(
                    checks.Error(
                        f'{where}["OPTIONS"]["{name}"] = {self.options[name]!r} is not valid.',
                        hint="Use a whole number >= 0."
                        if name == "MAX_RETRIES"
                        else "Use a number of seconds (> 0, or >= 0 for RETRY_BACKOFF; "
                        "TOTAL_TIMEOUT may be None).",
                        id="llmstream.E011",
                    )
                )
        params = self.options.get("LITELLM_PARAMS")
        if params is not None and not (
            isinstance(params, Mapping) and all(isinstance(k, str) for k in params)
        ):
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"]["LITELLM_PARAMS"] must be a dict of keyword arguments.',
                    hint='For example {"api_version": "2024-10-21"}.',
                    id="llmstream.E011",
                )
            )
        elif params:
            reserved = sorted(set(params) & RESERVED_PARAMS)
            if reserved:
                errors.append(
                    checks.Error(
                        f'{where}["OPTIONS"]["LITELLM_PARAMS"] sets {", ".join(reserved)}, '
                        "which the backend sets itself.",
                        hint="Use MODELS, BASE_URL, API_KEY and the timeout and retry "
                        "settings instead.",
                        id="llmstream.E011",
                    )
                )
        usage = self.options.get("STREAM_USAGE")
        if usage is not None and not isinstance(usage, bool):
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"]["STREAM_USAGE"] must be True or False.',
                    id="llmstream.E011",
                )
            )
        return errors

    # -- secrets -----------------------------------------------------------------------

    def secrets(self) -> list[str]:
        found = super().secrets()
        found += list(_secret_values(self.litellm_params))
        password = base_url_password(self.base_url)
        return [*found, password] if password else found

    def _message(self, text: str) -> str:
        """Scrub first, then cut (cutting first could leave half a key unscrubbed)."""
        text = " ".join(self.scrub(text).split())
        if len(text) > MAX_MESSAGE_CHARS + 80:
            text = text[: MAX_MESSAGE_CHARS + 80].rstrip() + "…"
        return text

    # -- the request -------------------------------------------------------------------

    def completion_kwargs(self, request: ChatRequest) -> dict[str, Any]:
        """The keyword arguments of ``litellm.acompletion`` for ``request``."""
        connect = float(self.setting("CONNECT_TIMEOUT"))
        kwargs: dict[str, Any] = {
            name: value
            for name, value in self.litellm_params.items()
            if name not in RESERVED_PARAMS
        }
        kwargs.setdefault("drop_params", True)  # params a provider lacks are dropped, not fatal
        for name, value in request.params.items():
            if name not in RESERVED_PARAMS:
                kwargs[name] = value
        kwargs.update(
            model=request.model,
            messages=[
                format_message(message)
                for message in without_unanswered_tool_calls(request.messages)
            ],
            stream=True,
            # Retries are ours (before the first event only): none in LiteLLM or the SDKs.
            num_retries=0,
            max_retries=0,
            timeout=httpx.Timeout(
                connect=connect,
                read=float(self.setting("IDLE_TIMEOUT")),
                write=connect,
                pool=connect,
            ),
        )
        if self.stream_usage:
            kwargs["stream_options"] = {"include_usage": True}
        if self._api_key:
            kwargs["api_key"] = self._api_key
        if self.base_url:
            kwargs["api_base"] = self.base_url
        return kwargs

    # -- streaming ---------------------------------------------------------------------

    async def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        litellm = await self._load()
        events = with_retries(
            lambda deadline: self._attempt(litellm, request, deadline),
            max_retries=int(self.setting("MAX_RETRIES")),
            backoff=float(self.setting("RETRY_BACKOFF")),
            total_timeout=self.setting("TOTAL_TIMEOUT"),
            is_retryable=self.is_retryable_failure,
        )
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    async def _load(self) -> Any:
        if _litellm is not None:
            return _litellm
        try:
            # The import takes seconds: not on the event loop.
            return await asyncio.to_thread(import_litellm)
        except ImportError as exc:
            failure = ProviderError(self._message(str(exc)), retryable=False)
        raise failure

    async def _attempt(
        self, litellm: Any, request: ChatRequest, deadline: float | None
    ) -> AsyncGenerator[Event, None]:
        """One ``acompletion`` call: its events up to and including the one ``Finish``."""
        state = _State()
        stream = await self._call(
            litellm, litellm.acompletion(**self.completion_kwargs(request)), deadline, state
        )
        try:
            while True:
                chunk = await self._call(litellm, _next(stream), deadline, state)
                if chunk is _END:
                    break
                for event in self.parse_chunk(chunk, state):
                    state.started = True
                    yield event
            if not _upstream_finished(stream):
                raise UpstreamConnectionError(
                    self._message(
                        f"Upstream {self.alias}: the upstream stream ended before it was complete."
                    )
                )
            if state.usage is not None and _provider_reported_usage(stream) is False:
                state.usage = None  # LiteLLM's estimate, not the provider's count
            if state.usage is not None:
                yield state.usage
            raw = state.finish_raw
            yield Finish(FINISH_REASON_MAP.get(raw or "stop", "stop"), raw)
        finally:
            # Also on cancellation and aclose(): closing LiteLLM's stream closes the upstream
            # response, which tells the provider to stop generating (and billing).
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _call(
        self, litellm: Any, awaitable: Awaitable[_T], deadline: float | None, state: _State
    ) -> _T:
        """``await awaitable`` within the idle (and total) timeout, LiteLLM's errors mapped.

        The mapped error is raised outside the ``except`` block so that LiteLLM's exception,
        whose text may quote what the upstream echoed (credentials included), is neither its
        cause nor its context."""
        loop = asyncio.get_running_loop()
        # LiteLLM's own read timeout (IDLE_TIMEOUT) normally fires first; this is the backstop
        # for providers whose client ignores it.
        idle = float(self.setting("IDLE_TIMEOUT"))
        limit = loop.time() + idle + 1.0
        if not state.started:
            limit += float(self.setting("CONNECT_TIMEOUT"))
        if deadline is not None:
            limit = min(limit, deadline)
        failure: ProviderError
        try:
            async with asyncio.timeout_at(limit):
                return await awaitable
        except ProviderError:
            raise
        except TimeoutError:
            if deadline is not None and loop.time() >= deadline:
                failure = self._total_timeout()
            else:
                failure = self._idle_timeout()
        except Exception as exc:
            failure = self.map_exception(litellm, exc, started=state.started)
        raise failure

    def parse_chunk(self, chunk: Any, state: _State) -> list[Event]:
        """The events of one LiteLLM chunk (an OpenAI ``chat.completion.chunk``; choice 0)."""
        events: list[Event] = []
        usage = _get(chunk, "usage")
        if usage is not None:
            state.usage = _usage(usage)
        for choice in _get(chunk, "choices") or ():
            if _get(choice, "index") not in (0, None):
                continue
            delta = _get(choice, "delta")
            if delta is not None:
                reasoning = _get(delta, "reasoning_content") or _get(delta, "reasoning")
                if isinstance(reasoning, str) and reasoning:
                    events.append(ReasoningDelta(reasoning))
                content = _get(delta, "content")
                if isinstance(content, str) and content:
                    events.append(TextDelta(content))
                refusal = _get(delta, "refusal")
                if isinstance(refusal, str) and refusal:
                    events.append(TextDelta(refusal))
                for position, call in enumerate(_get(delta, "tool_calls") or ()):
                    event = self._tool_call_piece(call, position, state)
                    if event is not None:
                        events.append(event)
            reason = _get(choice, "finish_reason")
            if isinstance(reason, str) and reason:
                state.finish_raw = reason
        return events

    def _tool_call_piece(self, call: Any, fallback: int, state: _State) -> ToolCallDelta | None:
        function = _get(call, "function")
        call_id = _get(call, "id")
        call_id = call_id if isinstance(call_id, str) and call_id else None
        key: object = _get(call, "index")
        if not isinstance(key, int) or isinstance(key, bool):
            known = list(state.tool_calls)
            key = ("id", call_id) if call_id else (known[-1] if known else fallback)
        index, first = state.tool_call_index(key)
        arguments = _get(function, "arguments") if function is not None else None
        if isinstance(arguments, Mapping):
            arguments = json.dumps(arguments, separators=(",", ":"))
        if not isinstance(arguments, str):
            arguments = ""
        if first:
            name = _get(function, "name") if function is not None else None
            return ToolCallDelta(
                index=index,
                arguments=arguments,
                id=call_id,
                name=name if isinstance(name, str) and name else None,
            )
        return ToolCallDelta(index=index, arguments=arguments) if arguments else None

    # -- errors ------------------------------------------------------------------------

    def is_retryable_failure(self, error: ProviderError) -> bool:
        """Whether ``error``, raised before the first event, is worth another try: as for
        the HTTP backends (statuses 408, 409, 429, 5xx; connect failures and timeouts;
        temporary error objects), never an idle timeout."""
        if isinstance(error, UpstreamHTTPError):
            return error.status_code in RETRYABLE_STATUSES
        if isinstance(error, UpstreamTimeout):
            return isinstance(error, _ConnectTimeout)
        if isinstance(error, UpstreamConnectionError | UpstreamStreamError):
            return error.retryable
        return False

    def map_exception(self, litellm: Any, exc: Exception, *, started: bool) -> ProviderError:
        """Our exception for one LiteLLM raised (``litellm.exceptions.*``, or anything its
        providers' clients let through). The message is scrubbed of secrets."""
        chain = list(_causes(exc))
        detail = _clean(str(exc)) or type(exc).__name__
        where = self.alias
        # Data that is not the provider's format (LiteLLM reports it as a connection error).
        if any(isinstance(e, json.JSONDecodeError | UnicodeDecodeError) for e in chain):
            return UpstreamProtocolError(
                self._message(f"Upstream {where} sent data it could not read: {detail}")
            )
        if any(_is_timeout(litellm, e) for e in chain):
            if any(type(e).__name__ in _CONNECT_TIMEOUTS for e in chain):
                return _ConnectTimeout(
                    self._message(
                        f"Upstream {where} did not accept a connection within "
                        f"{float(self.setting('CONNECT_TIMEOUT')):g} s."
                    )
                )
            return self._idle_timeout()
        if any(_is_transport_error(e) for e in chain):
            what = "was cut mid-stream" if started else "failed"
            return UpstreamConnectionError(
                self._message(f"The connection to upstream {where} {what}: {detail}")
            )
        bodies = [getattr(e, "body", None) for e in chain]
        body = next((b for b in bodies if isinstance(b, Mapping)), None)
        # LiteLLM's classes are not proof of an HTTP status (a missing key is an
        # "InternalServerError" 500): the upstream's own response in the chain is.
        response = _upstream_response(chain)
        synthetic = isinstance(
            exc, litellm.exceptions.APIConnectionError | litellm.exceptions.MidStreamFallbackError
        )
        if isinstance(body, Mapping) and (synthetic or response is None):
            # An error object inside the stream (OpenAI's {"error": {...}} chunk).
            return self._stream_error(body, detail)
        status = response.status_code if response is not None else None
        if status is None and not synthetic and isinstance(exc, _upstream_status_classes(litellm)):
            status = getattr(exc, "status_code", None)  # these name the upstream's status
        if isinstance(status, int) and 300 <= status < 600:
            return self._status_error(chain, status, detail)
        if synthetic:
            return UpstreamStreamError(
                self._message(f"Upstream {where} reported an error: {detail}")
            )
        # Not an answer of the upstream: configuration (a missing key, an unknown provider or
        # model prefix, a bad parameter) or LiteLLM itself. Another try would not help.
        return ProviderError(
            self._message(f"Upstream {where} failed ({type(exc).__name__}): {detail}"),
            retryable=False,
        )

    def _stream_error(self, body: Mapping[str, Any], detail: str) -> UpstreamStreamError:
        nested = body.get("error")
        error: Mapping[str, Any] = nested if isinstance(nested, Mapping) else body
        message = error.get("message")
        markers = f"{error.get('type') or ''} {error.get('code') or ''}".lower()
        permanent = any(marker in markers for marker in _PERMANENT_ERROR_MARKERS)
        text = message if isinstance(message, str) and message else detail
        return UpstreamStreamError(
            self._message(f"Upstream {self.alias} reported an error: {text}"),
            retryable=not permanent,
        )

    def _status_error(
        self, chain: list[BaseException], status: int, detail: str
    ) -> UpstreamHTTPError:
        message = self._message(f"Upstream {self.alias} answered {status}: {detail}")
        return status_error(status, message, _retry_after(chain))

    def _idle_timeout(self) -> UpstreamTimeout:
        seconds = float(self.setting("IDLE_TIMEOUT"))
        return UpstreamTimeout(
            self._message(f"No data from upstream {self.alias} for {seconds:g} s.")
        )

    def _total_timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(
            self._message(
                f"Upstream {self.alias} did not finish within TOTAL_TIMEOUT "
                f"({float(self.setting('TOTAL_TIMEOUT')):g} s)."
            )
        )

    async def aclose(self) -> None:
        """Close LiteLLM's cached clients (see :func:`aclose_litellm_clients`)."""
        await aclose_litellm_clients()


# -- helpers -----------------------------------------------------------------------------------


def format_message(message: ChatMessage) -> dict[str, Any]:
    """One message in the OpenAI shape LiteLLM takes (and translates for its providers)."""
    formatted: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        calls = []
        for call in message.tool_calls:
            call_id, name, arguments = tool_call_fields(call)
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
        formatted["tool_calls"] = calls
        if not message.content:
            formatted["content"] = None
    if message.tool_call_id:
        formatted["tool_call_id"] = message.tool_call_id
    return formatted


async def _next(stream: Any) -> Any:
    try:
        return await anext(stream)
    except StopAsyncIteration:
        return _END


def _get(obj: Any, name: str) -> Any:
    """``obj[name]`` of a dict, ``obj.name`` of LiteLLM's pydantic objects, else ``None``."""
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _usage(raw: Any) -> Usage:
    # LiteLLM reports usage in OpenAI's convention whatever the provider (prompt_tokens with
    # the cached ones, completion_tokens with the reasoning ones): ours too.
    prompt_details = _get(raw, "prompt_tokens_details")
    completion_details = _get(raw, "completion_tokens_details")
    return Usage(
        input_tokens=_int(_get(raw, "prompt_tokens")),
        output_tokens=_int(_get(raw, "completion_tokens")),
        cached_input_tokens=_int(_get(prompt_details, "cached_tokens")),
        reasoning_tokens=_int(_get(completion_details, "reasoning_tokens")),
    )


def _upstream_finished(stream: Any) -> bool:
    """Whether the provider ended the answer with a finish reason. LiteLLM adds a ``stop`` of
    its own to a stream that simply stopped (a cut connection, a crashed server); its wrapper
    remembers whether the provider sent one. Without that attribute (another LiteLLM
    version), the stream counts as finished."""
    missing = object()
    received = getattr(stream, "received_finish_reason", missing)
    if received is missing:
        return True
    return bool(received or getattr(stream, "intermittent_finish_reason", None))


def _provider_reported_usage(stream: Any) -> bool | None:
    """Whether any chunk the provider sent carried usage (``None``: cannot tell). When none
    did, LiteLLM's last chunk holds usage it *counted* with a tokenizer."""
    chunks = getattr(stream, "chunks", None)
    if not isinstance(chunks, list):
        return None
    return any(_get(chunk, "usage") is not None for chunk in chunks)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: LiteLLM's ``original_exception``, causes and contexts."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending and len(seen) < 20:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for linked in (
            getattr(current, "original_exception", None),
            current.__cause__,
            current.__context__,
        ):
            if isinstance(linked, BaseException):
                pending.append(linked)


def _is_timeout(litellm: Any, exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError | httpx.TimeoutException | litellm.exceptions.Timeout)


def _is_transport_error(exc: BaseException) -> bool:
    # httpx's transport errors; OSError covers refused and reset connections and aiohttp's
    # connector errors (LiteLLM's default transport). Timeouts were sorted out before.
    return isinstance(exc, httpx.TransportError | OSError)


def _upstream_response(chain: list[BaseException]) -> httpx.Response | None:
    """The upstream's error response, if an exception of ``chain`` carries one: httpx's
    ``HTTPStatusError`` (LiteLLM's own HTTP handlers) or the OpenAI SDK's status errors
    (LiteLLM's OpenAI-compatible providers)."""
    for error in chain:
        if isinstance(error, httpx.HTTPStatusError):
            return error.response
        response = getattr(error, "response", None)
        if (
            type(error).__module__.partition(".")[0] == "openai"
            and isinstance(response, httpx.Response)
            and isinstance(getattr(error, "status_code", None), int)
        ):
            return response
    return None


def _upstream_status_classes(litellm: Any) -> tuple[type[BaseException], ...]:
    """LiteLLM's exceptions that exist only for an upstream's status (its rate limits and
    outages), whatever transport the provider used."""
    exceptions = litellm.exceptions
    names = ("RateLimitError", "ServiceUnavailableError", "BadGatewayError")
    return tuple(getattr(exceptions, name) for name in names if hasattr(exceptions, name))


def _retry_after(chain: list[BaseException]) -> float | None:
    for error in chain:
        for headers in (
            getattr(getattr(error, "response", None), "headers", None),
            getattr(error, "litellm_response_headers", None),
        ):
            if isinstance(headers, httpx.Headers | Mapping):
                seconds = parse_retry_after(headers)
                if seconds is not None:
                    return seconds
    return None


def _clean(text: str) -> str:
    """LiteLLM's message without its class-name prefixes and its appended debug text."""
    text = text.split(" Original exception:")[0]
    text = text.split("\n")[0] if text.strip() else text
    return _NOISE.sub("", text.strip()).strip()


def _secret_values(params: Mapping[str, Any]) -> Iterator[str]:
    for name, value in params.items():
        if isinstance(value, Mapping):
            yield from _secret_values(value)
        elif isinstance(value, str) and value and _SECRET_NAME.search(str(name)):
            yield value


def _is_http_url(value: str) -> bool:
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError, ValueError):
        return False
    return url.scheme in ("http", "https") and bool(url.host)


def _valid_override(name: str, value: Any) -> bool:
    if value is None:
        return name == "TOTAL_TIMEOUT"
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    if name == "MAX_RETRIES":
        return isinstance(value, int) and value >= 0
    return value >= 0 if name == "RETRY_BACKOFF" else value > 0

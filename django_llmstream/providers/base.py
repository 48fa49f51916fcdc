"""The contract every provider backend keeps.

A backend turns a :class:`ChatRequest` into an async iterator of normalized events
(:mod:`django_llmstream.events`) and raises :mod:`django_llmstream.exceptions` errors — with
secrets already scrubbed from their messages. Backends are configured like ``CACHES``: one
``LLMSTREAM["PROVIDERS"]`` entry per alias, with a ``BACKEND`` dotted path and options.
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from django.core import checks

from django_llmstream.events import Event, Usage

__all__ = [
    "BaseProvider",
    "ChatMessage",
    "ChatRequest",
    "answered_tool_call_ids",
    "tool_call_fields",
    "without_unanswered_tool_calls",
]

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message sent upstream. ``role`` is ``system``, ``user``, ``assistant`` or ``tool``."""

    role: str
    content: str
    tool_calls: tuple[Mapping[str, Any], ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What a backend sends upstream: the conversation so far, the model and the params.

    A system prompt, if any, is the first message (role ``system``); backends whose API wants
    it elsewhere (Anthropic's top-level ``system``) move it.
    """

    messages: tuple[ChatMessage, ...]
    model: str
    params: Mapping[str, Any] = field(default_factory=dict)


def tool_call_fields(call: Mapping[str, Any]) -> tuple[str | None, str | None, str]:
    """``(id, name, arguments)`` of a stored tool call, whatever its shape: ours
    (``{"index", "id", "name", "arguments"}``, as ``Message.tool_calls`` holds it) or
    OpenAI's (``{"id", "type", "function": {"name", "arguments"}}``). ``arguments`` is the
    JSON text (an object is serialized compactly)."""
    function = call.get("function")
    source: Mapping[str, Any] = function if isinstance(function, Mapping) else call
    call_id = call.get("id")
    name = source.get("name")
    arguments = source.get("arguments", "")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
    return (
        call_id if isinstance(call_id, str) and call_id else None,
        name if isinstance(name, str) and name else None,
        arguments,
    )


def answered_tool_call_ids(messages: Sequence[ChatMessage]) -> frozenset[str]:
    """Ids of the tool calls that a later ``tool`` message answers.

    APIs that pair calls with results by id (Chat Completions, Anthropic, Responses) refuse a
    history with a call that no result follows, which is what a turn that ended in tool calls
    leaves behind when the user simply writes on: backends send only answered calls.
    """
    return frozenset(
        message.tool_call_id
        for message in messages
        if message.role == "tool" and message.tool_call_id
    )


def without_unanswered_tool_calls(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """``messages`` without the tool calls no ``tool`` message answers (see
    :func:`answered_tool_call_ids`); an assistant message left with neither text nor calls is
    dropped."""
    answered = answered_tool_call_ids(messages)
    kept: list[ChatMessage] = []
    for message in messages:
        if message.tool_calls:
            calls = tuple(c for c in message.tool_calls if tool_call_fields(c)[0] in answered)
            if len(calls) != len(message.tool_calls):
                if not calls and not message.content and message.role == "assistant":
                    continue
                message = replace(message, tool_calls=calls)
        kept.append(message)
    return kept


class BaseProvider(abc.ABC):
    """Base of every provider backend.

    Subclasses implement :meth:`stream` and keep its contract:

    - yield only :data:`django_llmstream.events.Event` objects; usage as :class:`Usage`
      (``None`` for what the provider did not report), and exactly one ``Finish`` at the end
      of a complete answer;
    - raise :class:`django_llmstream.exceptions.ProviderError` subclasses, never raw httpx or
      JSON errors, with secrets scrubbed from the message (:meth:`scrub`);
    - when the iterator is closed or its task cancelled, release the upstream connection at
      once (no reading on to the end).
    """

    #: The option ``API_KEY`` must be set (a system check says so at start-up).
    requires_api_key: ClassVar[bool] = False
    #: ``BASE_URL`` when the entry sets none; ``None`` means the option is required.
    default_base_url: ClassVar[str | None] = None
    #: Models allowed when the entry sets neither ``MODELS`` nor ``DEFAULT_MODEL``.
    default_models: ClassVar[Sequence[str]] = ()
    #: Entry keys this backend understands besides the common ones (for the unknown-key check).
    extra_options: ClassVar[frozenset[str]] = frozenset()
    #: ``OPTIONS`` keys this class reads; the check unions them along the class hierarchy.
    #: Every backend reads ``CONTEXT_BUDGET`` (:mod:`django_llmstream.context`).
    option_names: ClassVar[frozenset[str]] = frozenset({"CONTEXT_BUDGET"})

    common_options: ClassVar[frozenset[str]] = frozenset(
        {"BACKEND", "BASE_URL", "API_KEY", "MODELS", "DEFAULT_MODEL", "PRICES", "OPTIONS"}
    )

    def __init__(self, alias: str, config: Mapping[str, Any]) -> None:
        self.alias = alias
        self.config = dict(config)
        self.base_url: str | None = (config.get("BASE_URL") or self.default_base_url) or None
        if self.base_url:
            self.base_url = self.base_url.rstrip("/")
        # The key lives only here: never in repr(), str(), messages, the database or logs.
        self._api_key: str | None = config.get("API_KEY") or None
        raw_models = config.get("MODELS") or ()
        # A lone string is one model, not a list of characters (the check flags it too).
        models = [raw_models] if isinstance(raw_models, str) else list(raw_models)
        default = config.get("DEFAULT_MODEL")
        if default and default not in models:
            models.insert(0, default)
        self.models: list[str] = models or list(self.default_models)
        self.default_model: str | None = default or (self.models[0] if self.models else None)
        prices = config.get("PRICES") or {}
        self.prices: Mapping[str, Mapping[str, Any]] = prices if isinstance(prices, Mapping) else {}
        options = config.get("OPTIONS") or {}
        self.options: Mapping[str, Any] = options if isinstance(options, Mapping) else {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} alias={self.alias!r} base_url={self.base_url!r}>"

    # -- configuration -----------------------------------------------------------------

    def check(self) -> list[checks.CheckMessage]:
        """System check messages for this entry; subclasses extend it."""
        errors: list[checks.CheckMessage] = []
        where = f'LLMSTREAM["PROVIDERS"]["{self.alias}"]'
        if self.requires_api_key and not self._api_key:
            errors.append(
                checks.Error(
                    f"{where} has no API_KEY.",
                    hint=f'Set {where}["API_KEY"], e.g. from an environment variable.',
                    id="llmstream.E006",
                )
            )
        if not self.base_url:
            errors.append(
                checks.Error(
                    f"{where} has no BASE_URL.",
                    hint=f'Set {where}["BASE_URL"] to the server\'s API root.',
                    id="llmstream.E007",
                )
            )
        if not self.models:
            errors.append(
                checks.Error(
                    f"{where} allows no model.",
                    hint=f'Set {where}["MODELS"] to the list of models clients may use.',
                    id="llmstream.E008",
                )
            )
        unknown = set(self.config) - self.common_options - self.extra_options
        if unknown:
            errors.append(
                checks.Error(
                    f"{where} has unknown option(s): {', '.join(sorted(unknown))}.",
                    hint="Check the spelling against the provider's documentation.",
                    id="llmstream.E009",
                )
            )
        raw_models = self.config.get("MODELS")
        if raw_models is not None and not (
            isinstance(raw_models, list | tuple) and all(isinstance(m, str) for m in raw_models)
        ):
            errors.append(
                checks.Error(
                    f'{where}["MODELS"] must be a list of model names.',
                    hint='For example ["gpt-4o-mini", "gpt-4o"].',
                    id="llmstream.E008",
                )
            )
        errors += self._check_prices(where)
        if "CONTEXT_BUDGET" in self.options and not _is_budget(self.options["CONTEXT_BUDGET"]):
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"]["CONTEXT_BUDGET"] = '
                    f"{self.options['CONTEXT_BUDGET']!r} is not valid.",
                    hint="Use a whole number of characters >= 1, or None for no limit.",
                    id="llmstream.E011",
                )
            )
        options = self.config.get("OPTIONS")
        if options is not None and not isinstance(options, Mapping):
            errors.append(checks.Error(f'{where}["OPTIONS"] must be a dict.', id="llmstream.E017"))
        known = self.known_options()
        unknown_options = set(self.options) - known
        if unknown_options:
            errors.append(
                checks.Error(
                    f'{where}["OPTIONS"] has unknown key(s): '
                    f"{', '.join(sorted(map(str, unknown_options)))}.",
                    hint=f"{type(self).__name__} understands: "
                    f"{', '.join(sorted(known)) or 'no OPTIONS'}.",
                    id="llmstream.E017",
                )
            )
        return errors

    @classmethod
    def known_options(cls) -> frozenset[str]:
        names: set[str] = set()
        for klass in cls.__mro__:
            names |= getattr(klass, "option_names", frozenset())
            names |= getattr(klass, "overridable_settings", frozenset())
        return frozenset(names)

    def _check_prices(self, where: str) -> list[checks.CheckMessage]:
        hint = (
            'Prices are per million tokens: {"model": {"input": "0.15", "output": "0.60", '
            '"cached_input": "0.075"}}.'
        )
        prices = self.config.get("PRICES")
        if prices is None:
            return []
        if not isinstance(prices, Mapping):
            return [
                checks.Error(f'{where}["PRICES"] must be a dict.', hint=hint, id="llmstream.E010")
            ]
        errors: list[checks.CheckMessage] = []
        for model, price in prices.items():
            if not isinstance(price, Mapping):
                errors.append(
                    checks.Error(
                        f'{where}["PRICES"]["{model}"] must be a dict.',
                        hint=hint,
                        id="llmstream.E010",
                    )
                )
                continue
            for kind, value in price.items():
                if kind not in {"input", "output", "cached_input"} or not _is_decimal(value):
                    errors.append(
                        checks.Error(
                            f'{where}["PRICES"]["{model}"]["{kind}"] is not a price.',
                            hint=hint,
                            id="llmstream.E010",
                        )
                    )
        return errors

    def is_model_allowed(self, model: str) -> bool:
        return model in self.models

    @property
    def context_budget(self) -> int | None:
        """Most characters of conversation sent upstream (``OPTIONS["CONTEXT_BUDGET"]``, else
        ``LLMSTREAM["CONTEXT_BUDGET"]``); ``None``: no limit. See :mod:`django_llmstream.context`.
        """
        from django_llmstream.conf import app_settings

        value = self.options.get("CONTEXT_BUDGET", app_settings.CONTEXT_BUDGET)
        return int(value) if value is not None and _is_budget(value) else None

    # -- usage and cost ----------------------------------------------------------------

    def cost(self, model: str, usage: Usage) -> Decimal | None:
        """The cost of a turn from ``PRICES`` (per million tokens), or ``None`` if unknown."""
        price = self.prices.get(model)
        if not price or usage.input_tokens is None or usage.output_tokens is None:
            return None
        input_price = Decimal(str(price.get("input", 0)))
        cached_price = Decimal(str(price.get("cached_input", price.get("input", 0))))
        output_price = Decimal(str(price.get("output", 0)))
        cached = usage.cached_input_tokens or 0
        total = (
            (usage.input_tokens - cached) * input_price
            + cached * cached_price
            + usage.output_tokens * output_price
        )
        return (total / _MILLION).quantize(Decimal("0.00000001"))

    # -- secrets -----------------------------------------------------------------------

    def secrets(self) -> list[str]:
        """Strings that must never leave the process (API keys, secret headers)."""
        return [self._api_key] if self._api_key else []

    def scrub(self, text: str) -> str:
        """``text`` with every secret of this provider, and anything shaped like a key, hidden."""
        for secret in self.secrets():
            if secret and len(secret) >= 4:
                text = text.replace(secret, "[redacted]")
        return _KEY_SHAPES.sub("[redacted]", text)

    # -- streaming ---------------------------------------------------------------------

    @abc.abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[Event]:
        """Yield the answer to ``request`` as normalized events (see the class docstring)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release shared resources (connection pools); called at shutdown and in tests."""


# Bearer tokens and the usual key prefixes (OpenAI sk-, Anthropic sk-ant-, Groq gsk_ ...):
# scrubbed even when they are not this provider's key, e.g. echoed by an upstream error body.
_KEY_SHAPES = re.compile(
    r"(?i)\b(?:bearer\s+[A-Za-z0-9._~+/=-]{8,}|(?:sk|gsk|xai|pk|rk)[-_][A-Za-z0-9_-]{12,})"
)


def _is_budget(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def _is_decimal(value: Any) -> bool:
    try:
        Decimal(str(value))
    except (InvalidOperation, ValueError):
        return False
    return not isinstance(value, bool)

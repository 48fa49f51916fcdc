"""One exception tree for everything that can go wrong at run time.

Configuration mistakes are :class:`django.core.exceptions.ImproperlyConfigured` subclasses so
that they surface at start-up (system checks) like any other Django misconfiguration.
Every runtime error carries ``type`` (the ``error`` event's ``type``), ``retryable`` and a
message that is safe to show: providers scrub secrets before raising.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

__all__ = [
    "ERROR_TYPES",
    "InvalidBrokerConfig",
    "InvalidProviderConfig",
    "LLMStreamError",
    "OutputTooLong",
    "ProviderError",
    "RequestValidationError",
    "TurnInterrupted",
    "UpstreamAuthError",
    "UpstreamBadRequest",
    "UpstreamConnectionError",
    "UpstreamHTTPError",
    "UpstreamOverloaded",
    "UpstreamProtocolError",
    "UpstreamRateLimited",
    "UpstreamServerError",
    "UpstreamStreamError",
    "UpstreamTimeout",
    "is_retryable",
]


class LLMStreamError(Exception):
    """Base of all runtime errors of django-llmstream."""

    type: str = "internal_error"
    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable


class ProviderError(LLMStreamError):
    """The upstream provider failed; the message is already scrubbed of secrets."""

    type = "upstream_error"


class UpstreamConnectionError(ProviderError):
    """The connection to the upstream could not be opened or was cut mid-stream."""

    type = "upstream_connection"
    retryable = True


class UpstreamTimeout(ProviderError):
    """No byte from the upstream for longer than the idle (or connect) timeout."""

    type = "upstream_timeout"
    retryable = True


class UpstreamProtocolError(ProviderError):
    """The upstream sent something that is not its documented wire format."""

    type = "upstream_protocol"
    retryable = False


class UpstreamStreamError(ProviderError):
    """The upstream reported an error object inside an otherwise valid stream."""

    type = "upstream_error"
    retryable = True


class UpstreamHTTPError(ProviderError):
    """The upstream answered with an error status before the stream began."""

    type = "upstream_http_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        retryable: bool | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.status_code = status_code
        self.retry_after = retry_after


class UpstreamAuthError(UpstreamHTTPError):
    """401/403: the API key is missing, wrong or lacks access."""

    type = "upstream_auth"
    retryable = False


class UpstreamBadRequest(UpstreamHTTPError):
    """Another 4xx: the request was refused as it stands (model unknown, params invalid...)."""

    type = "upstream_bad_request"
    retryable = False


class UpstreamRateLimited(UpstreamHTTPError):
    """429: too many requests or tokens for the account."""

    type = "upstream_rate_limited"
    retryable = True


class UpstreamServerError(UpstreamHTTPError):
    """5xx: the provider failed."""

    type = "upstream_server_error"
    retryable = True


class UpstreamOverloaded(UpstreamHTTPError):
    """503/529 or an ``overloaded`` error: the provider is busy, try later."""

    type = "upstream_overloaded"
    retryable = True


class OutputTooLong(LLMStreamError):
    """The answer (text, reasoning and tool call arguments of one turn) passed
    ``MAX_OUTPUT_CHARS``: the turn was stopped there and the upstream closed."""

    type = "output_too_long"
    retryable = False


class TurnInterrupted(LLMStreamError):
    """The worker that ran the turn went away before it ended."""

    type = "interrupted"
    retryable = True


class RequestValidationError(LLMStreamError):
    """A client request is invalid; ``field`` names the offending input (or ``None``)."""

    type = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


class InvalidProviderConfig(ImproperlyConfigured):
    """An entry of ``LLMSTREAM["PROVIDERS"]`` cannot be used as it stands."""


class InvalidBrokerConfig(ImproperlyConfigured):
    """``LLMSTREAM["BROKER"]`` cannot be used as it stands."""


def _all_subclasses(cls: type[LLMStreamError]) -> list[type[LLMStreamError]]:
    found: list[type[LLMStreamError]] = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


#: ``type`` → default ``retryable`` of every known error, used when a stored failed turn is
#: replayed from the database (the row keeps the type, not the flag).
ERROR_TYPES: dict[str, bool] = {c.type: c.retryable for c in _all_subclasses(LLMStreamError)}
ERROR_TYPES["upstream_error"] = True


def is_retryable(error_type: str) -> bool:
    """Whether a turn that failed with ``error_type`` may succeed when tried again."""
    return ERROR_TYPES.get(error_type, False)

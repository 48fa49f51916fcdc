"""The only reader of ``settings.LLMSTREAM``.

Every key has a default here; :mod:`django_llmstream.checks` validates the values at start-up.
Values are read on access (not cached at import), so ``override_settings`` works in tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

__all__ = ["DEFAULTS", "DEFAULT_ALLOWED_PARAMS", "DEFAULT_LIMITS", "app_settings"]

#: Request ``params`` a client may send, with their type and range. Only these are passed
#: upstream; anything else is refused with a 400 naming ``params.<name>``.
DEFAULT_ALLOWED_PARAMS: dict[str, dict[str, Any]] = {
    "temperature": {"type": "float", "min": 0, "max": 2},
    "top_p": {"type": "float", "min": 0, "max": 1},
    "max_tokens": {"type": "int", "min": 1, "max": 1_000_000},
    "presence_penalty": {"type": "float", "min": -2, "max": 2},
    "frequency_penalty": {"type": "float", "min": -2, "max": 2},
    "seed": {"type": "int", "min": -(2**63), "max": 2**63 - 1},
}

#: Per-owner quotas (user, or anonymous visitor's session); ``None`` switches one off. See
#: :mod:`django_llmstream.quotas`.
DEFAULT_LIMITS: dict[str, Any] = {
    # Turns of one owner being written at the same time (all conversations together).
    "CONCURRENT_TURNS_PER_OWNER": None,
    # Turns one owner may start per minute (a fixed window, counted in the cache below).
    "REQUESTS_PER_MINUTE": None,
    # Input + output tokens of one owner's turns in the last 24 hours, from stored usage.
    "TOKENS_PER_DAY": None,
    # The alias of CACHES that counts REQUESTS_PER_MINUTE; shared by all workers.
    "CACHE": "default",
}

DEFAULTS: dict[str, Any] = {
    # Providers, configured like CACHES: alias -> {"BACKEND": dotted path, ...options}.
    "PROVIDERS": {"demo": {"BACKEND": "django_llmstream.providers.demo.DemoProvider"}},
    # Alias used when a request names none; None means the first entry of PROVIDERS.
    "DEFAULT_PROVIDER": None,
    # Where a turn's events travel from the generation to its watchers.
    "BROKER": {"BACKEND": "django_llmstream.brokers.memory.MemoryBroker"},
    # Seconds a finished turn's events stay in the broker for exact resume.
    "BROKER_TTL_SECONDS": 300,
    # Seconds of silence on an event stream before a ": ping" comment.
    "HEARTBEAT_SECONDS": 15.0,
    # Milliseconds sent as the SSE "retry:" reconnection delay.
    "RETRY_MS": 2000,
    # Seconds between batched transcript writes of running turns.
    "FLUSH_INTERVAL": 0.25,
    # "cancel" or "finish": what happens to a turn nobody watches any more.
    "ON_DISCONNECT": "cancel",
    # Seconds a turn may go unwatched before ON_DISCONNECT="cancel" stops it.
    "DISCONNECT_GRACE_SECONDS": 10.0,
    # Seconds a running turn's lease lasts; its process renews it every third of that. A turn
    # whose lease ran out (its worker died) is marked "interrupted".
    "LEASE_SECONDS": 30.0,
    # A prompt to a conversation whose previous answer is still being written: "reject" (409),
    # "cancel_previous" (stop that answer, then start) or "queue" (start when it has ended).
    "CONCURRENT_TURNS": "reject",
    # Seconds running turns get to finish when the server shuts down (with
    # django_llmstream.asgi.with_lifespan) before they are ended as "interrupted".
    "SHUTDOWN_DRAIN_SECONDS": 10.0,
    # Seconds to open the upstream connection.
    "CONNECT_TIMEOUT": 10.0,
    # Seconds without a byte from the upstream before the turn fails (upstream_timeout).
    "IDLE_TIMEOUT": 60.0,
    # Seconds for a whole upstream request; None means no limit (streams can be long).
    "TOTAL_TIMEOUT": None,
    # Tries after a failure before the first token (connect errors, 429, 5xx).
    "MAX_RETRIES": 2,
    # Seconds of the first retry's backoff step; doubled each time, each wait drawn between
    # the step and twice it (equal jitter). A Retry-After from the upstream replaces it.
    "RETRY_BACKOFF": 0.5,
    # Upstream connections one process may hold (httpx's default of 100 caps streams).
    "MAX_CONNECTIONS": 10_000,
    # Longest SSE event (all its lines) or NDJSON line read from an upstream, in bytes; a
    # longer one fails the turn with upstream_protocol. A provider entry may set its own.
    "MAX_UPSTREAM_EVENT_BYTES": 16 * 1024 * 1024,
    # Most characters one turn may produce (answer text + reasoning + tool call arguments);
    # past it the turn ends "failed" (output_too_long) with the text so far. None: no limit.
    "MAX_OUTPUT_CHARS": 1_000_000,
    # Most characters of conversation sent upstream per turn (system prompt and new prompt
    # always, then the newest earlier turns that fit; ~4 characters per English token). None
    # sends everything. A provider entry may set its own in OPTIONS.
    "CONTEXT_BUDGET": 200_000,
    # Longest prompt accepted, in characters.
    "MAX_PROMPT_CHARS": 32_000,
    # Largest request body accepted, in bytes (413 above).
    "MAX_BODY_BYTES": 1_048_576,
    # Let visitors who are not logged in chat; their conversations belong to their session.
    "ALLOW_ANONYMOUS": False,
    # Request params a client may set, with type and range.
    "ALLOWED_PARAMS": DEFAULT_ALLOWED_PARAMS,
    # Conversations per page of the conversations/ endpoint.
    "PAGE_SIZE": 20,
    # Hide what users and models wrote (titles, system prompts, messages, reasoning, tool
    # call arguments) in the admin, its live view and exports from staff who lack the
    # permission django_llmstream.view_message_content.
    "HIDE_CONTENT_FROM_STAFF": False,
    # Dotted path of a callable (request, action, conversation_or_none) -> bool adding the
    # site's own rule to ownership; actions "start", "view", "stop", "list". False is a 403.
    "PERMISSION": None,
    # Dotted paths of callables (request) -> user or None, tried before session
    # authentication (API tokens); a request they authenticate skips the CSRF check.
    "AUTHENTICATORS": [],
    # Per-owner quotas, each answered 429 with Retry-After (see DEFAULT_LIMITS).
    "LIMITS": DEFAULT_LIMITS,
}


class AppSettings:
    """Attribute access to ``LLMSTREAM`` with defaults: ``app_settings.FLUSH_INTERVAL``."""

    def _user(self) -> Mapping[str, Any]:
        value = getattr(settings, "LLMSTREAM", None)
        return value if isinstance(value, Mapping) else {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"LLMSTREAM has no setting {name!r}")
        return self._user().get(name, DEFAULTS[name])

    def user_keys(self) -> set[str]:
        """The keys the site set itself (unknown ones are flagged by a check)."""
        return set(self._user())

    @property
    def default_provider(self) -> str | None:
        name = self.DEFAULT_PROVIDER
        if name:
            return str(name)
        providers = self.PROVIDERS
        return next(iter(providers), None) if isinstance(providers, Mapping) else None


app_settings = AppSettings()

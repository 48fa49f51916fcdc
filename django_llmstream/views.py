"""The HTTP endpoints of PROTOCOL.md as small async class-based views.

Subclass and override the hooks to adapt them: :meth:`LLMStreamView.get_owner` and
:meth:`LLMStreamView.get_queryset` (who owns what), :meth:`TurnStartMixin.get_provider`,
:meth:`TurnStartMixin.build_messages`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractBaseUser
from django.core.handlers.wsgi import WSGIRequest
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from django_llmstream.brokers import get_broker
from django_llmstream.conf import app_settings
from django_llmstream.exceptions import RequestValidationError
from django_llmstream.generation import Generation, running_generations
from django_llmstream.models import Conversation, Message
from django_llmstream.providers import (
    BaseProvider,
    ChatMessage,
    ChatRequest,
    get_provider,
    provider_aliases,
)
from django_llmstream.replay import replay_events, terminal_event_id
from django_llmstream.responses import SSEResponse, error_response, event_stream
from django_llmstream.validation import TurnInput, parse_body, parse_last_event_id, validate_turn

__all__ = [
    "ConversationDetailView",
    "ConversationListView",
    "LLMStreamView",
    "Owner",
    "StreamView",
    "TurnCreateView",
    "TurnEventsView",
    "TurnStopView",
]


@dataclass(frozen=True, slots=True)
class Owner:
    """Who the caller is: a user, or an anonymous visitor's session."""

    user: AbstractBaseUser | None
    session_key: str | None


class _CSRFCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> HttpResponse:
        response = HttpResponse(status=403)
        response.reason_phrase = reason
        return response


def _no_view(request: HttpRequest) -> HttpResponse:  # pragma: no cover - never called
    return HttpResponse()


@method_decorator(csrf_exempt, name="dispatch")
class LLMStreamView(View):
    """Base of every endpoint: JSON errors, Django's CSRF check, ownership.

    The views are ``csrf_exempt`` for the middleware and run Django's own CSRF check
    themselves, so that a failure is answered with PROTOCOL.md's JSON error, not an HTML page.
    """

    owner: Owner

    async def dispatch(  # type: ignore[override]
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        try:
            if request.method not in {"GET", "HEAD", "OPTIONS", "TRACE"}:
                reason = self.check_csrf(request)
                if reason is not None:
                    reason = reason.rstrip(".")
                    return error_response(403, "csrf_failed", f"CSRF check failed: {reason}.")
            if (
                request.method
                and request.method.lower() in self.http_method_names
                and hasattr(self, request.method.lower())
            ):
                owner = await self.get_owner(request)
                if owner is None:
                    return error_response(403, "not_authenticated", "Log in to use this endpoint.")
                self.owner = owner
            handled = super().dispatch(request, *args, **kwargs)
            return await cast(Awaitable[HttpResponseBase], handled)
        except RequestValidationError as exc:
            return error_response(exc.status, _error_type(exc.status), exc.message, exc.field)

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        allowed = ", ".join(m.upper() for m in self.http_method_names if hasattr(self, m))
        response = error_response(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed here; use {allowed}.",
            headers={"Allow": allowed},
        )

        async def respond() -> HttpResponse:
            return response

        return respond()

    def check_csrf(self, request: HttpRequest) -> str | None:
        """The reason Django's CSRF check fails for ``request``, or ``None`` when it passes.

        Override to return ``None`` for requests your site authenticates by token.
        """
        check = _CSRFCheck(_no_view)
        check.process_request(request)
        rejected = check.process_view(request, _no_view, (), {})
        return rejected.reason_phrase if rejected is not None else None

    async def get_owner(self, request: HttpRequest) -> Owner | None:
        """The caller as an :class:`Owner`, or ``None`` when they may not use the API."""
        user = await request.auser()
        if user.is_authenticated:
            return Owner(user=user, session_key=None)
        if not app_settings.ALLOW_ANONYMOUS:
            return None
        session = getattr(request, "session", None)
        if session is None:
            return None
        if not session.session_key:
            if request.method in {"GET", "HEAD"}:
                # Nothing can belong to a visitor without a session yet.
                return Owner(user=None, session_key="")
            await session.aset("llmstream_visitor", True)
            await session.asave()
        return Owner(user=None, session_key=session_owner_key(session.session_key))

    def get_queryset(self) -> QuerySet[Conversation]:
        """The conversations the caller may see: everything else is a 404."""
        owner = self.owner
        if owner.user is not None:
            return Conversation.objects.filter(owner=owner.user)  # type: ignore[misc]
        if not owner.session_key:
            return Conversation.objects.none()
        return Conversation.objects.filter(owner__isnull=True, session_key=owner.session_key)

    def get_turn_queryset(self) -> QuerySet[Message]:
        return Message.objects.filter(
            role=Message.Role.ASSISTANT, conversation__in=self.get_queryset()
        ).select_related("conversation")

    async def get_turn(self, turn_id: uuid.UUID) -> Message:
        turn = await self.get_turn_queryset().filter(pk=turn_id).afirst()
        if turn is None:
            raise RequestValidationError("No such turn.", field="turn", status=404)
        return turn


def session_owner_key(session_key: str) -> str:
    """What ``Conversation.session_key`` holds for a visitor: a keyed hash of the session key,
    so the database and the admin never show a value that would let someone take over the
    visitor's session."""
    return salted_hmac("django_llmstream.owner", session_key, algorithm="sha256").hexdigest()


def _error_type(status: int) -> str:
    return {
        400: "invalid_request",
        403: "forbidden",
        404: "not_found",
        413: "request_too_large",
        415: "unsupported_media_type",
        429: "rate_limited",
        503: "unavailable",
    }.get(status, "error")


class TurnStartMixin(LLMStreamView):
    """Starting a turn: validation, rows, generation (shared by ``turns/`` and ``stream/``)."""

    def get_provider(self, turn: TurnInput, conversation: Conversation | None) -> BaseProvider:
        """The provider for this turn; a conversation keeps its provider unless one is named."""
        aliases = provider_aliases()
        alias = turn.provider
        if alias is None and conversation is not None and conversation.provider in aliases:
            alias = conversation.provider
        alias = alias or app_settings.default_provider
        if alias not in aliases:
            raise RequestValidationError(
                f"Unknown provider {turn.provider!r}; use one of: {', '.join(aliases)}.",
                field="provider",
            )
        return get_provider(alias)

    def get_model(
        self, turn: TurnInput, provider: BaseProvider, conversation: Conversation | None
    ) -> str:
        model = turn.model
        if (
            model is None
            and conversation is not None
            and conversation.provider == provider.alias
            and provider.is_model_allowed(conversation.model)
        ):
            model = conversation.model
        model = model or provider.default_model
        if not model or not provider.is_model_allowed(model):
            raise RequestValidationError(
                f"Model {model!r} is not allowed for provider {provider.alias!r}; "
                f"use one of: {', '.join(provider.models)}.",
                field="model",
            )
        return model

    def build_messages(
        self, conversation: Conversation, history: list[Message]
    ) -> list[ChatMessage]:
        """What is sent upstream: the system prompt, then the earlier messages in order."""
        messages: list[ChatMessage] = []
        if conversation.system_prompt:
            messages.append(ChatMessage("system", conversation.system_prompt))
        for message in history:
            if message.role == Message.Role.ASSISTANT and not (
                message.content or message.tool_calls
            ):
                continue  # a turn that produced nothing adds nothing to the context
            messages.append(
                ChatMessage(
                    message.role,
                    message.content,
                    tool_calls=tuple(message.tool_calls or ()),
                )
            )
        return messages

    async def start_turn(self, request: HttpRequest) -> Generation:
        if isinstance(request, WSGIRequest):
            # Under WSGI each request gets its own short-lived event loop: a generation could
            # not outlive it, and Django would buffer the whole stream. Say so plainly.
            raise RequestValidationError(
                "Streaming needs an ASGI server (uvicorn, daphne, hypercorn, granian); this "
                "request came through WSGI.",
                status=503,
            )
        turn = validate_turn(parse_body(request))
        conversation: Conversation | None = None
        if turn.conversation is not None:
            conversation = await self.get_queryset().filter(pk=turn.conversation).afirst()
            if conversation is None:
                raise RequestValidationError(
                    "No such conversation.", field="conversation", status=404
                )
        provider = self.get_provider(turn, conversation)
        model = self.get_model(turn, provider, conversation)
        started_monotonic = time.monotonic()
        owner = self.owner
        conversation, assistant, history = await sync_to_async(self._create_rows)(
            turn, conversation, provider.alias, model, owner
        )
        chat_request = ChatRequest(
            messages=tuple(self.build_messages(conversation, history)),
            model=model,
            params=turn.params,
        )
        grace: float | None = None
        if self.cancels_when_unwatched() and app_settings.ON_DISCONNECT == "cancel":
            grace = float(app_settings.DISCONNECT_GRACE_SECONDS)
        generation = Generation(
            turn_id=str(assistant.pk),
            conversation_id=str(conversation.pk),
            provider=provider,
            request=chat_request,
            started_at=assistant.started_at,
            started_monotonic=started_monotonic,
            cancel_when_unwatched=grace,
        )
        await generation.begin()
        generation.start()
        return generation

    def cancels_when_unwatched(self) -> bool:
        return True

    def _create_rows(
        self,
        turn: TurnInput,
        conversation: Conversation | None,
        alias: str,
        model: str,
        owner: Owner,
    ) -> tuple[Conversation, Message, list[Message]]:
        with transaction.atomic():
            if conversation is None:
                title = " ".join(turn.prompt.split())[:80]
                conversation = Conversation.objects.create(
                    owner=owner.user,  # type: ignore[misc]
                    session_key=owner.session_key or "",
                    title=title,
                    provider=alias,
                    model=model,
                    system_prompt=turn.system or "",
                )
            else:
                conversation.provider = alias
                conversation.model = model
                conversation.save(update_fields=["provider", "model", "updated_at"])
            Message.objects.create(
                conversation=conversation, role=Message.Role.USER, content=turn.prompt
            )
            history = list(
                conversation.messages.filter(role__in=["user", "assistant", "tool"]).order_by(
                    "created_at", "pk"
                )
            )
            assistant = Message.objects.create(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                status=Message.Status.PENDING,
                provider=alias,
                model=model,
                params=turn.params,
                started_at=timezone.now(),
            )
        return conversation, assistant, history


def _turn_urls(turn_id: str) -> dict[str, str]:
    return {
        "events_url": reverse("llmstream:turn-events", args=[turn_id]),
        "stop_url": reverse("llmstream:turn-stop", args=[turn_id]),
    }


class TurnCreateView(TurnStartMixin):
    """``POST turns/``: start a turn; it runs whether or not anyone watches."""

    http_method_names = ["post", "options"]

    async def post(self, request: HttpRequest) -> HttpResponse:
        generation = await self.start_turn(request)
        return JsonResponse(
            {
                "conversation": generation.conversation_id,
                "turn": generation.turn_id,
                **_turn_urls(generation.turn_id),
            },
            status=201,
        )


class StreamView(TurnStartMixin):
    """``POST stream/``: start a turn and answer with its event stream (fetch clients)."""

    http_method_names = ["post", "options"]

    def cancels_when_unwatched(self) -> bool:
        # The response itself watches: its disconnect cancels (see on_disconnect below).
        return False

    async def post(self, request: HttpRequest) -> HttpResponseBase:
        generation = await self.start_turn(request)
        on_disconnect: Callable[[], None] | None = None
        if app_settings.ON_DISCONNECT == "cancel":

            def on_disconnect() -> None:
                generation.cancel("disconnected")

        subscription = get_broker().subscribe(generation.turn_id, 0)
        return SSEResponse(
            event_stream(subscription=subscription, on_disconnect=on_disconnect), request
        )


class TurnEventsView(LLMStreamView):
    """``GET turns/<turn>/events/``: attach, resume after ``Last-Event-ID``, or replay."""

    http_method_names = ["get", "options"]

    async def get(self, request: HttpRequest, turn: uuid.UUID) -> HttpResponseBase:
        message = await self.get_turn(turn)
        after = parse_last_event_id(request)
        fmt = "html" if request.GET.get("format") == "html" else "json"
        turn_id = str(message.pk)
        broker = get_broker()
        last = await broker.last_event(turn_id)
        if last is not None:
            if last.terminal and after >= last.id:
                return HttpResponse(status=204)
            subscription = broker.subscribe(turn_id, after)
            return SSEResponse(event_stream(subscription=subscription, fmt=fmt), request)
        if not message.is_terminal and turn_id not in running_generations():
            message = await sync_to_async(_mark_interrupted)(message)
        if message.is_terminal:
            if after >= terminal_event_id(message):
                return HttpResponse(status=204)
            return SSEResponse(event_stream(replay_events(message, after), fmt=fmt), request)
        # Running here but not yet published (a race at start): watch the broker.
        return SSEResponse(
            event_stream(subscription=broker.subscribe(turn_id, after), fmt=fmt), request
        )


def _mark_interrupted(message: Message) -> Message:
    """A turn that no process runs any more ends as ``interrupted``, text kept."""
    Message.objects.filter(pk=message.pk, status__in=["pending", "streaming"]).update(
        status=Message.Status.INTERRUPTED,
        error_type="interrupted",
        error_message="The server stopped before the answer was complete.",
        finished_at=timezone.now(),
    )
    message.refresh_from_db()
    return message


class TurnStopView(LLMStreamView):
    """``POST turns/<turn>/stop/``: stop the generation wherever it runs; idempotent."""

    http_method_names = ["post", "options"]

    async def post(self, request: HttpRequest, turn: uuid.UUID) -> HttpResponse:
        message = await self.get_turn(turn)
        turn_id = str(message.pk)
        if not message.is_terminal:
            taken = await get_broker().request_stop(turn_id)
            if not taken:
                await sync_to_async(_cancel_orphan)(message)
        return JsonResponse({"turn": turn_id, "status": "stopping"}, status=202)


def _cancel_orphan(message: Message) -> None:
    # Nobody runs this turn (its process is gone): end it here, text kept.
    Message.objects.filter(pk=message.pk, status__in=["pending", "streaming"]).update(
        status=Message.Status.CANCELLED, finish_reason="cancelled", finished_at=timezone.now()
    )


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


class ConversationListView(LLMStreamView):
    """``GET conversations/``: the caller's conversations, most recently updated first."""

    http_method_names = ["get", "options"]

    async def get(self, request: HttpRequest) -> HttpResponse:
        size = int(app_settings.PAGE_SIZE)
        raw_page = request.GET.get("page", "1")
        if not raw_page.isdigit() or int(raw_page) < 1:
            raise RequestValidationError("page must be a positive whole number.", field="page")
        page = int(raw_page)
        offset = (page - 1) * size
        rows = [
            c
            async for c in self.get_queryset().order_by("-updated_at", "-pk")[
                offset : offset + size + 1
            ]
        ]
        next_url = None
        if len(rows) > size:
            rows = rows[:size]
            next_url = request.build_absolute_uri(f"{request.path}?page={page + 1}")
        return JsonResponse(
            {
                "results": [
                    {
                        "id": str(c.pk),
                        "title": c.title,
                        "provider": c.provider,
                        "model": c.model,
                        "created_at": _iso(c.created_at),
                        "updated_at": _iso(c.updated_at),
                    }
                    for c in rows
                ],
                "next": next_url,
            }
        )


class ConversationDetailView(LLMStreamView):
    """``GET conversations/<conversation>/``: one conversation with its messages in order."""

    http_method_names = ["get", "options"]

    async def get(self, request: HttpRequest, conversation: uuid.UUID) -> HttpResponse:
        found = await self.get_queryset().filter(pk=conversation).afirst()
        if found is None:
            raise RequestValidationError("No such conversation.", field="conversation", status=404)
        messages = [
            m
            async for m in found.messages.exclude(role=Message.Role.SYSTEM).order_by(
                "created_at", "pk"
            )
        ]
        return JsonResponse(
            {
                "id": str(found.pk),
                "title": found.title,
                "provider": found.provider,
                "model": found.model,
                "system_prompt": found.system_prompt,
                "created_at": _iso(found.created_at),
                "updated_at": _iso(found.updated_at),
                "messages": [
                    {
                        "id": str(m.pk),
                        "role": m.role,
                        "content": m.content,
                        "status": m.status,
                        "finish_reason": m.finish_reason,
                        "model": m.model,
                        "input_tokens": m.input_tokens,
                        "output_tokens": m.output_tokens,
                        "cost": None if m.cost is None else str(m.cost),
                        "created_at": _iso(m.created_at),
                    }
                    for m in messages
                ],
            }
        )


async def not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """Unknown URLs under the mount point answer JSON too."""
    return error_response(404, "not_found", f"No endpoint at {request.path}.")

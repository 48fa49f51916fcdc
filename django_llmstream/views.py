"""The HTTP endpoints of the protocol as small async class-based views.

Subclass and override the hooks to adapt them: :meth:`LLMStreamView.get_owner` and
:meth:`LLMStreamView.get_queryset` (who owns what), :meth:`LLMStreamView.authenticate` and
:meth:`LLMStreamView.check_permission` (the ``AUTHENTICATORS`` and ``PERMISSION`` settings),
:meth:`TurnStartMixin.get_provider`, :meth:`TurnStartMixin.build_messages`,
:meth:`TurnStartMixin.check_quota` (``LIMITS``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.core.handlers.wsgi import WSGIRequest
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import salted_hmac
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from django_llmstream import aisdk
from django_llmstream.brokers import TurnEvent, get_broker
from django_llmstream.conf import app_settings
from django_llmstream.context import context_budget, fit_context
from django_llmstream.exceptions import RequestValidationError
from django_llmstream.generation import Generation, is_draining
from django_llmstream.models import Conversation, Message
from django_llmstream.providers import (
    BaseProvider,
    ChatMessage,
    ChatRequest,
    get_provider,
    provider_aliases,
)
from django_llmstream.quotas import any_limit, check_limits
from django_llmstream.recovery import lease_deadline
from django_llmstream.replay import replay_events, terminal_event_id
from django_llmstream.responses import (
    SSEResponse,
    error_response,
    event_stream,
    replay_stream,
)
from django_llmstream.security import authenticate_request, check_body_size, has_permission
from django_llmstream.turns import (
    end_orphan_turn,
    is_orphan,
    launch,
    stop_turn,
    watch_turn,
    wsgi_event_stream,
)
from django_llmstream.validation import (
    TurnInput,
    parse_body,
    parse_last_event_id,
    readable_body,
    validate_turn,
)
from django_llmstream.writer import release_connections, run_db

__all__ = [
    "AISDKReconnectView",
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
    themselves, so that a failure is answered with the protocol's JSON error, not an HTML page.
    """

    owner: Owner

    #: How many requests of this process may do their database work at the same time.
    #: Django's ASGI handler gives each request a thread, and so a database connection, of its
    #: own: a burst of new streams opened one connection each (measured: 300 streams started
    #: within 2 s took all 100 of PostgreSQL's connections, and a third of them failed). A
    #: request gives its connection back before its slot. ``None``: no limit.
    max_concurrent_db_requests: int | None = 8

    async def dispatch(  # type: ignore[override]
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        limit = self.max_concurrent_db_requests
        if limit is None or isinstance(request, WSGIRequest):
            return await self._dispatch(request, *args, **kwargs)
        async with _db_slots(limit):
            try:
                return await self._dispatch(request, *args, **kwargs)
            finally:
                # In the request's thread, whose connection would otherwise stay open until
                # the response ends (for an event stream: the whole answer).
                await sync_to_async(release_connections)()

    async def _dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            # A token client (AUTHENTICATORS) carries its own credential, not an ambient
            # cookie: CSRF cannot forge it, so it skips the check (docs/security.rst).
            token_user = await self.authenticate(request)
            if request.method not in {"GET", "HEAD", "OPTIONS", "TRACE"}:
                # Before the CSRF check, which reads a form body to find its token.
                check_body_size(request)
                reason = None if token_user is not None else self.check_csrf(request)
                if reason is not None:
                    reason = reason.rstrip(".")
                    return await self.render_error(
                        request, 403, "csrf_failed", f"CSRF check failed: {reason}."
                    )
            if (
                request.method
                and request.method.lower() in self.http_method_names
                and hasattr(self, request.method.lower())
            ):
                owner = await self.get_owner(request)
                if owner is None:
                    return await self.render_error(
                        request, 403, "not_authenticated", "Log in to use this endpoint."
                    )
                self.owner = owner
            handled = super().dispatch(request, *args, **kwargs)
            return await cast(Awaitable[HttpResponseBase], handled)
        except PermissionDenied as exc:  # from an authenticator: a token it refuses
            message = str(exc) or "Authentication failed."
            return await self.render_error(request, 403, "not_authenticated", message)
        except RequestValidationError as exc:
            error_type = getattr(exc, "error_type", None) or _error_type(exc.status)
            response = await self.render_error(
                request, exc.status, error_type, exc.message, exc.field
            )
            for name, value in getattr(exc, "headers", {}).items():  # Retry-After of a 429
                response[name] = value
            return response

    async def render_error(
        self,
        request: HttpRequest,
        status: int,
        error_type: str,
        message: str,
        field: str | None = None,
    ) -> HttpResponse:
        """The error response: the protocol's JSON (``TurnCreateView`` also speaks HTML)."""
        return error_response(status, error_type, message, field)

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
        with readable_body():  # the check reads a form body (for its token field)
            rejected = check.process_view(request, _no_view, (), {})
        return rejected.reason_phrase if rejected is not None else None

    async def authenticate(self, request: HttpRequest) -> AbstractBaseUser | None:
        """The user one of ``AUTHENTICATORS`` vouches for (it becomes ``request.user``), or
        ``None`` for session authentication. Such a request skips the CSRF check."""
        user = await authenticate_request(request)
        if user is not None:
            token_user = cast(Any, user)

            async def auser() -> Any:
                return token_user

            request.user = token_user
            request.auser = auser
        return user

    async def check_permission(
        self, request: HttpRequest, action: str, conversation: Conversation | None
    ) -> None:
        """Refuse with ``403`` (``forbidden``) what the ``PERMISSION`` callable refuses.

        ``action`` is ``"start"``, ``"view"``, ``"stop"`` or ``"list"``; ``conversation`` is
        the caller's own (ownership is checked first), or ``None`` (a new conversation, the
        list). Override to add a rule in code instead of the setting.
        """
        if not await has_permission(request, action, conversation):
            what = {
                "start": "start an answer here",
                "view": "view this conversation",
                "stop": "stop this answer",
                "list": "list conversations",
            }.get(action, action)
            raise RequestValidationError(f"You are not allowed to {what}.", status=403)

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


_db_slot_semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _db_slots(limit: int) -> asyncio.Semaphore:
    """The running loop's semaphore for :attr:`LLMStreamView.max_concurrent_db_requests`."""
    loop = asyncio.get_running_loop()
    slots = _db_slot_semaphores.get(loop)
    if slots is None:
        slots = _db_slot_semaphores[loop] = asyncio.Semaphore(limit)
    return slots


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
        409: "turn_running",
        413: "request_too_large",
        415: "unsupported_media_type",
        429: "rate_limited",
        503: "unavailable",
    }.get(status, "error")


class TurnStartMixin(LLMStreamView):
    """Starting a turn: validation, rows, generation (shared by ``turns/`` and ``stream/``)."""

    #: The validated request of the turn being started (set by :meth:`start_turn`).
    turn_input: TurnInput

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
        """What is sent upstream: the system prompt, then the earlier messages in order, the
        oldest turns left out when they exceed the context budget (``CONTEXT_BUDGET``; see
        :mod:`django_llmstream.context`). An override that builds its own list should pass it
        through :func:`~django_llmstream.context.fit_context` too."""
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
        return fit_context(messages, context_budget(conversation.provider))

    async def start_turn(
        self, request: HttpRequest, data: Mapping[str, Any] | None = None
    ) -> Generation:
        if isinstance(request, WSGIRequest):
            # Under WSGI each request gets its own short-lived event loop: a turn could not
            # outlive it, and nothing could watch it from another request. Only the one-step
            # stream/ works there (see StreamView). Say so plainly.
            raise RequestValidationError(
                "This endpoint needs an ASGI server (uvicorn, daphne, hypercorn, granian); this "
                "request came through WSGI, where only POST stream/ works.",
                status=503,
            )
        return await launch(await self.plan_turn(request, data))

    async def plan_turn(
        self, request: HttpRequest, data: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Validate the request and write the turn's rows; returns the Generation's arguments
        (the generation itself is created by :func:`launch`, in the loop that will run it).

        ``data`` is the request body when it does not come from ``request`` itself (a
        WebSocket message, the AI SDK's body translated)."""
        turn = validate_turn(parse_body(request) if data is None else data)
        self.turn_input = turn
        conversation: Conversation | None = None
        if turn.conversation is not None:
            conversation = await self.get_queryset().filter(pk=turn.conversation).afirst()
            if conversation is None:
                raise RequestValidationError(
                    "No such conversation.", field="conversation", status=404
                )
        await self.check_permission(request, "start", conversation)
        provider = self.get_provider(turn, conversation)
        model = self.get_model(turn, provider, conversation)
        # Before _previous_running_turn, which may stop the running answer (cancel_previous).
        await self.check_quota(request, conversation)
        previous = await self._previous_running_turn(conversation)
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
        prepare = None
        if previous is not None:
            # The new turn waits for the previous one to end, then sends the conversation as
            # it stands then (with the previous answer, complete or partial).
            conversation_row, assistant_row = conversation, assistant

            async def prepare() -> ChatRequest:
                history = await run_db(lambda: self._history(conversation_row, assistant_row))
                return ChatRequest(
                    messages=tuple(self.build_messages(conversation_row, history)),
                    model=model,
                    params=turn.params,
                )

        grace: float | None = None
        if self.cancels_when_unwatched() and app_settings.ON_DISCONNECT == "cancel":
            grace = float(app_settings.DISCONNECT_GRACE_SECONDS)
        return {
            "turn_id": str(assistant.pk),
            "conversation_id": str(conversation.pk),
            "provider": provider,
            "request": chat_request,
            "started_at": assistant.started_at,
            "started_monotonic": started_monotonic,
            "cancel_when_unwatched": grace,
            "wait_for": str(previous.pk) if previous is not None else None,
            "prepare": prepare,
        }

    def cancels_when_unwatched(self) -> bool:
        return True

    async def check_quota(self, request: HttpRequest, conversation: Conversation | None) -> None:
        """Refuse the turn with ``429`` and ``Retry-After`` when the caller is over a quota of
        ``LIMITS`` (raise :class:`~django_llmstream.quotas.QuotaExceeded`). Runs after
        validation, before anything is written. Override to add quotas of your own (and call
        ``super()``); the caller's conversations are ``self.get_queryset()``."""
        if any_limit():  # the queryset alone costs a few hundred µs per turn
            await check_limits(conversations=self.get_queryset(), owner_key=self.quota_key())

    def quota_key(self) -> str:
        """Who is counted for ``REQUESTS_PER_MINUTE``: the user, or the visitor's session."""
        owner = self.owner
        if owner.user is not None:
            return f"user:{owner.user.pk}"
        return f"session:{owner.session_key or ''}"

    async def _previous_running_turn(self, conversation: Conversation | None) -> Message | None:
        """The conversation's turn that still runs, handled as ``CONCURRENT_TURNS`` says:
        ``reject`` (409), ``cancel_previous`` (stop it, then start) or ``queue`` (start when it
        has ended). Returns the turn the new one must wait for, if any."""
        if conversation is None:
            return None
        running = (
            await Message.objects.filter(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                status__in=[Message.Status.PENDING, Message.Status.STREAMING],
            )
            .order_by("-created_at")
            .afirst()
        )
        if running is None:
            return None
        broker = get_broker()
        if is_orphan(running, broker):
            await end_orphan_turn(running, broker)
            return None
        policy = app_settings.CONCURRENT_TURNS
        if policy == "reject":
            raise RequestValidationError(
                "An answer in this conversation is still being written: stop it or wait for it "
                "to end before sending the next prompt.",
                field="conversation",
                status=409,
            )
        if policy == "cancel_previous":
            taken = await broker.request_stop(str(running.pk))
            if not taken:
                await end_orphan_turn(running, broker, status="cancelled")
        return running

    @staticmethod
    def _history(conversation: Conversation, assistant: Message) -> list[Message]:
        """The messages before ``assistant``, in order."""
        return list(
            conversation.messages.filter(
                role__in=["user", "assistant", "tool"], created_at__lte=assistant.created_at
            )
            .exclude(pk=assistant.pk)
            .order_by("created_at", "pk")
        )

    def _create_rows(
        self,
        turn: TurnInput,
        conversation: Conversation | None,
        alias: str,
        model: str,
        owner: Owner,
    ) -> tuple[Conversation, Message, list[Message]]:
        with transaction.atomic():
            new = conversation is None
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
            # A new conversation's history is its prompt alone: no query needed.
            history = (
                []
                if new
                else list(
                    conversation.messages.filter(role__in=["user", "assistant", "tool"]).order_by(
                        "created_at", "pk"
                    )
                )
            )
            prompt = Message(conversation=conversation, role=Message.Role.USER, content=turn.prompt)
            assistant = Message(
                conversation=conversation,
                role=Message.Role.ASSISTANT,
                status=Message.Status.PENDING,
                provider=alias,
                model=model,
                params=turn.params,
                started_at=timezone.now(),
                lease_expires_at=lease_deadline(),
            )
            # One INSERT for both (the ORM compiles an INSERT of Message's fields in ~0.6 ms);
            # created_at is set per row in this order, so the prompt sorts first.
            Message.objects.bulk_create([prompt, assistant])
        return conversation, assistant, [*history, prompt]


def _turn_urls(turn_id: str) -> dict[str, str]:
    return {
        "events_url": reverse("llmstream:turn-events", args=[turn_id]),
        "stop_url": reverse("llmstream:turn-stop", args=[turn_id]),
    }


def _wants_html(request: HttpRequest) -> bool:
    return request.GET.get("format") == "html"


class TurnCreateView(TurnStartMixin):
    """``POST turns/``: start a turn; it runs whether or not anyone watches.

    With ``?format=html`` (htmx forms) the answer is an HTML fragment instead of JSON: the
    template ``django_llmstream/htmx/turn.html`` (the prompt and an answer that connects to
    the turn's ``events/?format=html``), and errors as ``django_llmstream/htmx/error.html``
    with the same status codes.
    """

    http_method_names = ["post", "options"]
    turn_template_name = "django_llmstream/htmx/turn.html"
    error_template_name = "django_llmstream/htmx/error.html"

    async def render_error(
        self,
        request: HttpRequest,
        status: int,
        error_type: str,
        message: str,
        field: str | None = None,
    ) -> HttpResponse:
        if not _wants_html(request):
            return await super().render_error(request, status, error_type, message, field)
        context = {"type": error_type, "message": message, "field": field, "status": status}
        content = await sync_to_async(render_to_string)(self.error_template_name, context)
        response = HttpResponse(content, status=status)
        # The page's llmstream-htmx.js swaps error fragments into the form's error box.
        response["X-LLMStream-Error"] = error_type
        response["HX-Reswap"] = "innerHTML"
        return response

    async def post(self, request: HttpRequest) -> HttpResponse:
        generation = await self.start_turn(request)
        if _wants_html(request):
            context = {
                "turn": generation.turn_id,
                "conversation": generation.conversation_id,
                "prompt": self.turn_input.prompt,
                "events_url": reverse("llmstream:turn-events", args=[generation.turn_id])
                + "?format=html",
                "stop_url": reverse("llmstream:turn-stop", args=[generation.turn_id]),
            }
            content = await sync_to_async(render_to_string)(
                self.turn_template_name, context, request
            )
            response = HttpResponse(content, status=201)
            response["X-LLMStream-Conversation"] = generation.conversation_id
            response["X-LLMStream-Turn"] = generation.turn_id
            return response
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
        if _wants_ai_sdk(request):
            return await self.post_ai_sdk(request)
        if isinstance(request, WSGIRequest):
            plan = await self.plan_turn(request)
            return SSEResponse(wsgi_event_stream(plan), request)
        generation = await self.start_turn(request)
        return self.stream_response(request, generation)

    async def post_ai_sdk(self, request: HttpRequest) -> HttpResponseBase:
        """``?format=ai-sdk``: the body of the AI SDK's ``DefaultChatTransport``, answered with
        its UI message stream (:mod:`django_llmstream.aisdk`). Its chat ``id`` continues the
        caller's conversation with that id, or the one an earlier request of that chat
        started; any other id starts a new conversation, which remembers it."""
        chat_id, body = aisdk.turn_body(parse_body(request))
        conversation = None
        if chat_id is not None:
            conversation = await conversation_for_chat(self.get_queryset(), chat_id)
            if conversation is not None:
                body["conversation"] = str(conversation.pk)
        plan = await self.plan_turn(request, body)
        if chat_id is not None and conversation is None and chat_id != plan["conversation_id"]:
            await Conversation.objects.filter(pk=plan["conversation_id"]).aupdate(
                metadata={aisdk.AI_SDK_CHAT_KEY: chat_id}
            )
        encoder = aisdk.UIMessageStreamEncoder()
        if isinstance(request, WSGIRequest):
            return _ai_sdk(SSEResponse(wsgi_event_stream(plan, encoder), request))
        return _ai_sdk(self.stream_response(request, await launch(plan), encoder))

    def stream_response(
        self,
        request: HttpRequest,
        generation: Generation,
        encoder: Callable[[list[TurnEvent]], bytes] | None = None,
    ) -> SSEResponse:
        """The response of ``stream/``: the turn's events; a client that leaves cancels it."""
        on_disconnect: Callable[[], None] | None = None
        if app_settings.ON_DISCONNECT == "cancel":

            def on_disconnect() -> None:
                # A server that drains its turns at shutdown closes their responses too:
                # that is not the client leaving (the drain decides the turn's end).
                if not is_draining():
                    generation.cancel("disconnected")

        subscription = get_broker().subscribe(generation.turn_id, 0)
        return SSEResponse(
            event_stream(subscription=subscription, on_disconnect=on_disconnect, encoder=encoder),
            request,
        )


def _wants_ai_sdk(request: HttpRequest) -> bool:
    return request.GET.get("format") == "ai-sdk"


def _ai_sdk(response: SSEResponse) -> SSEResponse:
    response[aisdk.HEADER_NAME] = aisdk.HEADER_VALUE
    return response


async def conversation_for_chat(
    queryset: QuerySet[Conversation], chat_id: str
) -> Conversation | None:
    """The conversation of ``queryset`` (the caller's) that an AI SDK chat id names: the one
    whose id it is, else the newest one started by a request of that chat."""
    try:
        by_id = await queryset.filter(pk=uuid.UUID(chat_id)).afirst()
    except ValueError:
        by_id = None
    if by_id is not None:
        return by_id
    lookup = {f"metadata__{aisdk.AI_SDK_CHAT_KEY}": chat_id}
    return await queryset.filter(**lookup).order_by("-created_at", "-pk").afirst()


class TurnEventsView(LLMStreamView):
    """``GET turns/<turn>/events/``: attach, resume after ``Last-Event-ID``, or replay."""

    http_method_names = ["get", "options"]

    async def get(self, request: HttpRequest, turn: uuid.UUID) -> HttpResponseBase:
        message = await self.get_turn(turn)
        await self.check_permission(request, "view", message.conversation)
        after = parse_last_event_id(request)
        fmt = "html" if request.GET.get("format") == "html" else "json"
        encoder = None
        if _wants_ai_sdk(request):
            # The AI SDK rebuilds a message from its whole stream and sends no Last-Event-ID.
            after, encoder = 0, aisdk.UIMessageStreamEncoder()
        if isinstance(request, WSGIRequest):
            broker = get_broker()
            if not message.is_terminal and is_orphan(message, broker):
                message = await end_orphan_turn(message, broker)
            if not message.is_terminal:
                raise RequestValidationError(
                    "Watching a running turn needs an ASGI server; this request came through WSGI.",
                    status=503,
                )
            # Under WSGI a finished turn is replayed from the database, which holds all of
            # it: the broker's events belong to another request's event loop.
            if after >= terminal_event_id(message):
                return HttpResponse(status=204)
            events = replay_events(message, after)
            response = SSEResponse(replay_stream(events, fmt, encoder), request)
            return _ai_sdk(response) if encoder is not None else response
        watch = await watch_turn(message, after)
        if watch is None:
            return HttpResponse(status=204)
        response = SSEResponse(
            event_stream(
                watch.events,
                watch.subscription,
                fmt=fmt,
                on_idle=watch.on_idle,
                encoder=encoder,
            ),
            request,
        )
        return _ai_sdk(response) if encoder is not None else response


class AISDKReconnectView(LLMStreamView):
    """``GET stream/<chat>/stream``: the AI SDK's reconnect route (``DefaultChatTransport``
    appends ``/<chatId>/stream`` to its ``api`` URL to resume). ``204`` when the chat's
    conversation has no running turn, else that turn's whole UI message stream."""

    http_method_names = ["get", "options"]

    async def get(self, request: HttpRequest, chat: str) -> HttpResponseBase:
        conversation = await conversation_for_chat(self.get_queryset(), chat)
        if conversation is None:
            return HttpResponse(status=204)
        await self.check_permission(request, "view", conversation)
        message = (
            await Message.objects.filter(conversation=conversation, role=Message.Role.ASSISTANT)
            .select_related("conversation")
            .order_by("-created_at", "-pk")
            .afirst()
        )
        if message is None or message.is_terminal:
            return HttpResponse(status=204)
        if isinstance(request, WSGIRequest):
            raise RequestValidationError(
                "Watching a running turn needs an ASGI server; this request came through WSGI.",
                status=503,
            )
        if is_orphan(message, get_broker()):
            await end_orphan_turn(message, get_broker())
            return HttpResponse(status=204)
        watch = await watch_turn(message, 0)
        if watch is None:
            return HttpResponse(status=204)
        encoder = aisdk.UIMessageStreamEncoder()
        return _ai_sdk(
            SSEResponse(
                event_stream(
                    watch.events, watch.subscription, on_idle=watch.on_idle, encoder=encoder
                ),
                request,
            )
        )


class TurnStopView(LLMStreamView):
    """``POST turns/<turn>/stop/``: stop the generation wherever it runs; idempotent."""

    http_method_names = ["post", "options"]

    async def post(self, request: HttpRequest, turn: uuid.UUID) -> HttpResponse:
        message = await self.get_turn(turn)
        await self.check_permission(request, "stop", message.conversation)
        turn_id = str(message.pk)
        await stop_turn(message)
        return JsonResponse({"turn": turn_id, "status": "stopping"}, status=202)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


class ConversationListView(LLMStreamView):
    """``GET conversations/``: the caller's conversations, most recently updated first."""

    http_method_names = ["get", "options"]

    async def get(self, request: HttpRequest) -> HttpResponse:
        await self.check_permission(request, "list", None)
        size = int(app_settings.PAGE_SIZE)
        raw_page = request.GET.get("page", "1")
        if not (raw_page.isascii() and raw_page.isdigit()) or int(raw_page) < 1:
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
        await self.check_permission(request, "view", found)
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

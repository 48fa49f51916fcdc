"""The site's own rules for who may do what: ``AUTHENTICATORS`` and ``PERMISSION``.

Both settings name plain callables by dotted path, so a site adds token authentication or a
permission rule without subclassing the views:

- an *authenticator* is ``(request) -> user or None``. The views try each in order before
  session authentication; the first user returned is the caller. Such a request skips the
  CSRF check: it proves who it is with a credential it carries itself (an ``Authorization``
  header), not with an ambient one the browser adds to every request (the session cookie),
  which is what CSRF exploits. An authenticator must therefore never look at cookies.
  ``None`` means "not mine": the next authenticator, then the session, is tried. Raising
  :class:`~django.core.exceptions.PermissionDenied` refuses the request (``403``,
  ``not_authenticated``), e.g. for an unknown token.
- the *permission* callable is ``(request, action, conversation_or_none) -> bool`` with
  ``action`` one of :data:`ACTIONS`. It is asked after ownership (a conversation that is not
  the caller's is a ``404`` before any rule runs), so it only ever sees the caller's own
  conversations; ``False`` is a ``403`` (``forbidden``).

Either may be a coroutine function; a plain function runs in a thread (``sync_to_async``), so
it may use the ORM.

Also here: :func:`check_body_size`, the ``MAX_BODY_BYTES`` gate that runs before the CSRF
check reads a form body.
"""

from __future__ import annotations

import functools
import inspect
import io
from collections.abc import Callable, Sequence
from typing import Any

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.contrib.auth.models import AbstractBaseUser
from django.core import checks
from django.http import HttpRequest
from django.utils.module_loading import import_string

from django_llmstream.conf import app_settings
from django_llmstream.exceptions import RequestValidationError

__all__ = [
    "ACTIONS",
    "authenticate_request",
    "call_hook",
    "check_body_size",
    "check_security_settings",
    "has_permission",
]

#: What the ``PERMISSION`` callable is asked about: starting a turn (``conversation`` is
#: ``None`` for a new conversation), viewing a conversation or a turn's events, stopping a
#: turn, listing the caller's conversations (``conversation`` is ``None``).
ACTIONS = ("start", "view", "stop", "list")


@functools.lru_cache(maxsize=64)
def _load(path: str) -> Callable[..., Any]:
    func = import_string(path)
    if not callable(func):
        raise TypeError(f"{path} is not callable")
    return func  # type: ignore[no-any-return]


def _is_async(func: Callable[..., Any]) -> bool:
    return iscoroutinefunction(func) or iscoroutinefunction(getattr(func, "__call__", None))  # noqa: B004


async def call_hook(func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)``: awaited if it is a coroutine function, else run in a thread (it may use
    the ORM, which refuses to run in the event loop)."""
    if _is_async(func):
        return await func(*args)
    result = await sync_to_async(func)(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


async def authenticate_request(request: HttpRequest) -> AbstractBaseUser | None:
    """The user the first of ``AUTHENTICATORS`` vouches for, or ``None``.

    :class:`~django.core.exceptions.PermissionDenied` raised by an authenticator propagates
    (the views answer ``403``).
    """
    for path in app_settings.AUTHENTICATORS or ():
        user = await call_hook(_load(path), request)
        if user is not None and getattr(user, "is_authenticated", False):
            return user  # type: ignore[no-any-return]
    return None


async def has_permission(request: HttpRequest, action: str, conversation: Any) -> bool:
    """Whether the site's ``PERMISSION`` callable allows ``action`` (always, without one)."""
    path = app_settings.PERMISSION
    if not path:
        return True
    return bool(await call_hook(_load(path), request, action, conversation))


def check_body_size(request: HttpRequest) -> None:
    """Refuse a body over ``MAX_BODY_BYTES`` with ``413`` before anything reads it.

    ``Content-Length`` is checked first. A chunked body has none: Django's ASGI handler has
    already spooled it into a temporary file (in memory up to ``FILE_UPLOAD_MAX_MEMORY_SIZE``,
    on disk above), so its real size is known without reading it into memory. Without this,
    the CSRF check of a form post would read a body of any size into memory (and one over
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` would fail as Django's HTML ``400``, not our ``413``).
    """
    limit = int(app_settings.MAX_BODY_BYTES)
    too_big = RequestValidationError(f"The request body is larger than {limit} bytes.", status=413)
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise too_big
    stream = getattr(request, "_stream", None)
    if stream is None or getattr(request, "_read_started", True):
        return
    seekable = getattr(stream, "seekable", None)
    if not callable(seekable) or not seekable():
        return  # a socket-like stream: Content-Length (or its absence) is all we know
    position = stream.tell()
    size = stream.seek(0, io.SEEK_END)
    stream.seek(position)
    if size - position > limit:
        raise too_big


# -- system checks -------------------------------------------------------------------------------


def _check_callable(path: Any, where: str, check_id: str, signature: str) -> list[checks.Error]:
    if not isinstance(path, str) or not path:
        return [
            checks.Error(
                f"{where} = {path!r} is not a dotted path.",
                hint=f'Set it to the dotted path of a callable {signature}, e.g. "mysite.auth.f".',
                id=check_id,
            )
        ]
    try:
        func = import_string(path)
    except ImportError as exc:
        return [
            checks.Error(
                f"{where} = {path!r} cannot be imported: {exc}",
                hint=f"Set it to the dotted path of a callable {signature}.",
                id=check_id,
            )
        ]
    if not callable(func):
        return [
            checks.Error(
                f"{where} = {path!r} is not callable.",
                hint=f"Point it at a function {signature}.",
                id=check_id,
            )
        ]
    return []


def check_security_settings() -> list[checks.CheckMessage]:
    """``llmstream.E030`` (``PERMISSION``) and ``llmstream.E031`` (``AUTHENTICATORS``)."""
    errors: list[checks.CheckMessage] = []
    permission = app_settings.PERMISSION
    if permission is not None:
        errors += _check_callable(
            permission,
            'LLMSTREAM["PERMISSION"]',
            "llmstream.E030",
            "(request, action, conversation) -> bool",
        )
    authenticators = app_settings.AUTHENTICATORS
    if authenticators is None:
        return errors
    if isinstance(authenticators, str) or not isinstance(authenticators, Sequence):
        errors.append(
            checks.Error(
                'LLMSTREAM["AUTHENTICATORS"] must be a list of dotted paths.',
                hint='For example ["mysite.auth.bearer_token"].',
                id="llmstream.E031",
            )
        )
        return errors
    for index, path in enumerate(authenticators):
        errors += _check_callable(
            path,
            f'LLMSTREAM["AUTHENTICATORS"][{index}]',
            "llmstream.E031",
            "(request) -> user or None",
        )
    return errors

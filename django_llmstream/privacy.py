"""Who may read what users and models wrote: ``LLMSTREAM["HIDE_CONTENT_FROM_STAFF"]``.

With the setting on, the admin, its live view and exports hide the *text* of conversations
from users without the permission ``django_llmstream.view_message_content``: titles (made from
the first prompt), system prompts, message content, reasoning and tool call arguments. What is
*about* a conversation (owner, provider, model, status, usage, cost, timings, errors, tool
names) stays visible: operators can run the site without reading the chats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.utils.translation import gettext_lazy as _

from django_llmstream.conf import app_settings

__all__ = [
    "CONTENT_PERMISSION",
    "HIDDEN",
    "can_view_content",
    "content_hidden",
    "redact_tool_calls",
]

#: The permission that lets staff read text while the setting is on.
CONTENT_PERMISSION = "django_llmstream.view_message_content"

#: What is shown in place of hidden text.
HIDDEN = _("hidden")


def content_hidden() -> bool:
    """Whether the site hides text from staff without :data:`CONTENT_PERMISSION`."""
    return bool(app_settings.HIDE_CONTENT_FROM_STAFF)


def can_view_content(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    """Whether ``user`` may read conversations' text (``None``: an operator's shell)."""
    if not content_hidden():
        return True
    if user is None:
        return False
    # AbstractBaseUser alone has no has_perm(); PermissionsMixin (and AnonymousUser) do.
    has_perm = getattr(user, "has_perm", None)
    return bool(user.is_active and callable(has_perm) and has_perm(CONTENT_PERMISSION))


def redact_tool_calls(calls: Sequence[Mapping[str, Any]] | Any) -> list[dict[str, Any]]:
    """Tool calls with their arguments removed: ids and names stay, as they are the site's."""
    if not isinstance(calls, Sequence) or isinstance(calls, str):
        return []
    return [
        {**dict(call), "arguments": None} if isinstance(call, Mapping) else {"arguments": None}
        for call in calls
    ]

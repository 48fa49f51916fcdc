"""Template tags: ``{% load llmstream %}``.

``{% llmstream_script %}`` and ``{% llmstream_chat conversation %}`` put the chat widget in a
page; ``{% llmstream_htmx_script %}`` and ``{% llmstream_htmx_form target %}`` do the same for
htmx. Each renders an overridable template under ``django_llmstream/``.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.core.exceptions import ImproperlyConfigured
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.safestring import SafeString

from django_llmstream.conf import app_settings
from django_llmstream.exceptions import InvalidProviderConfig
from django_llmstream.providers import get_provider, provider_aliases

register = template.Library()

__all__ = [
    "llmstream_chat",
    "llmstream_htmx_form",
    "llmstream_htmx_script",
    "llmstream_script",
    "model_choices",
]


def api_root() -> str:
    """Where ``django_llmstream.urls`` is mounted (``/llmstream/``)."""
    return reverse("llmstream:not-found", kwargs={"path": ""})


def model_choices() -> list[dict[str, Any]]:
    """Each configured provider with its allowed models (its default model first); the
    default provider is marked ``default``."""
    choices: list[dict[str, Any]] = []
    default = app_settings.default_provider
    for alias in provider_aliases():
        try:
            provider = get_provider(alias)
        except InvalidProviderConfig:
            continue  # `manage.py check` reports it; the others still work
        models = list(provider.models)
        if provider.default_model in models:
            models.remove(provider.default_model)
            models.insert(0, provider.default_model)
        if models:
            choices.append({"provider": alias, "models": models, "default": alias == default})
    choices.sort(key=lambda choice: not choice["default"])
    return choices


def _next_id(context: template.Context, prefix: str) -> str:
    counter = int(context.render_context.get(prefix) or 0) + 1
    context.render_context[prefix] = counter
    return prefix if counter == 1 else f"{prefix}-{counter}"


def _csrf_token(context: template.Context) -> str:
    request = context.get("request")
    # get_token() also makes Django set the csrftoken cookie on the response.
    return get_token(request) if request is not None else ""


def _conversation_id(conversation: Any) -> str:
    if conversation is None or conversation == "":
        return ""
    return str(getattr(conversation, "pk", conversation))


@register.simple_tag
def llmstream_script(css: bool = True) -> SafeString:
    """The widget's stylesheet and module (once per page, e.g. in ``<head>``)."""
    return render_to_string("django_llmstream/script.html", {"css": css})


@register.simple_tag(takes_context=True)
def llmstream_chat(
    context: template.Context,
    conversation: Any = None,
    *,
    markdown: bool = True,
    mode: str = "turns",
    models: bool = True,
    header: bool = True,
    title: str = "New chat",
    placeholder: str = "Ask anything. The answer streams in as it is written.",
    storage_key: str = "",
    id: str = "",
) -> SafeString:
    """A complete chat widget (``django_llmstream/chat.html``).

    ``conversation``: a ``Conversation``, its id, or nothing for a new chat. ``markdown``:
    render answers as safe Markdown. ``mode``: ``"turns"`` (``POST turns/`` and EventSource;
    resumes after a reload) or ``"stream"`` (the one-step ``POST stream/``). ``models``:
    offer the configured providers' models for a new chat. ``storage_key``: tells apart
    several widgets of one site in ``sessionStorage`` (defaults to the element id).
    """
    if mode not in {"turns", "stream"}:
        raise template.TemplateSyntaxError(
            f'llmstream_chat mode must be "turns" or "stream", not {mode!r}.'
        )
    element_id = id or _next_id(context, "llmstream-chat")
    return render_to_string(
        "django_llmstream/chat.html",
        {
            "id": element_id,
            "api_root": api_root(),
            "conversation": _conversation_id(conversation),
            "markdown": markdown,
            "mode": mode,
            "csrf_token": _csrf_token(context),
            "choices": model_choices() if models else [],
            "header": header,
            "title": title,
            "placeholder": placeholder,
            "storage_key": storage_key or element_id,
        },
    )


@register.simple_tag(takes_context=True)
def llmstream_htmx_script(
    context: template.Context, css: bool = True, minified: bool = True
) -> SafeString:
    """htmx 2 and its SSE extension (from django-htmx), our stylesheet and llmstream-htmx.js."""
    try:
        from django_htmx.jinja import htmx_script
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImproperlyConfigured(
            "{% llmstream_htmx_script %} serves htmx from django-htmx: "
            'pip install "django-llmstream[htmx]" and add "django_htmx" to INSTALLED_APPS.'
        ) from exc
    htmx = htmx_script(
        version=2, minified=minified, extensions=["hx-sse"], nonce=context.get("csp_nonce")
    )
    return render_to_string("django_llmstream/htmx/script.html", {"htmx": htmx, "css": css})


@register.simple_tag(takes_context=True)
def llmstream_htmx_form(
    context: template.Context,
    target: str,
    conversation: Any = None,
    *,
    label: str = "Your message",
    placeholder: str = "",
    id: str = "",
) -> SafeString:
    """A prompt form that posts to ``turns/?format=html`` and appends each turn's fragment
    (``django_llmstream/htmx/turn.html``) to the element ``target`` (a CSS selector)."""
    return render_to_string(
        "django_llmstream/htmx/form.html",
        {
            "id": id or _next_id(context, "llmstream-form"),
            "action": reverse("llmstream:turn-create") + "?format=html",
            "target": target,
            "conversation": _conversation_id(conversation),
            "label": label,
            "placeholder": placeholder,
        },
        request=context.get("request"),
    )

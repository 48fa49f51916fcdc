"""The demo chat page: a static shell; the page's script talks to the app's JSON/SSE API."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_safe

from django_llmstream.conf import app_settings
from django_llmstream.exceptions import InvalidProviderConfig
from django_llmstream.providers import get_provider, provider_aliases

#: Where urls.py mounts django_llmstream; the script builds the API URLs from it.
API_ROOT = "/llmstream/"


def _providers() -> list[dict[str, Any]]:
    """Each configured provider with its allowed models, the default first."""
    choices = []
    for alias in provider_aliases():
        try:
            provider = get_provider(alias)
        except InvalidProviderConfig:
            # `manage.py check` reports it; the page still works with the other providers.
            continue
        models = list(provider.models)
        if provider.default_model in models:
            models.remove(provider.default_model)
            models.insert(0, provider.default_model)
        choices.append({"provider": alias, "models": models})
    return choices


@require_safe
@ensure_csrf_cookie  # the page's script sends the csrftoken cookie back as X-CSRFToken
def chat(request: HttpRequest) -> HttpResponse:
    config = {
        "apiRoot": API_ROOT,
        "providers": _providers(),
        "defaultProvider": app_settings.default_provider,
    }
    return render(request, "chat.html", {"config": config})


@require_safe
@ensure_csrf_cookie
def htmx_chat(request: HttpRequest) -> HttpResponse:
    """The same chat with htmx and the SSE extension: no JavaScript of the page's own."""
    return render(request, "htmx.html")

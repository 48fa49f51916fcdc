"""The pages the browser tests load: the three ways to use the app from a browser.

``client.html`` and ``htmx.html`` are also the copy-paste examples of docs/frontends.rst
(included from here), so the documented code is the tested code.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.csrf import ensure_csrf_cookie


@ensure_csrf_cookie
def client(request: HttpRequest) -> HttpResponse:
    return render(request, "browser/client.html")


@ensure_csrf_cookie
def widget(request: HttpRequest) -> HttpResponse:
    mode = "stream" if request.GET.get("mode") == "stream" else "turns"
    markdown = request.GET.get("markdown") != "off"
    return render(request, "browser/widget.html", {"mode": mode, "markdown": markdown})


@ensure_csrf_cookie
def htmx(request: HttpRequest) -> HttpResponse:
    return render(request, "browser/htmx.html")


urlpatterns = [
    path("client/", client),
    path("widget/", widget),
    path("htmx/", htmx),
]

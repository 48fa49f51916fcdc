"""URLs of the demo site: the chat page, the app, the admin."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from testproject import views

urlpatterns = [
    path("", views.chat, name="chat"),
    path("htmx/", views.htmx_chat, name="htmx-chat"),
    path("llmstream/", include("django_llmstream.urls")),
    path("admin/", admin.site.urls),
]

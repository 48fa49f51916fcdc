"""URLs of the protocol; mount with ``path("llmstream/", include("django_llmstream.urls"))``."""

from __future__ import annotations

from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt

from django_llmstream import views

app_name = "llmstream"

urlpatterns = [
    path("turns/", views.TurnCreateView.as_view(), name="turn-create"),
    path("turns/<uuid:turn>/events/", views.TurnEventsView.as_view(), name="turn-events"),
    path("turns/<uuid:turn>/stop/", views.TurnStopView.as_view(), name="turn-stop"),
    path("stream/", views.StreamView.as_view(), name="stream"),
    # The AI SDK's reconnect URL: DefaultChatTransport appends "/<chatId>/stream" to its api.
    re_path(
        r"^stream/(?P<chat>[^/]+)/stream/?$",
        views.AISDKReconnectView.as_view(),
        name="ai-sdk-reconnect",
    ),
    path("conversations/", views.ConversationListView.as_view(), name="conversation-list"),
    path(
        "conversations/<uuid:conversation>/",
        views.ConversationDetailView.as_view(),
        name="conversation-detail",
    ),
    re_path(r"^(?P<path>.*)$", csrf_exempt(views.not_found), name="not-found"),
]

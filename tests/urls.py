from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("llmstream/", include("django_llmstream.urls")),
    # Pages of the browser tests (tests/browser/pages.py).
    path("pages/", include("tests.browser.pages")),
]

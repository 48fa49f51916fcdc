from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

urlpatterns = [
    path("", TemplateView.as_view(template_name="chat/index.html")),
    path("llmstream/", include("django_llmstream.urls")),
    path("admin/", admin.site.urls),
]

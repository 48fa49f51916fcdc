"""App configuration: registers the system checks."""

from __future__ import annotations

from django.apps import AppConfig


class LLMStreamConfig(AppConfig):
    name = "django_llmstream"
    label = "django_llmstream"
    verbose_name = "LLM streams"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_llmstream import checks

        checks.register()

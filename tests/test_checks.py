"""System checks fail at start-up, with ids and messages that say what to set."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_llmstream.checks import check_settings

DEMO = {"BACKEND": "django_llmstream.providers.demo.DemoProvider"}


def ids(settings: Any) -> list[str]:
    with override_settings(LLMSTREAM=settings):
        return [m.id for m in check_settings() if m.id]


def test_defaults_pass() -> None:
    with override_settings():
        from django.conf import settings

        del settings.LLMSTREAM
        assert check_settings() == []


def test_the_test_settings_pass() -> None:
    assert check_settings() == []


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ([], "llmstream.E001"),
        ({"PROVIDERS": {}}, "llmstream.E003"),
        ({"PROVIDERS": {"x": {"BACKEND": "no.such.Backend"}}}, "llmstream.E004"),
        ({"PROVIDERS": {"x": {"BACKEND": "django_llmstream.conf.AppSettings"}}}, "llmstream.E004"),
        ({"PROVIDERS": {"x": {}}}, "llmstream.E004"),
        ({"PROVIDERS": {"demo": DEMO}, "DEFAULT_PROVIDER": "openai"}, "llmstream.E005"),
        (
            {
                "PROVIDERS": {
                    "openai": {"BACKEND": "django_llmstream.providers.openai.OpenAIProvider"}
                }
            },
            "llmstream.E006",
        ),
        (
            {"PROVIDERS": {"demo": {**DEMO, "PRICES": {"demo": {"input": "cheap"}}}}},
            "llmstream.E010",
        ),
        ({"PROVIDERS": {"demo": {**DEMO, "BASE_UR": "typo"}}}, "llmstream.E009"),
        ({"PROVIDERS": {"demo": {**DEMO, "PRICES": ["0.1"]}}}, "llmstream.E010"),
        ({"PROVIDERS": {"demo": {**DEMO, "PRICES": {"demo": "0.15"}}}}, "llmstream.E010"),
        ({"PROVIDERS": {"demo": {**DEMO, "MODELS": "demo"}}}, "llmstream.E008"),
        ({"PROVIDERS": {"demo": {**DEMO, "OPTIONS": {"DELAI": 1}}}}, "llmstream.E017"),
        ({"PROVIDERS": {"demo": {**DEMO, "OPTIONS": ["DELAY"]}}}, "llmstream.E017"),
        ({"FLUSH_INTERVAL": 0}, "llmstream.E012"),
        ({"FLUSH_INTERVAL": "fast"}, "llmstream.E012"),
        ({"HEARTBEAT_SECONDS": -1}, "llmstream.E012"),
        ({"MAX_BODY_BYTES": 1.5}, "llmstream.E012"),
        ({"MAX_RETRIES": True}, "llmstream.E012"),
        ({"ON_DISCONNECT": "ignore"}, "llmstream.E013"),
        ({"BROKER": {"BACKEND": "nope.Broker"}}, "llmstream.E014"),
        ({"ALLOWED_PARAMS": {"temperature": {"type": "complex"}}}, "llmstream.E015"),
        ({"ALLOW_ANONYMOUS": "yes"}, "llmstream.E016"),
        ({"FLUSH_INTERVALL": 1}, "llmstream.W001"),
    ],
)
def test_each_misconfiguration_is_reported(settings: Any, expected: str) -> None:
    assert expected in ids(settings)


def test_messages_say_what_to_set() -> None:
    with override_settings(
        LLMSTREAM={
            "PROVIDERS": {"openai": {"BACKEND": "django_llmstream.providers.openai.OpenAIProvider"}}
        }
    ):
        (message,) = [m for m in check_settings() if m.id == "llmstream.E006"]
    assert 'LLMSTREAM["PROVIDERS"]["openai"]' in message.msg
    assert message.hint and "API_KEY" in message.hint


def test_manage_py_check_fails_on_errors() -> None:
    with (
        override_settings(LLMSTREAM={"ON_DISCONNECT": "ignore"}),
        pytest.raises(SystemCheckError) as info,
    ):
        call_command("check")
    assert "llmstream.E013" in str(info.value)


def test_runserver_without_daphne_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["manage.py", "runserver"])
    assert "llmstream.W002" in [m.id for m in check_settings()]
    monkeypatch.setattr("sys.argv", ["manage.py", "migrate"])
    assert "llmstream.W002" not in [m.id for m in check_settings()]

"""``manage.py llmstream``: chat, prune, export, sweep — exact output, clear errors, help."""

from __future__ import annotations

import io
import json
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from django_llmstream import signals
from django_llmstream.management.commands.llmstream import Command, parse_duration
from django_llmstream.models import Conversation, Message
from django_llmstream.providers.demo import demo_reply
from tests.test_admin import (
    CONV_ID,
    EXPECTED_CSV,
    EXPECTED_JSONL,
    EXPECTED_MARKDOWN,
    SECRETS,
    TURN_ID,
    USER_MSG_ID,
    make_conversation,
)


def _settings(**overrides: Any) -> dict[str, Any]:
    return {
        "PROVIDERS": {
            "demo": {
                "BACKEND": "django_llmstream.providers.demo.DemoProvider",
                "MODELS": ["demo", "demo-large"],
                "PRICES": {"demo": {"input": "1", "output": "2"}},
                "OPTIONS": {"DELAY": 0},
            },
        },
        "FLUSH_INTERVAL": 0.02,
        **overrides,
    }


@pytest.fixture(autouse=True)
def _llm_settings() -> Any:
    with override_settings(LLMSTREAM=_settings()):
        yield


def run(*args: str, **kwargs: Any) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("llmstream", *args, stdout=out, stderr=err, **kwargs)
    return out.getvalue(), err.getvalue()


# -- arguments and help --------------------------------------------------------------------


def test_help_explains_each_subcommand() -> None:
    parser = Command().create_parser("manage.py", "llmstream")
    top = parser.format_help()
    for name in ("chat", "prune", "export", "sweep"):
        assert name in top
    subparsers = next(a for a in parser._actions if a.dest == "subcommand")
    helps = {name: sub.format_help() for name, sub in subparsers.choices.items()}  # type: ignore[attr-defined]
    assert "--provider" in helps["chat"] and "Ctrl-C" in helps["chat"]
    assert "--older-than" in helps["prune"] and "--dry-run" in helps["prune"]
    assert "12h, 30d or 2w" in helps["prune"]
    for option in ("--format", "--output", "--since", "--until", "--user", "--include-content"):
        assert option in helps["export"]
    assert "interrupted" in helps["sweep"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the following arguments are required: {chat,prune,export,sweep}"),
        (("nope",), "invalid choice: 'nope'"),
        (("prune",), "the following arguments are required: --older-than"),
        (("prune", "--older-than", "30"), "expected a duration such as 12h, 30d or 2w"),
        (("prune", "--older-than", "0d"), "expected a duration such as 12h, 30d or 2w"),
        (("prune", "--older-than", "3y"), "not '3y'"),
        (("export", "--format", "xml"), "invalid choice: 'xml'"),
        (("export", "--since", "last week"), "expected a date (2025-01-31)"),
        (("export", "--until", "2025-02-30"), "expected a date"),
        (("chat", "--param", "temperature"), "expected NAME=VALUE"),
    ],
)
def test_bad_arguments_say_what_is_expected(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError) as info:
        run(*args)
    assert message in str(info.value)


def test_parse_duration() -> None:
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("90m") == timedelta(minutes=90)
    for bad in ("", "d", "1.5d", "-1d", "10", "1y"):
        with pytest.raises(ValueError, match=bad or "^$"):
            parse_duration(bad)


# -- sweep ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_sweep_marks_dead_turns_interrupted() -> None:
    assert run("sweep") == ("No dead turns found.\n", "")
    dead = make_conversation(status="streaming").messages.get(role="assistant")
    Message.objects.filter(pk=dead.pk).update(
        lease_expires_at=timezone.now() - timedelta(minutes=1)
    )
    alive = make_conversation(status="streaming").messages.get(role="assistant")
    assert run("sweep") == ("Marked 1 turn as interrupted.\n", "")
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert (dead.status, alive.status) == ("interrupted", "streaming")
    assert dead.content == alive.content  # the stored text is kept


# -- prune ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_prune_deletes_by_last_activity() -> None:
    now = timezone.now()
    old = make_conversation(when=now - timedelta(days=40))
    recent_message = make_conversation(when=now - timedelta(days=40))
    # An old conversation with a new message is active: the newest message counts.
    Message.objects.filter(conversation=recent_message, role="assistant").update(
        created_at=now - timedelta(days=1), finished_at=now - timedelta(days=1)
    )
    fresh = make_conversation(when=now - timedelta(days=2))
    running = make_conversation(when=now - timedelta(days=60), status="streaming")

    out, _err = run("prune", "--older-than", "30d", "--dry-run")
    assert out.startswith("Would delete 1 conversation (2 messages) with no activity since ")
    assert Conversation.objects.count() == 4

    out, _err = run("prune", "--older-than", "30d")
    assert out.startswith("Deleted 1 conversation (2 messages) with no activity since ")
    left = set(Conversation.objects.values_list("pk", flat=True))
    assert left == {recent_message.pk, fresh.pk, running.pk}
    assert not Message.objects.filter(conversation_id=old.pk).exists()

    out, _err = run("prune", "--older-than", "36h")
    assert out.startswith("Deleted 1 conversation (2 messages)")  # fresh, 2 days old
    out, _err = run("prune", "--older-than", "1w")
    assert out.startswith("Deleted 0 conversations (0 messages)")
    assert set(Conversation.objects.values_list("pk", flat=True)) == {
        recent_message.pk,
        running.pk,
    }


# -- export --------------------------------------------------------------------------------


@pytest.fixture
def exported(db: None) -> Conversation:
    return make_conversation(conversation_id=CONV_ID, user_message_id=USER_MSG_ID, turn_id=TURN_ID)


@pytest.mark.parametrize(
    ("fmt", "check"),
    [
        (
            "jsonl",
            lambda text: [json.loads(line) for line in text.splitlines()] == [EXPECTED_JSONL],
        ),
        ("markdown", lambda text: text == EXPECTED_MARKDOWN),
        ("csv", lambda text: text == EXPECTED_CSV),
    ],
)
def test_export_to_a_file_is_exact(
    exported: Conversation, tmp_path: Path, fmt: str, check: Any
) -> None:
    target = tmp_path / f"out.{fmt}"
    out, err = run("export", "--format", fmt, "--output", str(target))
    assert out == ""
    assert err == f"Exported 1 conversation as {fmt} to {target}.\n"
    assert check(target.read_bytes().decode("utf-8"))


def test_export_to_stdout_defaults_to_jsonl(exported: Conversation) -> None:
    out, err = run("export")
    assert [json.loads(line) for line in out.splitlines()] == [EXPECTED_JSONL]
    assert err == "Exported 1 conversation as jsonl to standard output.\n"


def test_export_filters(exported: Conversation) -> None:
    ann = get_user_model().objects.create_user("ann")
    later = make_conversation(owner=ann, when=datetime(2025, 3, 5, 8, tzinfo=UTC))

    def ids(*args: str) -> list[str]:
        out, _err = run("export", *args)
        return [json.loads(line)["id"] for line in out.splitlines()]

    assert ids() == [str(CONV_ID), str(later.pk)]
    assert ids("--user", "ann") == [str(later.pk)]
    assert ids("--since", "2025-03-02") == [str(later.pk)]
    assert ids("--until", "2025-03-01") == [str(CONV_ID)]
    assert ids("--until", "2025-03-05T07:00:00+00:00") == [str(CONV_ID)]
    assert ids("--since", "2025-03-01", "--until", "2025-03-05") == [str(CONV_ID), str(later.pk)]
    with pytest.raises(CommandError, match="--user: no user named 'bob'"):
        run("export", "--user", "bob")
    with pytest.raises(CommandError, match="does not exist"):
        run("export", "--output", "/nonexistent-folder/x.jsonl")


def test_export_hides_text_when_the_setting_says_so(exported: Conversation) -> None:
    with override_settings(LLMSTREAM=_settings(HIDE_CONTENT_FROM_STAFF=True)):
        for fmt in ("jsonl", "markdown", "csv"):
            out, err = run("export", "--format", fmt)
            for secret in SECRETS:
                assert secret not in out, (fmt, secret)
            assert "(text hidden: HIDE_CONTENT_FROM_STAFF)" in err
        out, _err = run("export", "--include-content")
        assert [json.loads(line) for line in out.splitlines()] == [EXPECTED_JSONL]


# -- chat ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_chat_streams_stores_and_reports_usage() -> None:
    prompts = "Hello there\n\nAnd a second question\n"
    out, err = run("chat", "--system", "Be brief.", stdin=io.StringIO(prompts))
    conversation = Conversation.objects.get()
    messages = list(conversation.messages.order_by("created_at", "pk"))
    assert [(m.role, m.status) for m in messages] == [
        ("user", "completed"),
        ("assistant", "completed"),
        ("user", "completed"),
        ("assistant", "completed"),
    ]
    first, second = messages[1], messages[3]
    assert first.content == demo_reply("Hello there")
    assert second.content == demo_reply("And a second question")
    assert conversation.system_prompt == "Be brief." and conversation.title == "Hello there"
    assert conversation.owner is None and conversation.provider == "demo"

    def usage(turn: Message) -> str:
        return (
            f"[stop · tokens in {turn.input_tokens} / out {turn.output_tokens} · "
            f"cost {turn.cost} · first token {turn.ttft_ms} ms · {turn.duration_ms} ms]"
        )

    assert out == (
        f"{first.content}\n{usage(first)}\n"
        f"{second.content}\n{usage(second)}\n"
        f"Conversation {conversation.pk}: 2 turns.\n"
    )
    assert err == ""
    assert first.cost is not None and first.input_tokens == 4  # system prompt + prompt words


@pytest.mark.django_db(transaction=True)
def test_chat_options_and_continuing_a_conversation() -> None:
    ann = get_user_model().objects.create_user("ann")
    out, _err = run(
        "chat",
        "--user",
        "ann",
        "--model",
        "demo-large",
        "--param",
        "max_tokens=3",
        stdin=io.StringIO("one\n"),
    )
    conversation = Conversation.objects.get()
    turn = conversation.messages.get(role="assistant")
    assert conversation.owner == ann and turn.model == "demo-large"
    assert turn.params == {"max_tokens": 3} and turn.finish_reason == "length"
    assert "[length · tokens in 1 / out 3" in out
    run("chat", "--conversation", str(conversation.pk), stdin=io.StringIO("two\n"))
    assert conversation.messages.count() == 4
    assert Conversation.objects.count() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--provider", "nope"), "--provider: Unknown provider 'nope'; use one of: demo."),
        (("--model", "gpt-9"), "--model: Model 'gpt-9' is not allowed for provider 'demo'"),
        (("--param", "temperature=9"), "--params: "),
        (("--param", "base_url=http://x"), "--params: "),
        (("--user", "nobody"), "--user: no user named 'nobody'."),
        (("--conversation", "not-a-uuid"), "--conversation: no conversation with id"),
    ],
)
@pytest.mark.django_db
def test_chat_refuses_bad_options_before_reading(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError) as info:
        run("chat", *args, stdin=io.StringIO("never read\n"))
    assert message in str(info.value)
    assert Conversation.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_chat_ctrl_c_stops_the_current_turn() -> None:
    def interrupt(sender: Any, **kwargs: Any) -> None:
        # What the terminal does on Ctrl-C, as the turn starts.
        os.kill(os.getpid(), signal.SIGINT)

    signals.turn_started.connect(interrupt, weak=False)
    previous = signal.getsignal(signal.SIGINT)
    try:
        with override_settings(
            LLMSTREAM=_settings(
                PROVIDERS={
                    "demo": {
                        "BACKEND": "django_llmstream.providers.demo.DemoProvider",
                        "OPTIONS": {"DELAY": 0.05},
                    }
                }
            )
        ):
            out, _err = run("chat", stdin=io.StringIO("stop me\n"))
    finally:
        signals.turn_started.disconnect(interrupt)
    assert signal.getsignal(signal.SIGINT) is previous  # the handler is given back
    turn = Message.objects.get(role="assistant")
    assert turn.status == "cancelled" and turn.finish_reason == "cancelled"
    assert "[stopped · tokens in ? / out ?" in out
    assert out.endswith(f"Conversation {turn.conversation_id}: 1 turn.\n")

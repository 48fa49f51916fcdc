"""``manage.py llmstream``: chat in the terminal, prune, export and sweep conversations.

Subcommands (``manage.py llmstream <subcommand> --help`` explains each):

``chat``
    A streaming chat in the terminal, stored like the web's: one prompt per line of standard
    input, the answer printed as it arrives, then its usage and cost. Ctrl-C stops the answer
    being written; Ctrl-C at the prompt (or end of input) ends the chat.
``prune --older-than 30d [--dry-run]``
    Delete conversations whose last activity is older than the given age.
``export [--format jsonl|markdown|csv] [--output FILE] [--since DATE] [--until DATE] [--user NAME]``
    Write conversations to a file or standard output.
``sweep``
    End turns whose process died (lease lapsed) as ``interrupted``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from django_llmstream.brokers import get_broker
from django_llmstream.exceptions import RequestValidationError
from django_llmstream.exports import FORMATS, export_conversations
from django_llmstream.generation import Generation
from django_llmstream.models import Conversation, Message
from django_llmstream.privacy import content_hidden
from django_llmstream.providers import ChatRequest
from django_llmstream.recovery import sweep_interrupted
from django_llmstream.reports import annotate_conversations
from django_llmstream.validation import TurnInput, validate_turn
from django_llmstream.views import Owner, TurnStartMixin

_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_RUNNING = ("pending", "streaming")


def parse_duration(value: str) -> timedelta:
    """``"12h"``, ``"30d"``, ``"2w"``, ``"90m"`` as a :class:`timedelta` (``ValueError`` else)."""
    match = _DURATION.match(value)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(value)
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _duration_arg(value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 12h, 30d or 2w (a whole number above 0 followed by "
            f"m for minutes, h, d or w), not {value!r}"
        ) from None


def _moment_arg(value: str) -> datetime | date:
    parsed: datetime | date | None
    try:
        # A date first: parse_datetime() would read "2025-01-31" as midnight.
        parsed = parse_date(value) or parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise argparse.ArgumentTypeError(
            f"expected a date (2025-01-31) or a date and time (2025-01-31T12:00), not {value!r}"
        )
    return parsed


def _param_arg(value: str) -> tuple[str, Any]:
    name, sep, raw = value.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE (e.g. temperature=0.2 or max_tokens=256), not {value!r}"
        )
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = raw
    return name.strip(), parsed


def _as_datetime(value: datetime | date, *, end: bool = False) -> datetime:
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else timezone.make_aware(value)
    day = value + timedelta(days=1) if end else value
    return timezone.make_aware(datetime.combine(day, datetime.min.time()))


class Command(BaseCommand):
    help = (
        "Operate django-llmstream: 'chat' in the terminal, 'prune' old conversations, "
        "'export' conversations, 'sweep' turns whose process died. "
        "Run 'manage.py llmstream <subcommand> --help' for each one's options."
    )
    # call_command(..., stdin=io.StringIO(...)) feeds the chat in tests, as createsuperuser.
    stealth_options = ("stdin",)

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="subcommand",
            required=True,
            title="subcommands",
            metavar="{chat,prune,export,sweep}",
        )
        chat = sub.add_parser(
            "chat",
            help="Chat with a provider in the terminal; stored like web turns.",
            description=(
                "A streaming chat in the terminal. Each line of standard input is a prompt; "
                "the answer is printed as it arrives, followed by its tokens and cost. All "
                "prompts of one run form one conversation, stored like the web's (Conversation "
                "and Message rows, signals, logging). Ctrl-C stops the answer being written; "
                "Ctrl-C at the prompt or the end of input (Ctrl-D) ends the chat. Blank lines are "
                "skipped."
            ),
        )
        chat.add_argument("--provider", help="Provider alias from LLMSTREAM['PROVIDERS'].")
        chat.add_argument("--model", help="Model name; must be allowed for the provider.")
        chat.add_argument("--system", help="System prompt of a new conversation.")
        chat.add_argument("--user", help="Username that owns the conversation (default: no owner).")
        chat.add_argument(
            "--conversation", help="Id of an existing conversation to continue (UUID)."
        )
        chat.add_argument(
            "--param",
            action="append",
            type=_param_arg,
            default=[],
            metavar="NAME=VALUE",
            help="A request parameter such as temperature=0.2 or max_tokens=256 (repeatable); "
            "checked against LLMSTREAM['ALLOWED_PARAMS'].",
        )

        prune = sub.add_parser(
            "prune",
            help="Delete conversations without activity for a given time.",
            description=(
                "Delete the conversations (with their messages) whose last activity — their "
                "newest message, or their last update — is older than --older-than. "
                "Conversations with a running turn are kept."
            ),
        )
        prune.add_argument(
            "--older-than",
            required=True,
            type=_duration_arg,
            metavar="AGE",
            help="Age such as 12h, 30d or 2w (m: minutes, h: hours, d: days, w: weeks).",
        )
        prune.add_argument(
            "--dry-run",
            action="store_true",
            help="Only print what would be deleted.",
        )

        export = sub.add_parser(
            "export",
            help="Export conversations as JSON Lines, Markdown or CSV.",
            description=(
                "Write conversations, oldest first, with every message, its usage, cost and "
                "timings. Formats: jsonl (one conversation per line), markdown (readable "
                "transcripts), csv (one row per message). With HIDE_CONTENT_FROM_STAFF the "
                "text is left out unless --include-content is given."
            ),
        )
        export.add_argument(
            "--format", choices=sorted(FORMATS), default="jsonl", help="Default: jsonl."
        )
        export.add_argument(
            "--output",
            "-o",
            default="-",
            metavar="FILE",
            help="File to write (default: standard output).",
        )
        export.add_argument(
            "--since",
            type=_moment_arg,
            metavar="DATE",
            help="Only conversations created on or after this date (or date and time).",
        )
        export.add_argument(
            "--until",
            type=_moment_arg,
            metavar="DATE",
            help="Only conversations created on or before this date (or before this time).",
        )
        export.add_argument("--user", help="Only conversations owned by this username.")
        export.add_argument(
            "--include-content",
            action="store_true",
            help="Include text even when HIDE_CONTENT_FROM_STAFF is on.",
        )

        sub.add_parser(
            "sweep",
            help="Mark turns whose process died as interrupted.",
            description=(
                "End every pending or streaming turn whose lease has lapsed (its worker was "
                "killed or lost) as 'interrupted', keeping the text it had stored, and print "
                "how many there were. Safe to run at any time, e.g. from cron."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        handlers: dict[str, Callable[..., None]] = {
            "chat": self.handle_chat,
            "prune": self.handle_prune,
            "export": self.handle_export,
            "sweep": self.handle_sweep,
        }
        handlers[options["subcommand"]](**options)

    # -- sweep -------------------------------------------------------------------------

    def handle_sweep(self, **options: Any) -> None:
        count = sweep_interrupted()
        self.stdout.write(
            f"Marked {count} turn{'' if count == 1 else 's'} as interrupted."
            if count
            else "No dead turns found."
        )

    # -- prune -------------------------------------------------------------------------

    def handle_prune(self, *, older_than: timedelta, dry_run: bool = False, **options: Any) -> None:
        cutoff = timezone.now() - older_than
        stale = (
            annotate_conversations(Conversation.objects.all())
            .filter(last_activity__lt=cutoff)
            .exclude(messages__status__in=_RUNNING)
        )
        ids = list(stale.values_list("pk", flat=True))
        messages = Message.objects.filter(conversation__in=ids).count()
        since = timezone.localtime(cutoff).strftime("%Y-%m-%d %H:%M %Z")
        what = (
            f"{len(ids)} conversation{'' if len(ids) == 1 else 's'} "
            f"({messages} message{'' if messages == 1 else 's'}) with no activity since {since}"
        )
        if dry_run:
            self.stdout.write(f"Would delete {what}.")
            return
        deleted = 0
        # In batches: the collector loads each batch's rows, so memory stays bounded.
        for start in range(0, len(ids), 500):
            _total, per_model = Conversation.objects.filter(
                pk__in=ids[start : start + 500]
            ).delete()
            deleted += per_model.get(Conversation._meta.label, 0)
        self.stdout.write(
            f"Deleted {what}." if deleted == len(ids) else f"Deleted {deleted} of {what}."
        )

    # -- export ------------------------------------------------------------------------

    def handle_export(
        self,
        *,
        format: str,
        output: str,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        user: str | None = None,
        include_content: bool = False,
        **options: Any,
    ) -> None:
        queryset: QuerySet[Conversation] = Conversation.objects.all()
        if since is not None:
            queryset = queryset.filter(created_at__gte=_as_datetime(since))
        if until is not None:
            if isinstance(until, datetime):
                queryset = queryset.filter(created_at__lte=_as_datetime(until))
            else:
                queryset = queryset.filter(created_at__lt=_as_datetime(until, end=True))
        if user is not None:
            owner = self._user(user)
            queryset = queryset.filter(owner=owner)
        include = include_content or not content_hidden()
        with self._open(output) as out:
            count = export_conversations(queryset, format, out, include_content=include)
        where = "standard output" if output == "-" else output
        note = "" if include else " (text hidden: HIDE_CONTENT_FROM_STAFF)"
        self.stderr.write(
            f"Exported {count} conversation{'' if count == 1 else 's'} as {format} "
            f"to {where}{note}."
        )

    @contextlib.contextmanager
    def _open(self, output: str) -> Iterator[TextIO]:
        if output == "-":
            yield self.stdout  # type: ignore[misc]
            return
        path = Path(output)
        if not path.parent.is_dir():
            raise CommandError(f"--output: the folder {str(path.parent)!r} does not exist.")
        with path.open("w", encoding="utf-8", newline="") as out:
            yield out

    def _user(self, username: str) -> Any:
        user_model = get_user_model()
        try:
            return user_model._default_manager.get_by_natural_key(username)
        except user_model.DoesNotExist:
            raise CommandError(f"--user: no user named {username!r}.") from None

    # -- chat --------------------------------------------------------------------------

    def handle_chat(self, **options: Any) -> None:
        stdin: TextIO = options.get("stdin") or sys.stdin
        owner = self._user(options["user"]) if options.get("user") else None
        conversation: Conversation | None = None
        if options.get("conversation"):
            try:
                wanted = uuid.UUID(options["conversation"])
            except ValueError:
                wanted = None
            conversation = (
                Conversation.objects.filter(pk=wanted).first() if wanted is not None else None
            )
            if conversation is None:
                raise CommandError(
                    f"--conversation: no conversation with id {options['conversation']!r}."
                )
            if options.get("system"):
                raise CommandError("--system only applies to a new conversation.")
        starter = TurnStartMixin()
        starter.owner = Owner(user=owner, session_key=None)
        params = dict(options.get("param") or [])
        try:
            # Checked before the first prompt, so a wrong name fails at once.
            probe = validate_turn(
                {
                    "prompt": "probe",
                    **{
                        k: options[k]
                        for k in ("provider", "model", "system")
                        if options.get(k) is not None
                    },
                    "params": params,
                }
            )
            provider = starter.get_provider(probe, conversation)
            starter.get_model(probe, provider, conversation)
        except RequestValidationError as exc:
            raise CommandError(
                f"--{(exc.field or 'prompt').split('.')[0]}: {exc.message}"
            ) from None
        asyncio.run(self._chat(starter, stdin, options, params, conversation))

    async def _chat(
        self,
        starter: TurnStartMixin,
        stdin: TextIO,
        options: dict[str, Any],
        params: dict[str, Any],
        conversation: Conversation | None,
    ) -> None:
        interactive = stdin.isatty()
        turns = 0
        try:
            while True:
                if interactive:
                    self.stdout.write("you> ", ending="")
                    self.stdout.flush()
                line = await asyncio.to_thread(stdin.readline)
                if not line:
                    break
                prompt = line.rstrip("\r\n")
                if not prompt.strip():
                    continue
                data: dict[str, Any] = {"prompt": prompt, "params": params}
                for key in ("provider", "model"):
                    if options.get(key):
                        data[key] = options[key]
                if conversation is None and options.get("system"):
                    data["system"] = options["system"]
                try:
                    turn = validate_turn(data)
                except RequestValidationError as exc:
                    self.stderr.write(f"Not sent: {exc.message}")
                    continue
                conversation = await self._turn(starter, turn, conversation)
                turns += 1
        except asyncio.CancelledError:
            # Ctrl-C at the prompt: asyncio.run cancels the main task; end the chat quietly.
            self.stdout.write("")
        if conversation is not None:
            self.stdout.write(
                f"Conversation {conversation.pk}: {turns} turn{'' if turns == 1 else 's'}."
            )

    async def _turn(
        self, starter: TurnStartMixin, turn: TurnInput, conversation: Conversation | None
    ) -> Conversation:
        provider = starter.get_provider(turn, conversation)
        model = starter.get_model(turn, provider, conversation)
        started = time.monotonic()
        conversation, assistant, history = await sync_to_async(starter._create_rows)(
            turn, conversation, provider.alias, model, starter.owner
        )
        generation = Generation(
            turn_id=str(assistant.pk),
            conversation_id=str(conversation.pk),
            provider=provider,
            request=ChatRequest(
                messages=tuple(starter.build_messages(conversation, history)),
                model=model,
                params=turn.params,
            ),
            started_at=assistant.started_at,
            started_monotonic=started,
        )
        await generation.begin()
        subscription = get_broker().subscribe(generation.turn_id, 0)
        with self._ctrl_c_stops(generation):
            generation.start()
            try:
                await self._print_events(subscription)
            finally:
                await subscription.aclose()
                await generation.finished.wait()
        return conversation

    @contextlib.contextmanager
    def _ctrl_c_stops(self, generation: Generation) -> Iterator[None]:
        """While the turn runs, Ctrl-C stops it (the text so far is kept) instead of exiting."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = asyncio.get_running_loop()

        def on_sigint(signum: int, frame: Any) -> None:
            loop.call_soon_threadsafe(generation.cancel, "stopped")

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    async def _print_events(self, subscription: Any) -> None:
        out = self.stdout
        in_reasoning = False
        while True:
            for event in await subscription.get(15.0):
                data = event.data
                if event.event == "reasoning":
                    if not in_reasoning:
                        self.stderr.write("[thinking] ", ending="")
                        in_reasoning = True
                    self.stderr.write(str(data.get("text", "")), ending="")
                    self.stderr.flush()
                elif event.event == "delta":
                    if in_reasoning:
                        self.stderr.write("")
                        in_reasoning = False
                    out.write(str(data.get("text", "")), ending="")
                    out.flush()
                elif event.event == "tool_call":
                    if data.get("name"):
                        out.write(f"\n[tool call {data['name']}] ", ending="")
                    out.write(str(data.get("arguments", "")), ending="")
                    out.flush()
                elif event.event == "done":
                    out.write("")
                    out.write(_usage_line(data), self.style.SUCCESS)
                    return
                elif event.event == "error":
                    out.write("")
                    self.stderr.write(
                        f"[{data.get('type')}] {data.get('message')}", self.style.ERROR
                    )
                    return


def _usage_line(data: dict[str, Any]) -> str:
    usage = data.get("usage") or {}

    def shown(value: Any) -> str:
        return "?" if value is None else str(value)

    parts = [
        "stopped" if data.get("finish_reason") == "cancelled" else str(data.get("finish_reason")),
        f"tokens in {shown(usage.get('input_tokens'))} / out {shown(usage.get('output_tokens'))}",
        f"cost {data['cost']}" if data.get("cost") is not None else "cost ?",
    ]
    if data.get("ttft_ms") is not None:
        parts.append(f"first token {data['ttft_ms']} ms")
    if data.get("duration_ms") is not None:
        parts.append(f"{data['duration_ms']} ms")
    return "[" + " · ".join(parts) + "]"

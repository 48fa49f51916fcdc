"""Every code example of the documentation is run, or checked against the code.

``test_every_example_is_checked`` sorts each example of ``docs/**/*.rst`` (and each ``::`` block
of the docstrings autodoc renders) into one of the checks below, and fails on an example no
check takes: a new example needs a check. The checks:

- ``include``: a ``literalinclude`` of a file that a test runs (``TESTED_FILES``);
- ``tutorial``: the blocks of docs/tutorial.rst, which tests/test_tutorial.py follows;
- ``settings``: Python that sets Django settings — executed (with the environment variables
  it reads set to placeholders), then ``LLMSTREAM`` goes through the app's system checks
  (no error, no unknown key), ``INSTALLED_APPS`` must import, ``LOGGING`` must configure;
- ``urls``: a URLconf — executed and resolved;
- ``javascript``: ``node --check``, and the quickstart's two examples run for real in Node
  against the live test server;
- ``shell``: every command must exist — a ``manage.py`` command parses its arguments with
  the command's own parser, ``make`` targets and variables are the Makefile's, ``pip``
  extras are pyproject's, uvicorn options are in ``uvicorn --help`` …;
- ``sse``: wire examples parse, with the event names and data keys of real streams;
- ``json`` / ``http``: compared with the responses of the views;
- ``doctest``: run as doctests;
- ``specific``: the examples below with a test of their own, found by a line they contain.
"""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import functools
import html.parser
import importlib.metadata
import importlib.util
import io
import json
import logging.config
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import types
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command, get_commands, load_command_class
from django.template import engines
from django.test import AsyncClient, RequestFactory, override_settings
from django.urls import resolve, reverse

from django_llmstream import views
from django_llmstream.checks import check_settings
from django_llmstream.events import FINISH_REASONS, ReasoningDelta, ToolCallDelta, Usage
from django_llmstream.exceptions import ERROR_TYPES, is_retryable
from django_llmstream.sse import SSEParser
from django_llmstream.testing import Fail, Pause, arun_turn, script_provider
from tests.docs_blocks import (
    DOCS,
    ROOT,
    Block,
    all_page_blocks,
    docstring_blocks,
    page_name,
    pages,
)

NODE = shutil.which("node")
BLOCKS = all_page_blocks() + docstring_blocks()

# Files the docs include, and the test that runs each (which must name the file).
TESTED_FILES = {
    "tests/browser/templates/browser/client.html": "tests/browser/pages.py",
    "tests/browser/templates/browser/htmx.html": "tests/browser/pages.py",
    "tests/structured_check.mjs": "tests/test_structured.py",
    "tests/aisdk/client.mjs": "tests/test_aisdk.py",
    "tests/docs_examples.py": "tests/test_structured.py",
    "tests/test_testkit_example.py": "tests/test_testkit_example.py",
    "testproject/testproject/asgi.py": "tests/test_consumers.py",
}

# Examples with a test of their own: a line each contains -> the test.
SPECIFIC = {
    "class Command(BaseCommand):": "test_management_command_example",
    "async def haiku(request):": "test_async_view_example",
    "parser = SSEParser()": "test_sse_client_example",
    "spent = Message.objects.filter(": "test_usage_query_example",
    "class TeamMixin:": "test_team_mixin_example",
    "def chat_members_only(": "test_permission_rule_example",
    "def bearer_token(request):": "test_bearer_example_is_run_by_test_security",
    "class PaidTurnCreateView(TurnCreateView):": "test_paid_quota_example",
    "@receiver(turn_finished)": "test_signal_receiver_example",
    "python manage.py llmstream chat --provider demo": "test_chat_command_example",
    "with_lifespan(get_asgi_application())": "test_with_lifespan_examples",
    "async for item in json_values(stream(": "test_structured_docstring_example",
    "with script_provider(": "test_script_provider_docstring_example",
    '→ {"type": "start"': "test_websocket_transcript",
    "{% llmstream_chat %}": "test_widget_page_example",
    '<div class="llmstream-answer"': "test_htmx_fragment_example",
    'sse-connect="/llmstream/turns/7a6f': "test_protocol_htmx_example",
    "# Caddy": "test_caddyfile_example",
}


def _is_settings(block: Block) -> bool:
    """Python whose statements are imports, and assignments to UPPERCASE names."""
    import ast

    try:
        tree = ast.parse(block.text)
    except SyntaxError:
        return False
    assigns = [node for node in tree.body if isinstance(node, ast.Assign)]
    return bool(assigns) and all(
        isinstance(node, ast.Import | ast.ImportFrom)
        or (
            isinstance(node, ast.Assign)
            and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)
        )
        for node in tree.body
    )


def classify(block: Block) -> str | None:
    """The check that takes an example, or None."""
    if block.page == "tutorial.rst":
        return "tutorial"
    if block.kind == "literalinclude":
        return "include"
    for line, test in SPECIFIC.items():
        if line in block.text:
            return test
    language = block.language
    if language == "python" and ">>> " in block.text:
        return "doctest"
    if language == "python" and "urlpatterns = [" in block.text:
        return "urls"
    if language == "python" and _is_settings(block):
        return "settings"
    if language in {"javascript", "js"}:
        return "javascript"
    if language in {"console", "sh"}:
        return "shell"
    if language == "text" and block.text.startswith(("retry:", "event:")):
        return "sse"
    if language in {"json", "http", "nginx"}:
        return language
    return None


def blocks_of(check: str) -> list[Any]:
    return [pytest.param(block, id=block.where) for block in BLOCKS if classify(block) == check]


def find(test: str) -> list[Block]:
    """The examples a specific test takes; at least one must still exist."""
    found = [block for block in BLOCKS if classify(block) == test]
    assert found, f"{test}: the docs no longer have an example it checks"
    return found


def test_every_example_is_checked() -> None:
    assert len(BLOCKS) > 50, "the extractor found too few examples"
    unchecked = [f"{b.where} ({b.language})" for b in BLOCKS if classify(b) is None]
    assert not unchecked, f"examples no test checks (add a check): {unchecked}"
    tests = {name for name in globals() if name.startswith("test_")}
    for test in set(SPECIFIC.values()):
        assert test in tests, f"SPECIFIC names a test that does not exist: {test}"


def test_every_page_of_the_site_is_read() -> None:
    """Each document a toctree lists, in a folder too (``providers/index``), is a page whose
    examples the checks read: a page the extractor missed would go unchecked."""
    read = set(pages())
    assert DOCS / "index.rst" in read and DOCS / "providers" / "index.rst" in read, read
    listed = 0
    for page in read:
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^\.\. toctree::.*\n((?:   .*\n|\n)*)", text, re.M):
            for line in match[1].splitlines():
                entry = line.strip()
                if not entry or entry.startswith(":"):
                    continue
                entry = re.sub(r"^.*<(.+)>$", r"\1", entry)  # "Title <document>"
                base = DOCS if entry.startswith("/") else page.parent
                document = base / f"{entry.lstrip('/')}.rst"
                assert document in read, f"{page_name(page)}: {entry} is not a page the tests read"
                listed += 1
    assert listed > len(read) / 2, f"found only {listed} toctree entries: has the format changed?"


def test_each_provider_page_has_working_settings() -> None:
    """docs/providers/<backend>.rst shows a settings example for its backend, which
    ``test_settings_examples`` runs through the system checks."""
    provider_pages = sorted((DOCS / "providers").glob("*.rst"))
    assert len(provider_pages) >= 7, provider_pages
    for page in provider_pages:
        if page.name == "index.rst":
            continue
        backend = f'"BACKEND": "django_llmstream.providers.{page.stem}.'
        settings_examples = [
            b for b in BLOCKS if b.page == page_name(page) and classify(b) == "settings"
        ]
        assert any(backend in b.text for b in settings_examples), (
            f"{page_name(page)}: no settings example with {backend}"
        )


def test_pages_use_nothing_furo_shows_as_an_error() -> None:
    """furo draws a red error box (from its CSS, so no Sphinx warning) over ``contents``."""
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^\.\. contents::.*\n((?:   .*\n)*)", text, re.M):
            assert "this-will-duplicate-information-and-it-is-still-useful-here" in match[1], (
                f"{page_name(page)}: furo shows an error for a table of contents (its own sidebar "
                "has one already)"
            )


def test_installation_page_matches_pyproject() -> None:
    """The versions and extras installation.rst names are the package's."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    page = (DOCS / "installation.rst").read_text(encoding="utf-8")
    pythons = [
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ]
    stated = re.search(r"\*\*Python\*\* ([\d., or]+)\.", page)
    assert stated and re.findall(r"3\.\d+", stated[1]) == pythons, (stated, pythons)
    django = next(d for d in project["dependencies"] if d.startswith("django>="))
    assert f"**Django** {django.removeprefix('django>=')} or newer" in page
    documented = set(re.findall(r"^   \* - ``(\w+)``$", page, re.M))
    public = _pyproject_extras() - {"test", "dev", "demo", "bench"}
    assert documented == public, f"extras: documented {documented}, in pyproject {public}"


def test_readme_points_at_the_docs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert "docs/tutorial.rst" in links and "docs/index.rst" in links, links
    for link in links:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"
    assert "make docs" in readme
    targets, makefile = _makefile()
    assert "docs" in targets
    recipe = makefile.split("\ndocs:", 1)[1].split("\n\n", 1)[0]
    assert "-m sphinx -W" in recipe and " docs " in recipe, recipe


# -- literalinclude ---------------------------------------------------------------------------


@pytest.mark.parametrize("block", blocks_of("include"))
def test_included_files_are_run_by_a_test(block: Block) -> None:
    assert block.path is not None
    relative = block.path.relative_to(ROOT).as_posix()
    assert relative in TESTED_FILES, f"{block.where}: {relative} is not a file a test runs"
    test = ROOT / TESTED_FILES[relative]
    module = relative.removesuffix(block.path.suffix).replace("/", ".")  # tests.docs_examples
    names = {block.path.name, module, module.removeprefix("testproject.")}
    code = test.read_text(encoding="utf-8")
    assert test == block.path or any(name in code for name in names), f"{test} runs no {names}"
    assert block.text.strip(), f"{block.where}: the included part is empty"


# -- settings ---------------------------------------------------------------------------------


def _environment(text: str) -> dict[str, str]:
    """Placeholders for the environment variables an example reads."""
    names = re.findall(r"environ(?:\.get\(|\[)\s*[\"'](\w+)[\"']", text)
    return {name: f"test-{name.lower()}" for name in names}


@pytest.fixture
def doc_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """The modules the security page writes (``mysite.llmstream_rules`` …), importable."""
    package = types.ModuleType("mysite")
    package.__path__ = []
    monkeypatch.setitem(sys.modules, "mysite", package)
    for test, name in (
        ("test_permission_rule_example", "llmstream_rules"),
        ("test_bearer_example_is_run_by_test_security", "llmstream_auth"),
    ):
        module = types.ModuleType(f"mysite.{name}")
        exec(compile(find(test)[0].text, f"mysite/{name}.py", "exec"), module.__dict__)
        monkeypatch.setitem(sys.modules, module.__name__, module)
        setattr(package, name, module)


def exec_example(block: Block, monkeypatch: pytest.MonkeyPatch, **names: Any) -> dict[str, Any]:
    for name, value in _environment(block.text).items():
        monkeypatch.setenv(name, value)
    namespace: dict[str, Any] = {"__name__": "doc_example", **names}
    exec(compile(block.text, block.where, "exec"), namespace)
    return namespace


@pytest.mark.parametrize("block", blocks_of("settings"))
def test_settings_examples(
    block: Block, monkeypatch: pytest.MonkeyPatch, doc_modules: None
) -> None:
    check_settings_example(block, monkeypatch)


def test_settings_check_fails_on_wrong_examples(
    monkeypatch: pytest.MonkeyPatch, doc_modules: None
) -> None:
    for text in (
        'LLMSTREAM = {"HEARTBEAT": 15}',  # a typo: W001
        'LLMSTREAM = {"PROVIDERS": {"x": {"BACKEND": "no.such.Backend"}}}',
        'LLMSTREAM = {"PERMISSION": "mysite.llmstream_rules.no_such_rule"}',
        'INSTALLED_APPS = ["django_llmstreem"]',
        'LOGGING = {"version": 1, "handlers": {"h": {"class": "no.Such"}}}',
    ):
        block = Block("wrong.rst", 1, "code-block", "python", text + "\n")
        with pytest.raises((AssertionError, ValueError)):
            check_settings_example(block, monkeypatch)


def check_settings_example(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = exec_example(block, monkeypatch)
    values = {name: value for name, value in namespace.items() if name.isupper()}
    assert values, f"{block.where}: sets no setting"
    if "LLMSTREAM" in values:
        with override_settings(**{k: v for k, v in values.items() if k != "INSTALLED_APPS"}):
            messages = check_settings()
        # W030: a LIMITS example counted in the test settings' per-process cache.
        problems = [f"{m.id}: {m.msg}" for m in messages if m.id != "llmstream.W030"]
        assert not problems, f"{block.where}: {problems}"
    for app in values.get("INSTALLED_APPS", []):
        assert importlib.util.find_spec(app) is not None, f"{block.where}: no app {app}"
    if "LOGGING" in values:
        try:
            logging.config.dictConfig(values["LOGGING"])
        finally:
            logging.config.dictConfig(settings.LOGGING)


@pytest.mark.parametrize("block", blocks_of("urls"))
def test_urlconf_examples(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("doc_urls")
    exec(compile(block.text, block.where, "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "doc_urls", module)
    with override_settings(ROOT_URLCONF="doc_urls"):
        assert resolve("/llmstream/stream/").func.view_class is views.StreamView
        assert reverse("llmstream:turn-create") == "/llmstream/turns/"


@pytest.mark.parametrize("block", blocks_of("doctest"))
def test_doctest_examples(block: Block) -> None:
    test = doctest.DocTestParser().get_doctest(block.text, {}, block.where, block.page, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    output = io.StringIO()
    runner.run(test, out=output.write)
    assert test.examples, f"{block.where}: no doctest examples"
    assert runner.failures == 0, output.getvalue()


# -- JavaScript -------------------------------------------------------------------------------


@pytest.mark.skipif(NODE is None, reason="checking the JavaScript examples needs node")
@pytest.mark.parametrize("block", blocks_of("javascript"))
def test_javascript_examples_parse(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "example.mjs"  # a module: the examples may use top-level await
    script.write_text(block.text, encoding="utf-8")
    result = subprocess.run(
        [NODE or "node", "--check", str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{block.where}:\n{result.stderr}"


# A browser's document, fetch and EventSource for the examples, in Node: relative URLs go to
# the live server, with the CSRF cookie the page would have.
NODE_BROWSER = r"""
const ORIGIN = process.env.ORIGIN;
const TOKEN = "t".repeat(32);
const cookies = new Map([["csrftoken", TOKEN]]);
const cookieHeader = () => [...cookies].map(([k, v]) => `${k}=${v}`).join("; ");
const output = [];
globalThis.document = {
  cookie: `csrftoken=${TOKEN}`,
  querySelector: () => ({append: (text) => output.push(text)}),
};
const nodeFetch = globalThis.fetch;
globalThis.fetch = async (url, init = {}) => {
  const response = await nodeFetch(new URL(url, ORIGIN), {
    ...init, headers: {...(init.headers || {}), Cookie: cookieHeader()},
  });
  for (const line of response.headers.getSetCookie()) {
    const [pair] = line.split(";");
    const at = pair.indexOf("=");
    cookies.set(pair.slice(0, at), pair.slice(at + 1));
  }
  return response;
};
globalThis.EventSource = class extends EventTarget {
  constructor(url) {
    super();
    this.controller = new AbortController();
    this.read(url).catch((error) => { if (error.name !== "AbortError") throw error; });
  }
  async read(url) {
    const response = await fetch(url, {signal: this.controller.signal});
    let buffer = "";
    for await (const chunk of response.body.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let end;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let type = "message", data = null;
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) type = line.slice(7);
          if (line.startsWith("data: ")) data = line.slice(6);
        }
        if (data !== null) {
          const event = new Event(type);
          event.data = data;
          this.dispatchEvent(event);
        }
      }
    }
  }
  close() { this.closed = true; this.controller.abort(); }
};
process.on("exit", () => console.log(JSON.stringify(output)));
"""


@pytest.mark.skipif(NODE is None, reason="running the JavaScript examples needs node")
@pytest.mark.parametrize(
    "example",
    [
        pytest.param(b, id=b.where)
        for b in BLOCKS
        if classify(b) == "javascript" and b.page == "quickstart.rst"
    ],
)
def test_quickstart_javascript_runs_against_the_server(
    example: Block, uvicorn_server: Any, transactional_db: None, tmp_path: Path
) -> None:
    script = tmp_path / "example.mjs"
    helper = ""
    if "function csrfToken" not in example.text:  # the second example uses the first's
        first = next(b.text for b in BLOCKS if "function csrfToken" in b.text)
        found = re.search(r"function csrfToken\(\) \{.*?\n\}\n", first, re.S)
        assert found
        helper = found[0]
    script.write_text(NODE_BROWSER + helper + example.text, encoding="utf-8")
    result = subprocess.run(
        [NODE or "node", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ORIGIN": uvicorn_server.url},
    )
    assert result.returncode == 0, f"{example.where}:\n{result.stderr}"
    pieces = json.loads(result.stdout.strip().splitlines()[-1])
    from django_llmstream.providers.demo import demo_reply

    assert "".join(pieces) == demo_reply("Write a haiku about streams."), pieces
    assert len(pieces) > 3, "the answer was not streamed in pieces"


# -- shell commands ---------------------------------------------------------------------------


@functools.cache
def _uvicorn_help() -> str:
    uvicorn = Path(sys.executable).parent / "uvicorn"
    return subprocess.run(
        [str(uvicorn), "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout


@functools.cache
def _makefile() -> tuple[set[str], str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w.-]*):", text, re.M)), text


def _pyproject_extras() -> set[str]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return set(tomllib.load(file)["project"]["optional-dependencies"])


def check_command(command: str, where: str) -> str | None:
    """Raise if ``command`` names something that does not exist; return a reason when the
    command cannot be checked here (the caller skips it)."""
    from packaging.requirements import Requirement

    for part in command.split("|"):
        words = shlex.split(part.replace("$(", "").replace(")", ""))
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            words = words[1:]  # VAR=value before a command
        if not words:
            continue
        program = words[0]
        if program in {"echo", "export"}:
            continue
        if program == "cd":
            if words[1] == "testproject":
                assert (ROOT / "testproject").is_dir()
            continue
        if words[:3] == ["python", "-m", "pip"] or program == "pip":
            args = words[3:] if program == "python" else words[1:]
            assert args[0] == "install", f"{where}: {command}"
            for spec in args[1:]:
                requirement = Requirement(spec)
                if requirement.name == "django-llmstream":
                    unknown = requirement.extras - _pyproject_extras()
                    assert not unknown, f"{where}: no such extra {unknown}"
                else:
                    importlib.metadata.distribution(requirement.name)
            continue
        if program.endswith("python") and words[1:2] == ["manage.py"]:
            name, args = words[2], words[3:]
            commands = get_commands()
            assert name in commands, f"{where}: no management command {name!r}"
            parser = load_command_class(commands[name], name).create_parser("manage.py", name)
            parser.parse_args(args)  # CommandError on an unknown option or subcommand
            continue
        if program == "make":
            targets, text = _makefile()
            for word in words[1:]:
                if "=" in word:
                    assert f"$({word.split('=')[0]})" in text, f"{where}: {word}"
                else:
                    assert word in targets, f"{where}: no make target {word!r}"
            continue
        if program == "uvicorn":
            assert re.fullmatch(r"[\w.]+:\w+", words[1]), f"{where}: {words[1]}"
            for option in (w for w in words[2:] if w.startswith("--")):
                assert option in _uvicorn_help(), f"{where}: uvicorn has no {option}"
            continue
        if program == "gunicorn":
            if shutil.which("gunicorn") is None:
                return "gunicorn is not installed"
            help_text = subprocess.run(
                ["gunicorn", "--help"], capture_output=True, text=True, timeout=60
            ).stdout
            for option in (w for w in words[2:] if w.startswith("-")):
                assert option in help_text, f"{where}: gunicorn has no {option}"
            worker = words[words.index("-k") + 1]
            module, _, attribute = worker.rpartition(".")
            assert hasattr(importlib.import_module(module), attribute), worker
            continue
        if program == "curl":
            url = next(w for w in words if w.startswith("http"))
            path = re.sub(r"^https?://[^/]+", "", url)
            assert resolve(path).func.view_class is views.StreamView, f"{where}: {path}"
            body = words[words.index("-d") + 1]
            assert set(json.loads(body)) <= {"prompt", "conversation", "provider", "model"}
            continue
        raise AssertionError(f"{where}: a command the tests do not know: {command}")
    return None


@pytest.mark.parametrize("block", blocks_of("shell"))
def test_shell_examples_name_what_exists(block: Block) -> None:
    commands = block.commands()
    assert commands, f"{block.where}: no command"
    skipped = [reason for c in commands if (reason := check_command(c, block.where))]
    if skipped:
        pytest.skip(f"{block.where}: " + "; ".join(skipped))


def test_shell_checks_fail_on_what_does_not_exist() -> None:
    for command in (
        "python manage.py migrat",
        "python manage.py llmstream export --formatt csv",
        "make doc",
        'pip install "django-llmstream[postgres]"',
        "uvicorn mysite.asgi:application --graceful 3",
        "rm -rf /",
    ):
        with pytest.raises(Exception):  # noqa: B017, PT011 - any failure will do
            check_command(command, "test")


# -- the protocol: SSE, JSON and HTTP examples against real responses ---------------------------


@pytest.fixture(scope="module")
def real_events(django_db_blocker: Any) -> dict[str, dict[str, Any]]:
    """One real event of each type, from turns the views run (scripted upstream)."""
    events: dict[str, dict[str, Any]] = {}

    async def collect() -> None:
        client = AsyncClient()
        script = [
            ReasoningDelta("Thinking."),
            "Hello",
            ToolCallDelta(0, '{"city":"Paris"}', id="call_1", name="get_weather"),
            Usage(input_tokens=3, output_tokens=2),
        ]
        with script_provider(*script):
            result = await arun_turn(client, "Hi")
        with script_provider("Hel", Fail("upstream_timeout", "Too slow.")):
            failed = await arun_turn(client, "Hi")
        for event in [*result.events, *failed.events]:
            events.setdefault(event.event, dict(event.data))

    with django_db_blocker.unblock():
        asyncio.run(collect())
    return events


def _keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _keys(item) for key, item in value.items()}
    return None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("block", blocks_of("sse"))
def test_sse_wire_examples(block: Block, real_events: dict[str, dict[str, Any]]) -> None:
    check_sse_example(block, real_events)


@pytest.mark.django_db(transaction=True)
def test_sse_check_fails_on_wrong_examples(real_events: dict[str, dict[str, Any]]) -> None:
    for text in (
        'event: done\nid: 1\ndata: {"finish_reason":"stop"}',  # keys missing
        'event: delta\nid: 2\ndata: {"text":"a"}\n\nevent: delta\nid: 1\ndata: {"text":"b"}',
        'event: error\nid: 1\ndata: {"type":"upstream_auth","message":"x","retryable":true}',
        'event: done\nid: 1\ndata: {"finish_reason":"finished","usage":{"input_tokens":1,'
        '"output_tokens":1,"cached_input_tokens":0,"reasoning_tokens":null},"cost":null,'
        '"ttft_ms":1,"duration_ms":1}',
        "event: finish\nid: 1\ndata: {}",
    ):
        with pytest.raises(AssertionError):
            check_sse_example(Block("wrong.rst", 1, "code-block", "text", text), real_events)
    html_stream = next(b for b in BLOCKS if classify(b) == "sse" and "event: close" in b.text)
    for wrong in ('data-finish-reason="length"', "event: close\nid: 5"):
        text = html_stream.text.replace('data-finish-reason="stop"', wrong, 1)
        if wrong.startswith("event"):
            text = html_stream.text.replace("event: close", wrong)
        with pytest.raises(AssertionError):
            check_sse_example(Block("wrong.rst", 1, "code-block", "text", text), real_events)


def check_sse_example(block: Block, real_events: dict[str, dict[str, Any]]) -> None:
    assert set(real_events) >= {"start", "delta", "reasoning", "tool_call", "done", "error"}
    if "\nevent: close\n" in block.text:
        check_html_stream_example(block)
        return
    events = SSEParser().feed(block.text.encode() + b"\n\n")
    assert events, f"{block.where}: no event"
    ids = [int(event.id) for event in events]
    assert ids == sorted(set(ids)), f"{block.where}: ids must increase: {ids}"
    for event in events:
        assert event.event in real_events, f"{block.where}: no {event.event!r} event exists"
        data = event.json()
        assert _keys(data) == _keys(real_events[event.event]), f"{block.where}: {event.event}"
        if event.event == "done":
            assert data["finish_reason"] in FINISH_REASONS
        if event.event == "error":
            assert data["type"] in ERROR_TYPES
            assert data["retryable"] is is_retryable(data["type"])


def check_html_stream_example(block: Block) -> None:
    """A ``?format=html`` stream, exactly: the answer its deltas spell out (and the usage its
    ``done`` fragment shows) replayed through the views gives the very same lines."""
    import html as html_module

    events = SSEParser().feed(block.text.encode() + b"\n\n")
    pieces = [html_module.unescape(e.data) for e in events if e.event == "delta"]
    assert pieces, f"{block.where}: no delta"
    done = next(e.data for e in events if e.event == "done")
    counts = re.search(r"(\d+) in · (\d+) out tokens", done)
    assert counts, done
    usage = Usage(input_tokens=int(counts[1]), output_tokens=int(counts[2]))

    async def replay() -> bytes:
        client = AsyncClient()
        with script_provider(*pieces, usage):
            created = await client.post("/llmstream/turns/", {"prompt": "Hi"}, "application/json")
            stream = await client.get(created.json()["events_url"] + "?format=html")
            return b"".join([chunk async for chunk in stream.streaming_content])

    real = asyncio.run(replay()).decode()

    def lines(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip().splitlines()]

    assert lines(block.text) == lines(real), f"{block.where}: the real stream is\n{real}"


def _json_blocks(keys: set[str]) -> list[Block]:
    found = [b for b in BLOCKS if classify(b) == "json" and keys <= set(json.loads(b.text))]
    assert found, f"no JSON example with {keys}"
    return found


OPENAI_SCRIPTED = {
    "openai": {
        "BACKEND": "django_llmstream.testing.ScriptedProvider",
        "MODELS": ["gpt-4o-mini"],
        "OPTIONS": {"SCRIPT": ["Server-Sent Events …"]},
    }
}


@pytest.fixture
def openai_alias() -> Iterator[None]:
    """A provider named like the protocol's examples (``openai``, ``gpt-4o-mini``)."""
    with override_settings(
        LLMSTREAM={**settings.LLMSTREAM, "PROVIDERS": OPENAI_SCRIPTED, "DEFAULT_PROVIDER": None}
    ):
        yield


def test_every_json_example_is_compared() -> None:
    compared = {
        b.where
        for keys in ({"prompt"}, {"error"}, {"results", "next"}, {"messages"})
        for b in _json_blocks(keys)
    }
    assert compared == {b.where for b in BLOCKS if classify(b) == "json"}


@pytest.mark.django_db(transaction=True)
async def test_json_and_http_examples_match_the_views(openai_alias: None) -> None:
    client = AsyncClient()
    (request,) = _json_blocks({"prompt"})
    body = json.loads(request.text)
    # The request body: valid for a new conversation without "conversation" …
    created = await client.post(
        "/llmstream/turns/",
        {k: v for k, v in body.items() if k != "conversation"},
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    turn = created.json()
    await arun_turn(client, "wait for the first turn", endpoint="turns", check=False)
    # … and "conversation" continues one (where "system" is refused, as the page says).
    follow = {**body, "conversation": turn["conversation"]}
    refused = await client.post("/llmstream/turns/", follow, content_type="application/json")
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "system"
    follow.pop("system")
    result = await arun_turn(client, **follow)
    assert result.done is not None, result.error

    # The 201 of POST turns/.
    (http_201,) = [b for b in BLOCKS if classify(b) == "http" and "201" in b.text]
    headers, _, shown = http_201.text.partition("\n\n")
    assert "Content-Type: application/json" in headers
    assert created["Content-Type"] == "application/json"
    shown_body = json.loads(shown)
    assert shown_body.keys() == turn.keys()
    for name in ("events_url", "stop_url"):
        assert shown_body[name].replace(shown_body["turn"], turn["turn"]) == turn[name]

    # The error example, exactly.
    (error,) = _json_blocks({"error"})
    shown_error = json.loads(error.text)
    wrong_model = re.search(r"Model '([^']+)'", shown_error["error"]["message"])
    assert wrong_model
    response = await client.post(
        "/llmstream/turns/",
        {"prompt": "Hi", "provider": "openai", "model": wrong_model[1]},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json() == shown_error

    # The conversation list and a conversation.
    (listing,) = _json_blocks({"results", "next"})
    real_list = (await client.get("/llmstream/conversations/")).json()
    assert _keys(json.loads(listing.text)["results"][0]) == _keys(real_list["results"][0])
    assert json.loads(listing.text).keys() == real_list.keys()
    (detail,) = _json_blocks({"messages"})
    shown_detail = json.loads(detail.text)
    real_detail = (await client.get(f"/llmstream/conversations/{turn['conversation']}/")).json()
    assert shown_detail.keys() == real_detail.keys()
    assert [m["role"] for m in shown_detail["messages"]] == ["user", "assistant"]
    for shown_message, real_message in zip(
        shown_detail["messages"], real_detail["messages"], strict=False
    ):
        assert shown_message.keys() == real_message.keys()

    # The headers of an event stream.
    (http_200,) = [b for b in BLOCKS if classify(b) == "http" and "200 OK" in b.text]
    stream = await client.post("/llmstream/stream/", {"prompt": "Hi"}, "application/json")
    async for _ in stream.streaming_content:
        pass
    for line in http_200.text.splitlines()[1:]:
        name, _, value = line.partition(": ")
        assert stream[name] == value, f"{http_200.where}: {name}"


# -- HTML examples ----------------------------------------------------------------------------


class _Elements(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {name: value or "" for name, value in attrs}))


def elements(markup: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Elements()
    parser.feed(markup)
    return parser.elements


def _has_element(real: list[tuple[str, dict[str, str]]], tag: str, attrs: dict[str, str]) -> bool:
    for real_tag, real_attrs in real:
        if real_tag != tag:
            continue
        if all(
            set(value.split()) <= set(real_attrs.get(name, "").split())
            if name == "class"
            else real_attrs.get(name) == value
            for name, value in attrs.items()
        ):
            return True
    return False


@pytest.mark.django_db(transaction=True)
async def test_htmx_fragment_example() -> None:
    """The fragment frontends.rst shows is what POST turns/?format=html answers (our
    template may add attributes, not change them)."""
    (block,) = find("test_htmx_fragment_example")
    client = AsyncClient()
    await client.get("/llmstream/conversations/")
    response = await client.post("/llmstream/turns/?format=html", {"prompt": "Hi"})
    assert response.status_code == 201, response.content
    turn = response["X-LLMStream-Turn"]
    real = elements(response.content.decode())
    for tag, attrs in elements(block.text.replace("TURN", turn)):
        assert _has_element(real, tag, attrs), f"{block.where}: <{tag} {attrs}> is not rendered"


@pytest.mark.django_db(transaction=True)
async def test_protocol_htmx_example() -> None:
    """A page's own htmx markup: the stream it connects to, the events it swaps, the event
    it closes on — all as a real ``?format=html`` stream has them."""
    (block,) = find("test_protocol_htmx_example")
    client = AsyncClient()
    names: set[str] = set()
    for script in (
        [ReasoningDelta("x"), "Hi", ToolCallDelta(0, "{}", id="c1", name="f")],
        ["Hi", Fail("upstream_timeout", "Too slow.")],
    ):
        with script_provider(*script):
            response = await client.post("/llmstream/turns/", {"prompt": "Hi"}, "application/json")
            stream = await client.get(response.json()["events_url"] + "?format=html")
            raw = b"".join([chunk async for chunk in stream.streaming_content])
        names |= {event.event for event in SSEParser().feed(raw)}
    assert {"start", "delta", "done", "error", "close"} <= names
    shown = elements(block.text)
    (connect,) = [attrs for _, attrs in shown if "sse-connect" in attrs]
    path, _, query = connect["sse-connect"].partition("?")
    assert resolve(path).func.view_class is views.TurnEventsView
    assert query == "format=html"
    assert connect["sse-close"] in names and connect["sse-close"] == "close"
    for _, attrs in shown:
        for name in attrs.get("sse-swap", "").split(","):
            assert not name or name in names, f"{block.where}: no {name!r} event in the stream"


def test_widget_page_example() -> None:
    (block,) = find("test_widget_page_example")
    request = RequestFactory().get("/")
    rendered = engines["django"].from_string(block.text).render({}, request)
    assert "data-llmstream-chat" in rendered
    assert "/static/django_llmstream/llmstream-chat.js" in rendered
    assert "/static/django_llmstream/llmstream.css" in rendered


# -- specific examples ------------------------------------------------------------------------


def test_management_command_example(monkeypatch: pytest.MonkeyPatch) -> None:
    from django_llmstream.providers.demo import demo_reply

    (block,) = find("test_management_command_example")
    namespace = exec_example(block, monkeypatch)
    stdout = io.StringIO()
    command = namespace["Command"](stdout=stdout)
    parser = command.create_parser("manage.py", "ask")
    options = vars(parser.parse_args(["What is SSE?"]))
    command.handle(**options)
    output = stdout.getvalue()
    assert output.startswith(demo_reply("What is SSE?")), output
    assert re.search(r"\n\d+ tokens \(stop\)\n$", output), output


async def test_async_view_example(monkeypatch: pytest.MonkeyPatch) -> None:
    (block,) = find("test_async_view_example")
    namespace = exec_example(block, monkeypatch)
    openai = {
        "BACKEND": "django_llmstream.providers.demo.DemoProvider",
        "OPTIONS": {"DELAY": 0, "REPLY": "An old silent pond"},
    }
    providers = {**settings.LLMSTREAM["PROVIDERS"], "openai": openai}
    with override_settings(LLMSTREAM={**settings.LLMSTREAM, "PROVIDERS": providers}):
        response = await namespace["haiku"](RequestFactory().get("/haiku/"))
        body = b"".join([chunk async for chunk in response.streaming_content])
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert body.decode() == "An old silent pond"


def test_sse_client_example(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """The httpx client of python_api.rst, reading the protocol page's complete stream."""
    import httpx

    (block,) = find("test_sse_client_example")
    wire = next(b for b in BLOCKS if classify(b) == "sse" and ": ping" in b.text)
    body = wire.text.encode() + b"\n"

    @contextlib.contextmanager
    def fake_stream(method: str, url: str, **kwargs: Any) -> Iterator[Any]:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
        with (
            httpx.Client(transport=transport) as client,
            client.stream(method, url, **kwargs) as response,
        ):
            yield response

    monkeypatch.setattr(httpx, "stream", fake_stream)
    exec_example(block, monkeypatch)
    assert capsys.readouterr().out == "Hello!"


@pytest.mark.django_db
def test_usage_query_example(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.contrib.auth import get_user_model

    from django_llmstream.models import Conversation, Message

    (block,) = find("test_usage_query_example")
    user = get_user_model().objects.create_user("spender")
    conversation = Conversation.objects.create(owner=user, provider="demo", model="demo")
    for cost, tokens in ((Decimal("0.5"), 10), (Decimal("0.25"), 5)):
        Message.objects.create(
            conversation=conversation, role="assistant", cost=cost, output_tokens=tokens
        )
    request = types.SimpleNamespace(user=user)
    namespace = exec_example(block, monkeypatch, request=request)
    assert namespace["spent"] == {"cost__sum": Decimal("0.75"), "output_tokens__sum": 15}


def test_team_mixin_example(monkeypatch: pytest.MonkeyPatch) -> None:
    (block,) = find("test_team_mixin_example")
    namespace = exec_example(block, monkeypatch)
    view_class = namespace["TeamConversationDetailView"]
    assert issubclass(view_class, views.ConversationDetailView)
    assert view_class.get_queryset is namespace["TeamMixin"].get_queryset
    view = view_class()
    view.owner = views.Owner(user=None, session_key="")  # the attribute the example reads
    assert list(view.get_queryset()) == []


@pytest.mark.django_db
def test_permission_rule_example(doc_modules: None) -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    rule = sys.modules["mysite.llmstream_rules"].chat_members_only  # type: ignore[attr-defined]
    member = get_user_model().objects.create_user("member")
    member.groups.add(Group.objects.create(name="chat"))
    outsider = get_user_model().objects.create_user("outsider")
    request = types.SimpleNamespace
    assert rule(request(user=member), "start", None) is True
    assert rule(request(user=outsider), "start", None) is False
    assert rule(request(user=outsider), "view", object()) is True
    with override_settings(
        LLMSTREAM={**settings.LLMSTREAM, "PERMISSION": "mysite.llmstream_rules.chat_members_only"}
    ):
        assert check_settings() == []


def test_bearer_example_is_run_by_test_security() -> None:
    (block,) = find("test_bearer_example_is_run_by_test_security")
    assert block.caption == "mysite/llmstream_auth.py"
    test = (ROOT / "tests" / "test_security.py").read_text(encoding="utf-8")
    assert 'docs_example("mysite/llmstream_auth.py")' in test
    assert "def test_bearer_authenticator_of_the_docs" in test


async def test_paid_quota_example(monkeypatch: pytest.MonkeyPatch) -> None:
    from django_llmstream.quotas import QuotaExceeded

    (block,) = find("test_paid_quota_example")
    credit = {"left": False}

    async def has_credit(user: Any) -> bool:
        return credit["left"]

    namespace = exec_example(block, monkeypatch, has_credit=has_credit)
    view = namespace["PaidTurnCreateView"]()
    view.owner = views.Owner(user=None, session_key="visitor")
    with pytest.raises(QuotaExceeded) as refused:
        await view.check_quota(RequestFactory().post("/"), None)
    assert refused.value.status == 429
    assert refused.value.error_type == "no_credit"
    assert refused.value.headers == {"Retry-After": "3600"}
    credit["left"] = True
    await view.check_quota(RequestFactory().post("/"), None)


@pytest.mark.django_db(transaction=True)
def test_signal_receiver_example(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.test import Client

    from django_llmstream.signals import turn_finished
    from django_llmstream.testing import run_turn

    (block,) = find("test_signal_receiver_example")
    lines: list[dict[str, Any]] = []

    class Invoice:
        @staticmethod
        def add_line(**line: Any) -> None:
            lines.append(line)

    namespace = exec_example(block, monkeypatch, Invoice=Invoice)
    priced = {
        "BACKEND": "django_llmstream.testing.ScriptedProvider",
        "PRICES": {"scripted": {"input": "1.00", "output": "2.00"}},
        "OPTIONS": {"SCRIPT": ["Hi", {"usage": {"input_tokens": 10, "output_tokens": 5}}]},
    }
    try:
        llm = {**settings.LLMSTREAM, "PROVIDERS": {"scripted": priced}, "DEFAULT_PROVIDER": None}
        with override_settings(LLMSTREAM=llm):
            result = run_turn(Client(), "Hi")
    finally:
        turn_finished.disconnect(namespace["bill"])
    assert lines == [{"turn_id": result.turn, "amount": Decimal("0.00002000")}]


@pytest.mark.django_db(transaction=True)
def test_chat_command_example(monkeypatch: pytest.MonkeyPatch) -> None:
    (block,) = find("test_chat_command_example")
    (command,) = block.commands()
    prompt = shlex.split(command.split("|")[0])[1]
    shown = [line for line in block.text.splitlines() if not line.startswith("$ ")]
    stdout, stderr = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.StringIO(prompt + "\n"))
    demo = {
        "demo": {"BACKEND": "django_llmstream.providers.demo.DemoProvider", "OPTIONS": {"DELAY": 0}}
    }
    with override_settings(LLMSTREAM={**settings.LLMSTREAM, "PROVIDERS": demo}):
        call_command(*shlex.split(command.split("|")[1])[2:], stdout=stdout, stderr=stderr)
    got = (stdout.getvalue() + stderr.getvalue()).splitlines()
    answer = shown[0].removesuffix(" …")
    assert got[0].startswith(answer), got[0]
    summary = next(line for line in got if line.startswith("["))
    # The figures the page shows, but the times, which differ on every run.
    pattern = re.escape(shown[1])
    pattern = re.sub(r"(first\\ token\\ )\d+(\\ ms)", r"\1\\d+\2", pattern)
    pattern = re.sub(r"(·\\ )\d+(\\ ms\\\])", r"\1\\d+\2", pattern)
    assert re.fullmatch(pattern, summary), (shown[1], summary)
    conversation = re.escape(shown[2]).replace("1b0d…", "[0-9a-f-]+")
    assert any(re.fullmatch(conversation, line) for line in got), got


@pytest.mark.parametrize(
    "block",
    [pytest.param(b, id=b.where) for b in BLOCKS if classify(b) == "test_with_lifespan_examples"],
)
async def test_with_lifespan_examples(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = exec_example(block, monkeypatch)
    application = namespace["application"]
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await application({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


def test_with_lifespan_examples_exist() -> None:
    assert len(find("test_with_lifespan_examples")) >= 2  # deployment.rst and the docstring


async def test_structured_docstring_example(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from django_llmstream import json_values, stream

    (block,) = find("test_structured_docstring_example")
    reply = '[{"name": "red"}, {"name": "green"}, {"name": "blue"}]'
    code = "async def example():\n" + "".join(f"    {line}\n" for line in block.text.splitlines())
    with script_provider(reply[:9], reply[9:30], reply[30:]):
        namespace = exec_example(
            Block(block.page, 0, "docstring", "python", code),
            monkeypatch,
            json_values=json_values,
            stream=stream,
        )
        await namespace["example"]()
    assert capsys.readouterr().out.split() == ["red", "green", "blue"]


@pytest.mark.django_db(transaction=True)
def test_script_provider_docstring_example(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.test import Client

    from django_llmstream.testing import run_turn

    (block,) = find("test_script_provider_docstring_example")
    exec_example(
        block,
        monkeypatch,
        client=Client(),
        script_provider=script_provider,
        run_turn=run_turn,
        Usage=Usage,
    )


@pytest.mark.django_db(transaction=True)
async def test_websocket_transcript() -> None:
    """The socket conversation of frontends.rst, replayed against the consumer: the same
    messages, with the same keys and the same values where the page shows them whole."""
    pytest.importorskip("channels", reason="the WebSocket consumer needs Django Channels")
    from tests.test_consumers import _connect, _session_cookie

    (block,) = find("test_websocket_transcript")
    lines = []
    for line in block.text.splitlines():
        direction, _, message = line.partition(" ")
        # "{…}" and ", …}" leave keys out: a marker key says so.
        message = message.replace(", …}", ', "…": true}').replace("{…}", '{"…": true}')
        lines.append((direction, json.loads(message)))
    communicator = await _connect(await _session_cookie())
    turn = ""
    try:
        with script_provider("Hello", Pause(None), alias="demo", models=["demo"]):
            for direction, shown in lines:
                if direction == "→":
                    sent = json.loads(json.dumps(shown, ensure_ascii=False).replace("7a6f…", turn))
                    await communicator.send_json_to(sent)
                    continue
                assert direction == "←", line
                got = await communicator.receive_json_from(timeout=5)
                turn = got.get("turn", turn)
                _assert_shown_values(shown, got)
    finally:
        await communicator.disconnect()


def _assert_shown_values(shown: Any, got: Any) -> None:
    """Equal, except values the page abbreviates (ids with …) or leaves out ({…})."""
    if isinstance(shown, dict):
        assert isinstance(got, dict), (shown, got)
        keys = set(shown) - {"…"}
        assert keys <= set(got) if "…" in shown else keys == set(got), (shown, got)
        for key in keys:
            _assert_shown_values(shown[key], got[key])
    elif isinstance(shown, str) and "…" in shown:
        assert isinstance(got, str)
        assert got.startswith(shown.split("…")[0]) or len(shown) < 8, (shown, got)
    else:
        assert shown == got


def test_caddyfile_example(tmp_path: Path) -> None:
    (block,) = find("test_caddyfile_example")
    caddy = shutil.which("caddy")
    if caddy is None:
        pytest.skip("checking the Caddyfile needs caddy")
    config = tmp_path / "Caddyfile"
    config.write_text(block.text.replace("# Caddy\n", ""), encoding="utf-8")
    result = subprocess.run(
        [caddy, "adapt", "--config", str(config), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("block", blocks_of("nginx"))
def test_nginx_examples(block: Block, tmp_path: Path) -> None:
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("checking the nginx configuration needs nginx")
    config = tmp_path / "nginx.conf"
    pid = tmp_path / "nginx.pid"
    wrapper = (
        f"pid {pid}; error_log stderr; events {{}}\n"
        "http {\n upstream app { server 127.0.0.1:8000; }\n server {\n listen 127.0.0.1:8080;\n"
    )
    config.write_text(
        wrapper + block.text + " }\n}\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [nginx, "-t", "-c", str(config), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr

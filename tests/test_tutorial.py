"""docs/tutorial.rst, followed literally on a fresh project.

The test reads the tutorial's code blocks in order and does what each says, as a reader
would: ``django-admin startproject``, the files of ``docs/tutorial/`` (which the page
includes, so the page and the test cannot drift apart) written where their captions say,
``manage.py migrate`` and ``check``, then ``uvicorn`` — the venv's own, in a subprocess, on
a free port — and what the reader then does with it: load the page, post a prompt, watch the
answer stream in (in Chromium too, when it is installed), run the curl commands, log into the
admin. The last part points the OpenAI settings at the fake upstream of ``tests/upstream.py``,
a local OpenAI-compatible server, as the tutorial's Ollama example does. Nothing reaches the
network. A block or command the test does not know fails it: a new step in the tutorial needs
a step here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from django_llmstream.providers.demo import demo_reply
from django_llmstream.sse import ServerSentEvent, SSEParser
from tests.docs_blocks import DOCS, Block, page_blocks
from tests.upstream import DEFAULT_TEXT, FakeUpstream

pytestmark = pytest.mark.e2e

TUTORIAL = DOCS / "tutorial.rst"
BIN = Path(sys.executable).parent
DJANGO_ADMIN = BIN / "django-admin"
UVICORN = BIN / "uvicorn"
# What the tutorial says the reader's server listens on; the test's server uses a free port.
TUTORIAL_ORIGIN = "http://127.0.0.1:8000"
# The tutorial's local-server example (Ollama): the test serves it with the fake upstream.
LOCAL_SERVER = "http://127.0.0.1:11434/v1"
PROMPT = "Write one sentence about rivers."
ADMIN = {"username": "admin", "password": "tutorial-password", "email": "admin@example.com"}
COMMAND_TIMEOUT = 120
SERVER_START_TIMEOUT = 30

if not (DJANGO_ADMIN.exists() and UVICORN.exists()):
    pytest.skip(
        f"the tutorial test runs {DJANGO_ADMIN.name} and {UVICORN.name} from {BIN}; "
        'install the package with its test extra there (pip install -e ".[test]")',
        allow_module_level=True,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def merge_settings(source: str, snippet: str) -> str:
    """What the tutorial asks of ``settings.py``: the snippet replaces the statement that
    assigns the same name (``INSTALLED_APPS``, ``LLMSTREAM``), or goes at the end."""
    assigned = [
        target.id
        for node in ast.parse(snippet).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    ]
    assert assigned, f"a settings snippet that assigns nothing:\n{snippet}"
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == assigned[0] for target in node.targets
        ):
            lines = source.splitlines(keepends=True)
            assert node.end_lineno is not None
            return "".join(lines[: node.lineno - 1]) + snippet + "".join(lines[node.end_lineno :])
    return source.rstrip("\n") + "\n\n\n" + snippet


def read_events(response: httpx.Response) -> list[tuple[float, ServerSentEvent]]:
    """The events of a streaming response, each with the time it arrived."""
    parser = SSEParser()
    events: list[tuple[float, ServerSentEvent]] = []
    for chunk in response.iter_bytes():
        now = time.monotonic()
        events += [(now, event) for event in parser.feed(chunk)]
    return events


def assert_streamed(events: list[tuple[float, ServerSentEvent]], text: str, spread: float) -> None:
    """A complete turn whose text arrived in pieces, over at least ``spread`` seconds."""
    names = [event.event for _, event in events]
    assert names[0] == "start", names
    assert names[-1] == "done", names
    assert set(names[1:-1]) == {"delta"}, names
    assert "".join(event.json()["text"] for _, event in events[1:-1]) == text
    deltas = [at for at, event in events if event.event == "delta"]
    assert len(deltas) >= 3, "the answer came in one piece"
    assert events[-1][0] - deltas[0] >= spread, "the answer arrived all at once: buffered?"


class Reader:
    """Someone following the tutorial: a working directory, a shell's exported variables,
    and the server they started."""

    def __init__(self, home: Path, upstream: FakeUpstream) -> None:
        self.cwd = home
        self.upstream = upstream
        self.exports: dict[str, str] = {}
        self.server: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log = home / "uvicorn.log"
        self.curl_output = ""
        self.did: list[str] = []
        self.env = {
            name: value
            for name, value in os.environ.items()
            # A fresh shell: nothing of this test run's Django or provider configuration.
            if not name.startswith(("DJANGO_", "OPENAI_", "LLMSTREAM_", "PYTEST_"))
            and name not in {"PYTHONPATH", "COVERAGE_PROCESS_START"}
        }
        self.env["PATH"] = f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the blocks of the page ------------------------------------------------------

    def follow(self, block: Block) -> None:
        if block.kind == "literalinclude":
            self.include(block)
        elif block.language == "console":
            for command in block.commands():
                self.run(command)
        elif block.language == "text":
            self.compare_output(block)
        else:
            raise AssertionError(f"{block.where}: a {block.language} block the test cannot follow")

    def include(self, block: Block) -> None:
        caption = block.caption
        assert caption, f"{block.where}: a file without a caption saying where it goes"
        if caption == "in a second terminal":
            self.run_script(block)
            return
        target = self.cwd / caption
        if caption.endswith("settings.py"):
            target.write_text(merge_settings(target.read_text(encoding="utf-8"), block.text))
            self.did.append(f"edit {caption}")
            if '"openai"' in block.text:
                self.check_fails_without_a_key()
        else:
            assert target.parent.is_dir(), f"{block.where}: {target.parent} does not exist yet"
            target.write_text(block.text, encoding="utf-8")
            self.did.append(f"write {caption}")

    def run(self, command: str) -> None:
        words = shlex.split(command)
        self.did.append(command)
        if words[:3] == ["python", "-m", "venv"] or words[0] == "source":
            return  # the test runs in a virtual environment already
        if words[:4] == ["python", "-m", "pip", "install"]:
            for name in words[4:]:
                importlib.metadata.distribution(re.split(r"[\[<>=]", name)[0])
            return
        if words[0] == "django-admin":
            self.execute([str(DJANGO_ADMIN), *words[1:]])
        elif words[0] == "cd":
            self.cwd = self.cwd / words[1]
            assert self.cwd.is_dir(), f"cd {words[1]}: no such directory"
        elif words[:2] == ["mkdir", "-p"]:
            (self.cwd / words[2]).mkdir(parents=True, exist_ok=True)
        elif words[:2] == ["python", "manage.py"]:
            self.manage(words[2:])
        elif words[0] == "export":
            for assignment in words[1:]:
                name, _, value = assignment.partition("=")
                self.exports[name] = self.upstream.base_url if value == LOCAL_SERVER else value
        elif words[0] == "uvicorn":
            assert words[1:] == ["mysite.asgi:application"], command
            self.start_server()
            self.use_site()
        else:
            raise AssertionError(f"the tutorial runs a command the test does not know: {command}")

    # -- commands -------------------------------------------------------------------

    def execute(
        self, argv: list[str], env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv,
            cwd=self.cwd,
            env={**self.env, **self.exports, **(env or {})},
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if check:
            assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def manage(self, args: list[str]) -> None:
        if args == ["createsuperuser"]:
            # The prompts, answered through the variables Django reads with --noinput.
            env = {f"DJANGO_SUPERUSER_{name.upper()}": value for name, value in ADMIN.items()}
            self.execute([sys.executable, "manage.py", *args, "--noinput"], env=env)
            self.use_admin()
            return
        result = self.execute([sys.executable, "manage.py", *args])
        if args == ["check"]:
            assert "System check identified no issues" in result.stdout, result.stdout

    def check_fails_without_a_key(self) -> None:
        """The tutorial: with neither a key nor another base URL, ``check`` says E006."""
        result = self.execute([sys.executable, "manage.py", "check"], check=False)
        assert result.returncode != 0
        assert "llmstream.E006" in result.stderr, result.stderr
        assert "API_KEY" in result.stderr

    def start_server(self) -> None:
        self.stop_server()
        self.port = free_port()
        with self.log.open("ab") as log:
            self.server = subprocess.Popen(
                [str(UVICORN), "mysite.asgi:application", "--port", str(self.port)],
                cwd=self.cwd,
                env={**self.env, **self.exports},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.server.poll() is None, f"uvicorn exited:\n{self.log.read_text()}"
            try:
                httpx.get(f"{self.url}/admin/login/", timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"uvicorn did not answer in {SERVER_START_TIMEOUT} s")

    def stop_server(self) -> None:
        if self.server is None:
            return
        self.server.send_signal(signal.SIGINT)
        try:
            self.server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait(timeout=10)
        self.server = None

    # -- what the reader does with the site ------------------------------------------

    def use_site(self) -> None:
        """Open the page, post a prompt, see the answer stream in."""
        with httpx.Client(base_url=self.url, timeout=30) as client:
            page = client.get("/")
            assert page.status_code == 200, page.text
            assert "data-llmstream-chat" in page.text  # {% llmstream_chat %}
            assert client.cookies.get("csrftoken"), "the page set no CSRF cookie"
            # {% llmstream_script %}: the browser must get the widget's files from uvicorn.
            assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
            assert len(assets) >= 2, page.text
            for asset in assets:
                response = client.get(asset)
                assert response.status_code == 200, asset
                assert response.headers["content-type"].startswith(("text/css", "text/javascript"))
            base_url = self.exports.get("OPENAI_BASE_URL")
            if "OPENAI_API_KEY" in self.exports and base_url is None:
                # api.openai.com: the widget offers it first, but the test asks no real model.
                assert 'value="openai|gpt-4o-mini" selected' in page.text
                return
            if base_url is not None:
                assert 'value="openai|llama3.2" selected' in page.text
                self.upstream.reset()
                self.upstream.respond(delay=0.15)
            with client.stream(
                "POST",
                "/llmstream/stream/",
                json={"prompt": PROMPT},
                headers={"X-CSRFToken": client.cookies["csrftoken"]},
            ) as response:
                assert response.status_code == 200, response.read()
                assert response.headers["content-type"].startswith("text/event-stream")
                events = read_events(response)
        if base_url is None:
            assert_streamed(events, demo_reply(PROMPT), spread=1.0)
            assert events[0][1].json()["provider"] == "demo"
            self.use_browser()
        else:
            assert_streamed(events, DEFAULT_TEXT, spread=0.3)
            assert events[0][1].json()["provider"] == "openai"
            (request,) = self.upstream.requests
            assert request.path == "/v1/chat/completions"
            assert request.json["model"] == "llama3.2"
            assert request.json["messages"][-1] == {"role": "user", "content": PROMPT}

    def use_browser(self) -> None:
        """What the tutorial promises in a browser, when Chromium and Playwright are here."""
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            chromium = None
        if chromium is None:
            self.did.append("(no browser: Chromium or Playwright missing)")
            return
        failures: list[BaseException] = []
        # Playwright's sync API runs an event loop in its thread: give it a thread of its own.
        thread = threading.Thread(target=self._browse, args=(chromium, failures))
        thread.start()
        thread.join(timeout=90)
        assert not thread.is_alive(), "the browser did not finish in 90 s"
        if failures:
            raise failures[0]

    def _browse(self, chromium: str, failures: list[BaseException]) -> None:
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=chromium,
                    args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
                    headless=True,
                )
                try:
                    page = browser.new_page(viewport={"width": 900, "height": 640})
                    page.set_default_timeout(20_000)
                    errors: list[str] = []
                    page.on("pageerror", lambda exc: errors.append(str(exc)))
                    page.on(
                        "response",
                        lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None,
                    )
                    page.goto(f"{self.url}/")
                    page.fill("textarea[name=prompt]", PROMPT)
                    page.keyboard.press("Enter")
                    # Part of the answer is on the page while the rest is still coming.
                    page.wait_for_function(
                        """() => {
                          const answer = document.querySelector('.llmstream-message-assistant');
                          const body = answer && answer.querySelector('[data-body]');
                          return answer && answer.getAttribute('aria-busy') === 'true'
                            && body.textContent.length > 20;
                        }"""
                    )
                    screenshots = os.environ.get("LLMSTREAM_SCREENSHOTS")
                    if screenshots:
                        page.screenshot(path=str(Path(screenshots) / "llmstream-tutorial.png"))
                    page.wait_for_selector(
                        ".llmstream-message-assistant .llmstream-meta:not([hidden])"
                    )
                    text = page.text_content(".llmstream-message-assistant [data-body]") or ""
                    assert "offline demo provider" in text, text
                    assert not errors, errors
                finally:
                    browser.close()
        except BaseException as exc:
            failures.append(exc)

    def run_script(self, block: Block) -> None:
        """The curl commands, in "a second terminal" (with the test server's port)."""
        script = block.text.replace(TUTORIAL_ORIGIN, self.url)
        assert script != block.text, f"{block.where}: the script does not use {TUTORIAL_ORIGIN}"
        if shutil.which("curl") is None or shutil.which("awk") is None:
            pytest.skip("the tutorial's curl commands need curl and awk")
        result = self.execute(["bash", "-e", "-c", script])
        self.curl_output = result.stdout
        self.did.append("the curl commands")

    def compare_output(self, block: Block) -> None:
        """The stream the tutorial shows is the one its curl commands get: the same events,
        the same first pieces of text, the same end (ids, timings and UUIDs aside)."""
        assert self.curl_output, f"{block.where}: output shown before any command produced it"
        shown = SSEParser().feed(block.text.encode() + b"\n")  # the page ends the last event
        got = SSEParser().feed(self.curl_output.encode())
        assert block.text.startswith("retry: ") and self.curl_output.startswith("retry: ")
        assert [e.event for e in shown[:-1]] == [e.event for e in got[: len(shown) - 1]]
        assert [e.data for e in shown[1:-1]] == [e.data for e in got[1 : len(shown) - 1]]
        assert shown[0].json().keys() == got[0].json().keys()
        assert shown[0].json()["provider"] == got[0].json()["provider"] == "demo"
        last_shown, last_got = shown[-1].json(), got[-1].json()
        assert shown[-1].event == got[-1].event == "done"
        assert shown[-1].id == got[-1].id
        for volatile in ("ttft_ms", "duration_ms"):
            last_shown.pop(volatile)
            last_got.pop(volatile)
        assert last_shown == last_got

    def use_admin(self) -> None:
        """Log in with the new account and find the conversations in the admin."""
        path = "/admin/django_llmstream/conversation/"
        with httpx.Client(base_url=self.url, timeout=30, follow_redirects=True) as client:
            login = client.get(f"/admin/login/?next={path}")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
            assert token, login.text
            response = client.post(
                f"/admin/login/?next={path}",
                data={
                    "username": ADMIN["username"],
                    "password": ADMIN["password"],
                    "csrfmiddlewaretoken": token[1],
                    "next": path,
                },
            )
            assert response.status_code == 200
            assert response.url.path == path, "the login did not reach the conversation list"
            assert PROMPT in response.text  # the conversation started from Python
            assert "Hello! Who are you?" in response.text  # the one started with curl


@pytest.fixture
def reader(tmp_path: Path, fake_upstream: FakeUpstream) -> Iterator[Reader]:
    fake_upstream.reset()
    reader = Reader(tmp_path, fake_upstream)
    try:
        yield reader
    finally:
        reader.stop_server()


def test_tutorial_blocks_are_all_followed() -> None:
    """Every block of the page is one the test knows how to follow (checked before running
    anything, so a new kind of block fails fast)."""
    blocks = page_blocks(TUTORIAL)
    assert blocks, "docs/tutorial.rst has no code blocks"
    for block in blocks:
        if block.kind == "literalinclude":
            assert block.path is not None
            assert block.path.parent == DOCS / "tutorial", (
                f"{block.where}: include from docs/tutorial/"
            )
            assert block.caption, f"{block.where}: a file without a caption"
        else:
            assert block.language in {"console", "text"}, f"{block.where}: {block.language}"


def test_follow_the_tutorial(reader: Reader) -> None:
    for block in page_blocks(TUTORIAL):
        reader.follow(block)
    steps = reader.did
    # The tutorial's path, in order: the project, the files, the first run, the admin, the
    # switch to a real model.
    for expected in (
        "django-admin startproject mysite",
        "write mysite/urls.py",
        "write chat/templates/chat/index.html",
        "write mysite/asgi.py",
        "python manage.py migrate",
        "uvicorn mysite.asgi:application",
        "the curl commands",
        "python manage.py createsuperuser",
    ):
        assert expected in steps, f"the tutorial no longer does {expected!r}: {steps}"
    assert steps.count("uvicorn mysite.asgi:application") == 3, steps
    assert reader.exports.get("OPENAI_BASE_URL") == reader.upstream.base_url

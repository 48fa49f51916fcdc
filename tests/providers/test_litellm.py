"""LiteLLM backend: LiteLLM (the real package) talks to our fake upstream in the OpenAI format
(``"openai/fake-model"`` with ``api_base`` = the fake server), fed the recorded OpenAI streams
at several chunkings, and runs the provider contract.

LiteLLM never reaches the network here: ``LITELLM_LOCAL_MODEL_COST_MAP`` keeps it from
downloading its price map, and every test checks that no socket connected anywhere but
127.0.0.1. The tests that need LiteLLM are skipped when it is not installed; those of the
missing-package path run either way.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from django_llmstream.events import Finish, TextDelta, Usage
from django_llmstream.exceptions import (
    ProviderError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamConnectionError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamStreamError,
    UpstreamTimeout,
)
from django_llmstream.providers import litellm as backend
from django_llmstream.providers.base import BaseProvider, ChatMessage, ChatRequest
from django_llmstream.providers.litellm import (
    INSTALL_HINT,
    LiteLLMProvider,
    aclose_litellm_clients,
    litellm_installed,
)
from django_llmstream.providers.openai import FINISH_REASON_MAP
from tests.providers.contract import (
    API_KEY,
    ProviderContract,
    Summary,
    chat_request,
    collect,
    collect_until_error,
    llmstream_settings,
    secret_leaks,
    summarize,
)
from tests.providers.recorded import CHUNKINGS, expected_for, fixture_path, rechunk
from tests.shared import shared_fixtures
from tests.upstream import (
    DEFAULT_TEXT,
    LOCAL_FIXTURES_DIR,
    FakeUpstream,
    openai_chunks,
    split_events,
)

MODEL = "openai/fake-model"  # LiteLLM's OpenAI route; the upstream sees "fake-model"
DUMMY_KEY = "dummy-litellm-key-5e6f7a8b9c"

# LiteLLM's own use of pydantic emits deprecation warnings (which the suite turns into errors).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:litellm")

needs_litellm = pytest.mark.skipif(
    not litellm_installed(),
    reason=f"LiteLLM is not installed ({INSTALL_HINT}); its backend tests are skipped",
)

SHARED = shared_fixtures("openai_chat_*.sse")
LOCAL = sorted(path.name for path in LOCAL_FIXTURES_DIR.glob("openai_*.sse"))

EXCEPTIONS: dict[str, type[Exception]] = {
    "UpstreamProtocolError": UpstreamProtocolError,
    "UpstreamConnectionError": UpstreamConnectionError,
    "UpstreamStreamError": UpstreamStreamError,
}

_LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost"}


def make(base_url: str = "http://127.0.0.1:9/v1", **config: Any) -> LiteLLMProvider:
    config.setdefault("API_KEY", DUMMY_KEY)  # LiteLLM's OpenAI route insists on one
    return LiteLLMProvider("litellm", {"BASE_URL": base_url, "MODELS": [MODEL], **config})


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every address a socket connects to or a name looked up that is not local, recorded
    (and refused). The list must be empty at the end of the test."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    outside: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def local(address: Any) -> bool:
        return not isinstance(address, tuple) or str(address[0]) in _LOCAL_HOSTS

    def connect(self: socket.socket, address: Any) -> None:
        if not local(address):
            outside.append(address)
            raise OSError(f"test: no network beyond 127.0.0.1 ({address!r})")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not local(address):
            outside.append(address)
            return 111
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and str(name) not in _LOCAL_HOSTS:
            outside.append(name)
            raise socket.gaierror(f"test: no name lookups ({name!r})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield outside
    assert outside == [], f"LiteLLM tried to reach the network: {outside}"


@pytest.fixture
async def lite(upstream: FakeUpstream, offline: list[Any]) -> AsyncIterator[FakeUpstream]:
    """The fake upstream, with the network guard, and LiteLLM's clients of this test's event
    loop closed afterwards (their sockets must not outlive the loop)."""
    yield upstream
    await aclose_litellm_clients()


def check_against_expected(
    summary: Summary, error: BaseException | None, expected: dict[str, Any]
) -> None:
    assert summary.text == expected["text"]
    assert summary.reasoning_text == expected["reasoning_text"]
    assert summary.tool_calls == [
        {k: call[k] for k in ("index", "id", "name", "arguments")}
        for call in expected["tool_calls"]
    ]
    raises = expected.get("raises") or ("UpstreamStreamError" if expected.get("error") else None)
    if raises:
        assert isinstance(error, EXCEPTIONS[raises]), error
        assert summary.finish is None
        if expected.get("error"):
            assert isinstance(error, UpstreamStreamError)
            assert error.retryable is expected.get("retryable", True)
            words = [w for w in expected["error"]["message"].split() if not w.startswith("sk-")]
            assert all(word in str(error) for word in words)
            assert "sk-proj-" not in str(error)
        return
    assert error is None, error
    assert summary.finish is not None
    raw = expected["finish_reason"]
    assert summary.finish.raw == raw
    assert summary.finish.reason == FINISH_REASON_MAP.get(raw, "stop")
    if expected["usage"] is None:
        # LiteLLM counted tokens itself (its tokenizer) for this stream; we report none.
        assert summary.usage is None
    else:
        assert summary.usage is not None
        for name in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"):
            assert getattr(summary.usage, name) == expected["usage"][name], name


# -- recorded streams --------------------------------------------------------------------------


@needs_litellm
@pytest.mark.parametrize("name", SHARED + LOCAL)
@pytest.mark.parametrize("chunk_size", CHUNKINGS)
async def test_recorded_stream(name: str, chunk_size: int | None, lite: FakeUpstream) -> None:
    data = fixture_path(name).read_bytes()
    chunks = split_events(data) if chunk_size is None else rechunk(data, chunk_size)
    lite.respond(chunks=chunks)
    events, error = await collect_until_error(make(lite.base_url).stream(chat_request(model=MODEL)))
    check_against_expected(summarize(events), error, expected_for(name))
    assert len(lite.requests) == 1, "no retry once the stream has started or failed for good"


@needs_litellm
async def test_usage_litellm_estimated_is_not_reported(lite: FakeUpstream) -> None:
    # The stream reports no usage; LiteLLM's own last chunk then holds token counts from its
    # tokenizer. Usage stays unknown (and so does the cost) rather than estimated.
    lite.respond(chunks=openai_chunks(["Hi", " there"], usage=None))
    provider = make(lite.base_url, PRICES={MODEL: {"input": "1", "output": "1"}})
    events = await collect(provider.stream(chat_request(model=MODEL)))
    assert not any(isinstance(event, Usage) for event in events)
    assert events[-1] == Finish("stop", "stop")


@needs_litellm
async def test_text_pieces_usage_and_finish(lite: FakeUpstream) -> None:
    lite.respond(fixture="openai_chat_stream_usage.sse")
    events = await collect(make(lite.base_url).stream(chat_request(model=MODEL)))
    texts = [event.text for event in events if isinstance(event, TextDelta)]
    assert texts[:3] == ["I'm", " unable", " to"]
    assert events[-2:] == [
        Usage(input_tokens=14, output_tokens=30, cached_input_tokens=None, reasoning_tokens=0),
        Finish("stop", "stop"),
    ]


# -- the request -------------------------------------------------------------------------------


@needs_litellm
async def test_request_sent_upstream(lite: FakeUpstream) -> None:
    call = {"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}
    request = ChatRequest(
        messages=(
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "Weather?"),
            ChatMessage("assistant", "", tool_calls=(call,)),
            ChatMessage("tool", "18 °C", tool_call_id="call_1"),
            ChatMessage("user", "Thanks. And you?"),
        ),
        model=MODEL,
        params={"temperature": 0.2, "max_tokens": 50, "seed": 7},
    )
    provider = make(
        lite.base_url,
        API_KEY=API_KEY,
        OPTIONS={
            "LITELLM_PARAMS": {"extra_headers": {"X-Site": "example"}, "extra_body": {"top_k": 5}}
        },
    )
    events = await collect(provider.stream(request))
    assert summarize(events).text == DEFAULT_TEXT
    (sent,) = lite.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.headers["x-site"] == "example"
    body = sent.json
    assert body["model"] == "fake-model"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["max_tokens"], body["seed"]) == (0.2, 50, 7)
    assert body["top_k"] == 5
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",  # (LiteLLM leaves out our "content": None)
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "18 °C", "tool_call_id": "call_1"},
        {"role": "user", "content": "Thanks. And you?"},
    ]


@needs_litellm
async def test_unanswered_tool_calls_are_not_sent(lite: FakeUpstream) -> None:
    call = {"id": "call_1", "name": "f", "arguments": "{}"}
    request = ChatRequest(
        messages=(
            ChatMessage("user", "Weather?"),
            ChatMessage("assistant", "", tool_calls=(call,)),
            ChatMessage("user", "Never mind."),
        ),
        model=MODEL,
    )
    await collect(make(lite.base_url).stream(request))
    assert lite.requests[0].json["messages"] == [
        {"role": "user", "content": "Weather?"},
        {"role": "user", "content": "Never mind."},
    ]


@needs_litellm
async def test_stream_usage_off_and_params_cannot_replace_ours(lite: FakeUpstream) -> None:
    provider = make(lite.base_url, OPTIONS={"STREAM_USAGE": False})
    await collect(provider.stream(chat_request(model=MODEL, stream=False, api_base="http://x")))
    body = lite.requests[0].json
    assert "stream_options" not in body
    assert body["stream"] is True
    assert "api_base" not in body


# -- errors and retries ------------------------------------------------------------------------


@needs_litellm
async def test_retry_before_the_first_token(lite: FakeUpstream) -> None:
    lite.respond(status=500)
    with llmstream_settings(MAX_RETRIES=1, RETRY_BACKOFF=0.01):
        events = await collect(make(lite.base_url).stream(chat_request(model=MODEL)))
    assert summarize(events).text == DEFAULT_TEXT
    assert len(lite.requests) == 2


@needs_litellm
async def test_retry_after_is_honoured(lite: FakeUpstream) -> None:
    lite.respond(status=429, headers={"Retry-After": "0.3"})
    loop = asyncio.get_running_loop()
    started = loop.time()
    with llmstream_settings(MAX_RETRIES=1, RETRY_BACKOFF=0.01):
        events = await collect(make(lite.base_url).stream(chat_request(model=MODEL)))
    assert loop.time() - started >= 0.3
    assert summarize(events).text == DEFAULT_TEXT


@needs_litellm
async def test_retries_are_bounded_and_statuses_mapped(lite: FakeUpstream) -> None:
    for _ in range(3):
        lite.respond(status=429)
    with llmstream_settings(MAX_RETRIES=2, RETRY_BACKOFF=0.01):
        _, error = await collect_until_error(make(lite.base_url).stream(chat_request(model=MODEL)))
    assert isinstance(error, UpstreamRateLimited)
    assert error.status_code == 429 and error.retryable is True
    assert str(error) == "Upstream litellm answered 429: fake upstream error 429"
    assert len(lite.requests) == 3


@needs_litellm
@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, UpstreamBadRequest), (401, UpstreamAuthError), (404, UpstreamBadRequest)],
)
async def test_client_errors_are_not_retried(
    status: int, kind: type[ProviderError], lite: FakeUpstream
) -> None:
    lite.respond(status=status)
    with llmstream_settings(MAX_RETRIES=2, RETRY_BACKOFF=0.01):
        _, error = await collect_until_error(make(lite.base_url).stream(chat_request(model=MODEL)))
    assert type(error) is kind
    assert len(lite.requests) == 1


@needs_litellm
async def test_no_retry_after_the_first_event(lite: FakeUpstream) -> None:
    lite.respond(chunks=openai_chunks(["Hello", " world"]), close_after=2)
    with llmstream_settings(MAX_RETRIES=2, RETRY_BACKOFF=0.01):
        events, error = await collect_until_error(
            make(lite.base_url).stream(chat_request(model=MODEL))
        )
    assert isinstance(error, UpstreamConnectionError)
    assert summarize(events).text == "Hello"
    assert len(lite.requests) == 1


@needs_litellm
async def test_connection_refused_is_retried(lite: FakeUpstream) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with llmstream_settings(MAX_RETRIES=1, RETRY_BACKOFF=0.01):
        provider = make(f"http://127.0.0.1:{port}/v1", API_KEY=API_KEY)
        events, error = await collect_until_error(provider.stream(chat_request(model=MODEL)))
    assert events == []
    assert isinstance(error, UpstreamConnectionError)
    assert error.retryable is True
    assert str(error).startswith("The connection to upstream litellm failed")
    assert secret_leaks(API_KEY, error, []) == []


@needs_litellm
async def test_a_configuration_error_is_not_retried(
    lite: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LiteLLM's OpenAI route wants a key even for servers that take none; it says so with an
    # "InternalServerError" (500) although no request was sent: not an upstream 500.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    provider = LiteLLMProvider("litellm", {"BASE_URL": lite.base_url, "MODELS": [MODEL]})
    with llmstream_settings(MAX_RETRIES=2, RETRY_BACKOFF=0.01):
        _, error = await collect_until_error(provider.stream(chat_request(model=MODEL)))
    assert type(error) is ProviderError
    assert error.retryable is False
    assert "Missing credentials" in str(error)
    assert lite.requests == []


@needs_litellm
async def test_a_stalled_upstream_is_an_idle_timeout(lite: FakeUpstream) -> None:
    lite.respond(chunks=openai_chunks(["Hello", " slowly"]), stall_after=2)
    provider = make(lite.base_url, OPTIONS={"IDLE_TIMEOUT": 0.3, "MAX_RETRIES": 2})
    loop = asyncio.get_running_loop()
    started = loop.time()
    events, error = await collect_until_error(provider.stream(chat_request(model=MODEL)))
    assert isinstance(error, UpstreamTimeout)
    assert str(error) == "No data from upstream litellm for 0.3 s."
    assert summarize(events).text == "Hello"
    assert loop.time() - started < 2.5
    assert len(lite.requests) == 1


@needs_litellm
async def test_total_timeout(lite: FakeUpstream) -> None:
    lite.respond(chunks=openai_chunks(["a", "b", "c", "d", "e"]), delay=0.2)
    provider = make(lite.base_url, OPTIONS={"TOTAL_TIMEOUT": 0.5})
    events, error = await collect_until_error(provider.stream(chat_request(model=MODEL)))
    assert isinstance(error, UpstreamTimeout)
    assert "TOTAL_TIMEOUT (0.5 s)" in str(error)
    assert summarize(events).text  # what arrived in time


@needs_litellm
async def test_secrets_of_litellm_params_are_scrubbed(lite: FakeUpstream) -> None:
    # A proxy that echoes the request headers back in its error.
    from tests.upstream import echo_error

    lite.respond(status=400, body=echo_error)
    provider = make(
        lite.base_url,
        OPTIONS={"LITELLM_PARAMS": {"extra_headers": {"X-Proxy-Token": "proxy-secret-12345"}}},
    )
    assert "proxy-secret-12345" in provider.secrets()
    _, error = await collect_until_error(provider.stream(chat_request(model=MODEL)))
    assert isinstance(error, UpstreamBadRequest)
    assert "proxy-secret-12345" not in str(error)
    assert DUMMY_KEY not in str(error)
    assert "[redacted]" in str(error)


# -- the optional import and the checks --------------------------------------------------------


@pytest.fixture
def without_litellm(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if LiteLLM were not installed (``import litellm`` raises ImportError)."""
    monkeypatch.setattr(backend, "_litellm", None)
    monkeypatch.setitem(sys.modules, "litellm", None)


def test_missing_litellm_fails_the_check_naming_the_extra(without_litellm: None) -> None:
    errors = make().check()
    assert [error.id for error in errors] == ["llmstream.E020"]
    assert 'pip install "django-llmstream[litellm]"' in (errors[0].hint or "")


def test_missing_litellm_import_error_names_the_extra(without_litellm: None) -> None:
    with pytest.raises(ImportError, match=r'pip install "django-llmstream\[litellm\]"'):
        backend.import_litellm()


async def test_missing_litellm_fails_the_turn_naming_the_extra(without_litellm: None) -> None:
    events, error = await collect_until_error(make().stream(chat_request(model=MODEL)))
    assert events == []
    assert isinstance(error, ProviderError)
    assert error.retryable is False
    assert INSTALL_HINT in str(error)


@needs_litellm
def test_checks() -> None:
    assert make().check() == []
    # BASE_URL and API_KEY are optional: LiteLLM knows the providers and reads their env vars.
    assert LiteLLMProvider("x", {"MODELS": ["anthropic/claude-sonnet-4-5"]}).check() == []
    cases: list[tuple[dict[str, Any], str]] = [
        ({"OPTIONS": {"LITELLM_PARAMS": ["api_version"]}}, "llmstream.E011"),
        ({"OPTIONS": {"LITELLM_PARAMS": {"api_key": "x"}}}, "llmstream.E011"),
        ({"OPTIONS": {"STREAM_USAGE": "yes"}}, "llmstream.E011"),
        ({"OPTIONS": {"IDLE_TIMEOUT": 0}}, "llmstream.E011"),
        ({"OPTIONS": {"MAX_RETRIES": 1.5}}, "llmstream.E011"),
        ({"OPTIONS": {"CONTEXT_BUDGET": 0}}, "llmstream.E011"),
        ({"OPTIONS": {"IDEL_TIMEOUT": 5}}, "llmstream.E017"),
        ({"BASE_URL": "ftp://example.com"}, "llmstream.E011"),
        ({"HEADERS": {"a": "b"}}, "llmstream.E009"),
    ]
    for config, expected in cases:
        assert [error.id for error in make(**config).check()] == [expected], config
    ok = make(OPTIONS={"TOTAL_TIMEOUT": None, "CONTEXT_BUDGET": 8000, "RETRY_BACKOFF": 0})
    assert ok.check() == []


# -- the contract ------------------------------------------------------------------------------


@needs_litellm
@pytest.mark.usefixtures("offline")
class TestLiteLLMContract(ProviderContract):
    model = MODEL

    @pytest.fixture(autouse=True)
    async def _close_litellm_clients(self) -> AsyncIterator[None]:
        yield
        await aclose_litellm_clients()

    def make_provider(self, base_url: str, **config: Any) -> BaseProvider:
        return make(base_url, **config)

    def prepare_slow_answer(self, upstream: FakeUpstream) -> dict[str, Any]:
        upstream.respond(chunks=openai_chunks(["Hello", " slowly"]), stall_after=2)
        return {}

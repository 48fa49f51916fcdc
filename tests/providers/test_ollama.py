"""Ollama backend (native ``/api/chat``, NDJSON): the recorded streams of ``../shared/fixtures``
(mock transport at several chunkings, and a real socket), the request it sends, errors and
checks."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from django_llmstream.events import Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from django_llmstream.exceptions import (
    UpstreamBadRequest,
    UpstreamConnectionError,
    UpstreamProtocolError,
    UpstreamStreamError,
)
from django_llmstream.providers.base import BaseProvider, ChatMessage, ChatRequest
from django_llmstream.providers.ollama import FINISH_REASON_MAP, OllamaProvider
from tests.providers.contract import (
    API_KEY,
    ProviderContract,
    Summary,
    chat_request,
    collect,
    collect_until_error,
    llmstream_settings,
    summarize,
)
from tests.providers.recorded import CHUNKINGS, chunks_of, expected_for, run_chunks
from tests.shared import FIXTURES_DIR, shared_fixtures
from tests.upstream import FakeUpstream

MODEL = "llama-test"
FIXTURES = shared_fixtures("ollama_*.ndjson")
NDJSON = "application/x-ndjson"


def make(base_url: str = "http://127.0.0.1:9", **config: Any) -> OllamaProvider:
    transport = config.pop("transport", None)
    return OllamaProvider(
        "ollama", {"BASE_URL": base_url, "MODELS": [MODEL], **config}, transport=transport
    )


def line(**fields: Any) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def check_against_expected(
    summary: Summary, error: BaseException | None, expected: dict[str, Any]
) -> None:
    assert summary.text == expected["text"]
    assert summary.reasoning_text == expected["reasoning_text"]
    # Ollama sends each call whole (arguments as an object: compact JSON text here) and
    # without an id in the documented examples.
    assert summary.tool_calls == [
        {"index": i, "id": call["id"], "name": call["name"], "arguments": call["arguments"]}
        for i, call in enumerate(expected["tool_calls"])
    ]
    if expected["error"] is not None:
        assert isinstance(error, UpstreamStreamError), error
        assert error.retryable is True
        assert expected["error"]["message"] in str(error)
        assert summary.finish is None
        return
    assert error is None, error
    raw = expected["finish_reason"]
    # done_reason: "stop" -> stop, "length" -> length; none (the docs example) -> stop; a turn
    # that made tool calls -> tool_calls (Ollama still says "stop" then).
    reason = "stop" if raw is None else FINISH_REASON_MAP[raw]
    if expected["tool_calls"] and reason == "stop":
        reason = "tool_calls"
    assert summary.finish == Finish(reason, raw)
    # prompt_eval_count is our input_tokens, eval_count (thinking included) our output_tokens;
    # Ollama reports no cached or thinking counts.
    usage = expected["usage"]
    if usage is None:
        assert summary.usage is None
    else:
        assert summary.usage == Usage(
            input_tokens=usage["input_tokens"],
            output_tokens=usage["output_tokens"],
            cached_input_tokens=None,
            reasoning_tokens=None,
        )


# -- recorded streams --------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("chunk_size", CHUNKINGS)
async def test_fixture_through_mock_transport(name: str, chunk_size: int | None) -> None:
    events, error = await run_chunks(
        make, chunks_of(name, chunk_size), model=MODEL, content_type=NDJSON
    )
    check_against_expected(summarize(events), error, expected_for(name))


@pytest.mark.parametrize("name", FIXTURES)
async def test_fixture_through_a_real_socket(name: str, upstream: FakeUpstream) -> None:
    upstream.respond(fixture=name)
    events, error = await collect_until_error(make(upstream.url).stream(chat_request(model=MODEL)))
    check_against_expected(summarize(events), error, expected_for(name))
    (sent,) = upstream.requests
    assert (sent.method, sent.path) == ("POST", "/api/chat")
    assert sent.headers["accept"] == NDJSON


def test_the_shared_fixtures_are_all_covered() -> None:
    if not FIXTURES_DIR.is_dir():
        pytest.skip("../shared/fixtures not found: CI provides it beside the clone")
    assert set(FIXTURES) >= {
        "ollama_chat.ndjson",
        "ollama_chat_tool_calls.ndjson",
        "ollama_chat_thinking_excerpt.ndjson",
        "ollama_error.ndjson",
        "ollama_generate.ndjson",
    }


async def test_thinking_then_text() -> None:
    chunks = [
        line(message={"role": "assistant", "content": "", "thinking": "Hmm"}, done=False),
        line(message={"role": "assistant", "content": "", "thinking": "…"}, done=False),
        line(message={"role": "assistant", "content": "Yes"}, done=False),
        line(
            message={"role": "assistant", "content": ""},
            done=True,
            done_reason="stop",
            prompt_eval_count=3,
            eval_count=9,
        ),
    ]
    events, error = await run_chunks(make, chunks)
    assert error is None
    assert events == [
        ReasoningDelta("Hmm"),
        ReasoningDelta("…"),
        TextDelta("Yes"),
        Usage(input_tokens=3, output_tokens=9),
        Finish("stop", "stop"),
    ]


async def test_several_tool_calls_are_numbered_and_keep_ids() -> None:
    calls = [
        {"id": "call_a", "function": {"name": "f", "arguments": {"x": "é"}}},
        {"function": {"index": 0, "name": "g", "arguments": {}}},
    ]
    chunks = [
        line(message={"role": "assistant", "content": "", "tool_calls": calls[:1]}, done=False),
        line(message={"role": "assistant", "content": "", "tool_calls": calls[1:]}, done=False),
        line(message={"role": "assistant", "content": ""}, done=True, done_reason="stop"),
    ]
    events, error = await run_chunks(make, chunks)
    assert error is None
    assert [e for e in events if isinstance(e, ToolCallDelta)] == [
        ToolCallDelta(index=0, arguments='{"x":"é"}', id="call_a", name="f"),
        ToolCallDelta(index=1, arguments="{}", id=None, name="g"),
    ]
    assert events[-1] == Finish("tool_calls", "stop")


async def test_a_length_cut_after_tool_calls_stays_length() -> None:
    chunks = [
        line(message={"tool_calls": [{"function": {"name": "f", "arguments": {}}}]}),
        line(done=True, done_reason="length"),
    ]
    events, _ = await run_chunks(make, chunks)
    assert events[-1] == Finish("length", "length")


async def test_an_error_line_before_any_text() -> None:
    events, error = await run_chunks(make, [line(error="model requires more system memory")])
    assert events == []
    assert isinstance(error, UpstreamStreamError)
    assert str(error) == ("Upstream ollama reported an error: model requires more system memory")


async def test_eof_before_done_is_an_incomplete_stream() -> None:
    events, error = await run_chunks(make, [line(message={"content": "Hal"}, done=False)])
    assert summarize(events).text == "Hal"
    assert isinstance(error, UpstreamConnectionError)


@pytest.mark.parametrize("chunk", [b"{not json}\n", b"[1, 2]\n", b'{"message": {"content": 5}}x\n'])
async def test_malformed_lines_are_protocol_errors(chunk: bytes) -> None:
    events, error = await run_chunks(make, [line(message={"content": "ok"}), chunk])
    assert isinstance(error, UpstreamProtocolError)
    assert summarize(events).text == "ok"


async def test_404_model_not_found_quotes_ollama(upstream: FakeUpstream) -> None:
    upstream.respond(
        status=404, body=b'{"error":"model \\"nope\\" not found, try pulling it first"}'
    )
    _, error = await collect_until_error(make(upstream.url).stream(chat_request(model=MODEL)))
    assert isinstance(error, UpstreamBadRequest)
    assert str(error) == (
        'Upstream ollama answered 404: model "nope" not found, try pulling it first'
    )


# -- the request -------------------------------------------------------------------------------


async def test_request_body(upstream: FakeUpstream) -> None:
    upstream.respond(fixture="ollama_chat.ndjson")
    call = {"index": 0, "id": None, "name": "get_weather", "arguments": '{"city":"Tokyo"}'}
    request = ChatRequest(
        messages=(
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "Weather?"),
            ChatMessage("assistant", "", tool_calls=(call,)),
            ChatMessage("tool", "18 °C", tool_call_id="call_1"),
            ChatMessage("user", "Thanks"),
        ),
        model=MODEL,
        params={
            "max_tokens": 50,
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 7,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
        },
    )
    provider = make(
        upstream.url,
        OPTIONS={"THINK": True, "KEEP_ALIVE": "30m", "MODEL_OPTIONS": {"num_ctx": 8192}},
    )
    await collect(provider.stream(request))
    (sent,) = upstream.requests
    assert "authorization" not in sent.headers
    assert sent.json == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}
                ],
            },
            {"role": "tool", "content": "18 °C", "tool_call_id": "call_1"},
            {"role": "user", "content": "Thanks"},
        ],
        "stream": True,
        "think": True,
        "keep_alive": "30m",
        # Every default param is an Ollama model option; max_tokens is num_predict.
        "options": {
            "num_ctx": 8192,
            "num_predict": 50,
            "temperature": 0.2,
            "top_p": 0.9,
            "seed": 7,
            "presence_penalty": 0.1,
            "frequency_penalty": 0.2,
        },
    }


def test_no_options_no_options_key(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="django_llmstream.providers"):
        body = make().build_body(chat_request(model=MODEL, stream=False, format="json"))
    assert body["stream"] is True
    assert body["format"] == "json"
    assert "options" not in body
    assert not caplog.records, "Ollama drops no param"


async def test_a_key_is_sent_as_bearer(upstream: FakeUpstream) -> None:
    upstream.respond(fixture="ollama_chat.ndjson")
    await collect(make(upstream.url, API_KEY=API_KEY).stream(chat_request(model=MODEL)))
    assert upstream.requests[0].headers["authorization"] == f"Bearer {API_KEY}"


async def test_durations_are_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="django_llmstream.providers"):
        await run_chunks(make, chunks_of("ollama_chat.ndjson", None))
    (record,) = [r for r in caplog.records if "eval" in r.getMessage()]
    assert "load 1.3 ms" in record.getMessage()
    assert "62.2 tokens/s" in record.getMessage()


# -- configuration -----------------------------------------------------------------------------


def test_defaults_need_nothing() -> None:
    provider = OllamaProvider("ollama", {"MODELS": ["llama3.2"]})
    assert provider.base_url == "http://127.0.0.1:11434"
    assert provider.check() == []


def test_base_url_with_api_fails_the_checks() -> None:
    errors = make("http://127.0.0.1:11434/api").check()
    assert [error.id for error in errors] == ["llmstream.E011"]


@pytest.mark.parametrize(
    "options",
    [{"THINK": "very"}, {"KEEP_ALIVE": True}, {"KEEP_ALIVE": []}, {"MODEL_OPTIONS": [1]}],
)
def test_bad_options_fail_the_checks(options: dict[str, Any]) -> None:
    assert [error.id for error in make(OPTIONS=options).check()] == ["llmstream.E011"]


@pytest.mark.parametrize(
    "options", [{"THINK": "high"}, {"THINK": False}, {"KEEP_ALIVE": -1}, {"KEEP_ALIVE": "5m"}]
)
def test_good_options_pass(options: dict[str, Any]) -> None:
    assert make(OPTIONS=options).check() == []


# -- the contract ------------------------------------------------------------------------------


class TestOllamaContract(ProviderContract):
    model = MODEL

    def make_provider(self, base_url: str, **config: Any) -> BaseProvider:
        # The contract hands out OpenAI-style base URLs; Ollama's has no /v1 (nor /api).
        return make(base_url.removesuffix("/v1"), **config)

    def prepare_answer(self, upstream: FakeUpstream) -> None:
        upstream.respond(fixture="ollama_chat.ndjson")

    def prepare_slow_answer(self, upstream: FakeUpstream) -> dict[str, Any]:
        upstream.respond(fixture="ollama_chat.ndjson", stall_after=1)
        return {}


async def test_503_server_busy_then_200_is_retried(upstream: FakeUpstream) -> None:
    # Ollama's answer when OLLAMA_MAX_QUEUE is exceeded.
    busy = b'{"error":"server busy, please try again.  maximum pending requests exceeded"}'
    upstream.respond(status=503, body=busy, headers={"Retry-After": "0"})
    upstream.respond(fixture="ollama_chat.ndjson")
    with llmstream_settings(MAX_RETRIES=1, RETRY_BACKOFF=0.01):
        events = await collect(make(upstream.url).stream(chat_request(model=MODEL)))
    assert summarize(events).text == "The"
    assert len(upstream.requests) == 2

"""OpenAI Responses backend: the recorded streams of ``../shared/fixtures`` (mock transport at
several chunkings, and a real socket), the request it sends, errors and checks."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from django_llmstream.events import Finish, ReasoningDelta, TextDelta, ToolCallDelta, Usage
from django_llmstream.exceptions import UpstreamConnectionError, UpstreamStreamError
from django_llmstream.providers.base import BaseProvider, ChatMessage, ChatRequest
from django_llmstream.providers.openai_responses import OpenAIResponsesProvider
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
from tests.upstream import FakeUpstream, sse

MODEL = "fake-model"
FIXTURES = shared_fixtures("openai_responses_*.sse")


def make(base_url: str = "http://127.0.0.1:9/v1", **config: Any) -> OpenAIResponsesProvider:
    transport = config.pop("transport", None)
    return OpenAIResponsesProvider(
        "responses", {"BASE_URL": base_url, "MODELS": [MODEL], **config}, transport=transport
    )


def check_against_expected(
    summary: Summary, error: BaseException | None, expected: dict[str, Any]
) -> None:
    assert summary.text == expected["text"]
    assert summary.reasoning_text == expected["reasoning_text"]
    # Our id is the call_id (what a function_call_output answers), not the item id.
    assert summary.tool_calls == [
        {"index": i, "id": call["id"], "name": call["name"], "arguments": call["arguments"]}
        for i, call in enumerate(expected["tool_calls"])
    ]
    if expected["error"] is not None:
        # Both shapes: nested {"error": {"code", "message"}} and flat {"code", "message"}.
        assert isinstance(error, UpstreamStreamError), error
        assert error.retryable is True
        assert expected["error"]["message"] in str(error)
        assert expected["error"]["code"] in str(error)
        assert summary.finish is None
        return
    assert error is None, error
    raw = expected["finish_reason"]
    # "completed" -> stop, or tool_calls when the output holds function calls (Responses has
    # no status of its own for that); "incomplete:max_output_tokens" -> length.
    assert raw == "completed"
    assert summary.finish == Finish("tool_calls" if expected["tool_calls"] else "stop", raw)
    # Responses' usage is our convention already: cached inside input_tokens
    # (input_tokens_details.cached_tokens), reasoning inside output_tokens
    # (output_tokens_details.reasoning_tokens).
    usage = expected["usage"]
    assert summary.usage == Usage(
        input_tokens=usage["input_tokens"],
        output_tokens=usage["output_tokens"],
        cached_input_tokens=usage["cached_input_tokens"],
        reasoning_tokens=usage["reasoning_tokens"],
    )


# -- recorded streams --------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("chunk_size", CHUNKINGS)
async def test_fixture_through_mock_transport(name: str, chunk_size: int | None) -> None:
    events, error = await run_chunks(make, chunks_of(name, chunk_size), model=MODEL)
    check_against_expected(summarize(events), error, expected_for(name))


@pytest.mark.parametrize("name", FIXTURES)
async def test_fixture_through_a_real_socket(name: str, upstream: FakeUpstream) -> None:
    upstream.respond(fixture=name)
    provider = make(upstream.base_url, API_KEY=API_KEY)
    events, error = await collect_until_error(provider.stream(chat_request(model=MODEL)))
    check_against_expected(summarize(events), error, expected_for(name))
    (sent,) = upstream.requests
    assert (sent.method, sent.path) == ("POST", "/v1/responses")
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"


def test_the_shared_fixtures_are_all_covered() -> None:
    if not FIXTURES_DIR.is_dir():
        pytest.skip("../shared/fixtures not found: CI provides it beside the clone")
    assert set(FIXTURES) >= {
        "openai_responses_stream.sse",
        "openai_responses_reasoning_tool.sse",
        "openai_responses_error.sse",
        "openai_responses_error_flat.sse",
    }


async def test_the_function_call_comes_with_id_and_name_first() -> None:
    events, _ = await run_chunks(make, chunks_of("openai_responses_reasoning_tool.sse", None))
    pieces = [event for event in events if isinstance(event, ToolCallDelta)]
    assert pieces[0] == ToolCallDelta(
        index=0, arguments="", id="call_zgUaIBRPTwxxOusyyKw5NVMH", name="weather"
    )
    assert len(pieces) == 9  # the first piece, then the 8 argument deltas (no repeat at .done)
    assert all(piece.id is None and piece.name is None for piece in pieces[1:])


# -- synthetic streams for what the recordings do not show -------------------------------------


def event(kind: str, **data: Any) -> bytes:
    return sse({"type": kind, **data}, event=kind)


def completed(status: str = "completed", **response: Any) -> bytes:
    kind = {"completed": "response.completed", "incomplete": "response.incomplete"}[status]
    return event(kind, response={"status": status, **response})


async def test_incomplete_max_output_tokens_is_length() -> None:
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 16,
        "output_tokens_details": {"reasoning_tokens": 12},
    }
    chunks = [
        event("response.output_text.delta", delta="Cut"),
        completed("incomplete", incomplete_details={"reason": "max_output_tokens"}, usage=usage),
    ]
    events, error = await run_chunks(make, chunks)
    assert error is None
    assert events == [
        TextDelta("Cut"),
        Usage(input_tokens=10, output_tokens=16, cached_input_tokens=4, reasoning_tokens=12),
        Finish("length", "incomplete:max_output_tokens"),
    ]


async def test_incomplete_content_filter() -> None:
    chunks = [completed("incomplete", incomplete_details={"reason": "content_filter"})]
    events, _ = await run_chunks(make, chunks)
    assert events == [Finish("content_filter", "incomplete:content_filter")]


async def test_a_refusal_is_text_and_content_filter() -> None:
    chunks = [event("response.refusal.delta", delta="I can't help with that."), completed()]
    events, _ = await run_chunks(make, chunks)
    assert events == [TextDelta("I can't help with that."), Finish("content_filter", "completed")]


async def test_failed_response_is_an_error() -> None:
    chunks = [
        event("response.output_text.delta", delta="Par"),
        event(
            "response.failed",
            response={"status": "failed", "error": {"code": "server_error", "message": "Oops"}},
        ),
    ]
    events, error = await run_chunks(make, chunks)
    assert summarize(events).text == "Par"
    assert isinstance(error, UpstreamStreamError)
    assert error.retryable is True
    assert str(error) == "Upstream responses reported an error: Oops (server_error)"


async def test_an_invalid_prompt_is_not_retryable() -> None:
    error_object = {"type": "invalid_request_error", "code": "invalid_prompt", "message": "No"}
    _, error = await run_chunks(make, [event("error", error=error_object)])
    assert isinstance(error, UpstreamStreamError)
    assert error.retryable is False


async def test_reasoning_parts_are_separated_by_a_blank_line() -> None:
    chunks = [
        event("response.reasoning_summary_text.delta", item_id="rs_1", summary_index=0, delta="A"),
        event("response.reasoning_summary_text.delta", item_id="rs_1", summary_index=0, delta="b"),
        event("response.reasoning_summary_text.delta", item_id="rs_1", summary_index=1, delta="C"),
        event("response.reasoning_text.delta", item_id="rs_2", content_index=0, delta="D"),
        event("response.output_text.delta", delta="Answer"),
        completed(),
    ]
    events, _ = await run_chunks(make, chunks)
    assert [e.text for e in events if isinstance(e, ReasoningDelta)] == ["A", "b", "\n\nC", "\n\nD"]


async def test_arguments_sent_whole_at_the_end_are_not_lost_nor_repeated() -> None:
    item = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "f"}
    chunks = [
        event("response.output_item.added", item={**item, "arguments": ""}),
        event("response.function_call_arguments.done", item_id="fc_1", arguments='{"a":1}'),
        event("response.output_item.done", item={**item, "arguments": '{"a":1}'}),
        # A call that only shows up done: taken whole.
        event(
            "response.output_item.done",
            item={
                "id": "fc_2",
                "type": "function_call",
                "call_id": "call_2",
                "name": "g",
                "arguments": "{}",
            },
        ),
        completed(),
    ]
    events, error = await run_chunks(make, chunks)
    assert error is None
    assert summarize(events).tool_calls == [
        {"index": 0, "id": "call_1", "name": "f", "arguments": '{"a":1}'},
        {"index": 1, "id": "call_2", "name": "g", "arguments": "{}"},
    ]
    assert events[-1] == Finish("tool_calls", "completed")


async def test_eof_before_the_response_ends_is_incomplete() -> None:
    events, error = await run_chunks(make, [event("response.output_text.delta", delta="Hi")])
    assert summarize(events).text == "Hi"
    assert isinstance(error, UpstreamConnectionError)


async def test_an_error_event_before_any_text_is_retried(upstream: FakeUpstream) -> None:
    upstream.respond(fixture="openai_responses_error.sse")
    upstream.respond(fixture="openai_responses_stream.sse")
    with llmstream_settings(MAX_RETRIES=1, RETRY_BACKOFF=0.01):
        events = await collect(make(upstream.base_url).stream(chat_request(model=MODEL)))
    assert summarize(events).text == 'Hi in Portuguese is "Oi!"'
    assert len(upstream.requests) == 2


# -- the request -------------------------------------------------------------------------------


async def test_request_body(upstream: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    upstream.respond(fixture="openai_responses_stream.sse")
    answered = {"index": 0, "id": "call_1", "name": "get_weather", "arguments": '{"c":"P"}'}
    unanswered = {"index": 0, "id": "call_9", "name": "get_time", "arguments": "{}"}
    request = ChatRequest(
        messages=(
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "Weather?"),
            ChatMessage("assistant", "Checking.", tool_calls=(answered,)),
            ChatMessage("tool", "18 °C", tool_call_id="call_1"),
            ChatMessage("assistant", "It is 18 °C."),
            ChatMessage("user", "Time?"),
            ChatMessage("assistant", "", tool_calls=(unanswered,)),
            ChatMessage("user", "Hello?"),
        ),
        model=MODEL,
        params={"max_tokens": 50, "temperature": 0.2, "top_p": 0.9, "seed": 7},
    )
    provider = make(upstream.base_url, OPTIONS={"REASONING": {"summary": "auto"}})
    with caplog.at_level(logging.DEBUG, logger="django_llmstream.providers"):
        await collect(provider.stream(request))
    (sent,) = upstream.requests
    assert sent.json == {
        "model": MODEL,
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Checking."},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"c":"P"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "18 °C"},
            {"role": "assistant", "content": "It is 18 °C."},
            {"role": "user", "content": "Time?"},
            {"role": "user", "content": "Hello?"},
        ],
        "stream": True,
        "store": False,
        "reasoning": {"summary": "auto"},
        "max_output_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
    }
    assert any("takes no 'seed'" in r.getMessage() for r in caplog.records)


def test_store_option() -> None:
    body = make(OPTIONS={"STORE": True}).build_body(chat_request(model=MODEL, store=False))
    assert body["store"] is True


# -- configuration -----------------------------------------------------------------------------


def test_api_openai_com_needs_a_key() -> None:
    provider = OpenAIResponsesProvider("responses", {"MODELS": ["gpt-4o-mini"]})
    assert provider.base_url == "https://api.openai.com/v1"
    assert [error.id for error in provider.check()] == ["llmstream.E006"]
    keyed = OpenAIResponsesProvider("responses", {"MODELS": ["gpt-4o-mini"], "API_KEY": "k"})
    assert keyed.check() == []


@pytest.mark.parametrize("options", [{"STORE": "yes"}, {"REASONING": "high"}])
def test_bad_options_fail_the_checks(options: dict[str, Any]) -> None:
    assert [error.id for error in make(OPTIONS=options).check()] == ["llmstream.E011"]


def test_chat_completions_options_are_unknown_here() -> None:
    errors = make(OPTIONS={"STREAM_USAGE": False}).check()
    assert [error.id for error in errors] == ["llmstream.E017"]


# -- the contract ------------------------------------------------------------------------------


class TestOpenAIResponsesContract(ProviderContract):
    model = MODEL

    def make_provider(self, base_url: str, **config: Any) -> BaseProvider:
        return make(base_url, **config)

    def prepare_answer(self, upstream: FakeUpstream) -> None:
        upstream.respond(fixture="openai_responses_stream.sse")

    def prepare_slow_answer(self, upstream: FakeUpstream) -> dict[str, Any]:
        # created, in_progress, output_item.added, content_part.added, "Hi" — then nothing.
        upstream.respond(fixture="openai_responses_stream.sse", stall_after=5)
        return {}


async def test_429_with_retry_after_then_200_is_retried(upstream: FakeUpstream) -> None:
    upstream.respond(
        status=429,
        body=b'{"error": {"message": "Rate limit reached", "type": "requests"}}',
        headers={"Retry-After": "0.05"},
    )
    upstream.respond(fixture="openai_responses_stream.sse")
    with llmstream_settings(MAX_RETRIES=1, RETRY_BACKOFF=5):
        events = await collect(make(upstream.base_url).stream(chat_request(model=MODEL)))
    assert summarize(events).text == 'Hi in Portuguese is "Oi!"'
    assert len(upstream.requests) == 2

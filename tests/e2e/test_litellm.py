"""End to end through uvicorn for the LiteLLM backend: LiteLLM (the real package) streams a
recorded OpenAI stream from the fake upstream; the turn's events and the stored ``Message``
(text, reasoning, tool calls, usage, cost, finish reason) must agree with the recording, as
for the native backends. Skipped when LiteLLM is not installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import override_settings

from django_llmstream.providers.litellm import aclose_litellm_clients
from tests.e2e import test_providers
from tests.e2e.test_providers import check_turn
from tests.live import Client, LiveServer
from tests.providers.test_litellm import MODEL, needs_litellm, offline
from tests.upstream import FakeUpstream

__all__ = ["offline"]  # the network guard fixture, used below

pytestmark = [
    pytest.mark.e2e,
    needs_litellm,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:litellm"),
    pytest.mark.usefixtures("offline"),
]

KEY = "litellm-e2e-key-9f8e7d6c5b4a"
PRICE = {"input": "0.50", "output": "1.50", "cached_input": "0.25"}


@pytest.fixture
def litellm_provider(upstream: FakeUpstream, uvicorn_server: LiveServer) -> Iterator[None]:
    settings = {
        "PROVIDERS": {
            "lite": {
                "BACKEND": "django_llmstream.providers.litellm.LiteLLMProvider",
                "BASE_URL": upstream.base_url,
                "API_KEY": KEY,
                "MODELS": [MODEL],
                "PRICES": {MODEL: PRICE},
            }
        },
        "ALLOW_ANONYMOUS": True,
        "FLUSH_INTERVAL": 0.05,
        "IDLE_TIMEOUT": 3,
        "MAX_RETRIES": 0,
    }
    # check_turn() of the native backends' tests computes the expected cost from its PRICES.
    with pytest.MonkeyPatch.context() as patch, override_settings(LLMSTREAM=settings):
        patch.setitem(test_providers.PRICES, "lite", {MODEL: PRICE})
        yield
    # LiteLLM's clients of the server's loop: closed before the loop goes on to other tests.
    uvicorn_server.call(aclose_litellm_clients())


@pytest.mark.usefixtures("litellm_provider")
def test_reasoning_turn_is_stored_like_the_native_backends(
    client_e2e: Client, upstream: FakeUpstream
) -> None:
    upstream.respond(fixture="openai_compat_reasoning_content.sse", delay=0.005)
    result = client_e2e.read_sse(
        "POST", "/llmstream/stream/", json={"prompt": "Hi", "system": "Be brief."}
    )
    check_turn(
        result,
        provider="lite",
        model=MODEL,
        fixture="openai_compat_reasoning_content.sse",
        finish_reason="stop",
        usage={
            "input_tokens": 9,
            "output_tokens": 31,
            "cached_input_tokens": 4,
            "reasoning_tokens": 20,
        },
    )
    (sent,) = upstream.requests
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.json["model"] == "fake-model"
    assert sent.json["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]


@pytest.mark.usefixtures("litellm_provider")
def test_tool_call_turn(client_e2e: Client, upstream: FakeUpstream) -> None:
    upstream.respond(fixture="openai_chat_tool_calls.sse")
    result = client_e2e.read_sse("POST", "/llmstream/stream/", json={"prompt": "Weather?"})
    check_turn(
        result,
        provider="lite",
        model=MODEL,
        fixture="openai_chat_tool_calls.sse",
        finish_reason="tool_calls",
        usage={
            "input_tokens": 149,
            "output_tokens": 60,
            "cached_input_tokens": None,
            "reasoning_tokens": 0,
        },
    )

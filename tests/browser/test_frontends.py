"""The three front ends in real headless Chromium against the real uvicorn server.

Pages (tests/browser/pages.py): ``/pages/client/`` (the llmstream.js example of
docs/frontends.rst), ``/pages/widget/`` ({% llmstream_chat %}) and ``/pages/htmx/`` (the htmx
example). The provider ``openai`` points at the fake upstream.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from django_llmstream.models import Message
from tests.browser.conftest import in_thread, screenshot
from tests.upstream import FakeUpstream, openai_chunks

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

WORDS = [f"w{i:02d} " for i in range(40)]

# Records the growth of the last assistant answer, with timestamps, from inside the page.
RECORD_GROWTH = """(selector) => {
  window.__growth = [];
  const observer = new MutationObserver(() => {
    const bodies = document.querySelectorAll(selector);
    const last = bodies[bodies.length - 1];
    if (last) window.__growth.push([performance.now(), last.textContent.length]);
  });
  observer.observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def assistant_rows() -> list[dict[str, Any]]:
    return in_thread(
        lambda: list(
            Message.objects.filter(role="assistant")
            .order_by("created_at")
            .values("id", "content", "status", "finish_reason", "conversation_id")
        )
    )


def wait_rows(predicate: Any, timeout: float = 10) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = assistant_rows()
        if predicate(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"rows never matched: {rows}")
        time.sleep(0.1)


def assert_progressive(page: Any, final_length: int) -> None:
    growth = page.evaluate("window.__growth")
    lengths = sorted({length for _, length in growth if 0 < length < final_length})
    assert len(lengths) >= 5, f"the answer did not grow piece by piece: {growth}"
    first = min(t for t, length in growth if length > 0)
    last = min(t for t, length in growth if length >= final_length)
    assert last - first > 500, "the whole answer arrived at once"


# -- llmstream.js (the documented example) ---------------------------------------------------


@pytest.mark.parametrize("how", ["start", "stream"])
def test_client_tokens_appear_progressively(page: Any, upstream: FakeUpstream, how: str) -> None:
    upstream.respond(chunks=openai_chunks(WORDS[:20]), delay=0.05)
    page.goto("/pages/client/")
    page.evaluate(RECORD_GROWTH, "#answer")
    page.fill("#prompt", "Count, please.")
    page.select_option("#how", how)
    page.click("text=Ask")
    page.wait_for_selector("#outcome:has-text('stop: 5 tokens')")
    text = page.text_content("#answer")
    assert text == "".join(WORDS[:20])
    assert_progressive(page, len(text))
    rows = wait_rows(lambda rows: rows and rows[-1]["status"] == "completed")
    assert rows[-1]["content"] == text


def test_client_resumes_after_reload(page: Any, upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(WORDS), delay=0.08)
    page.goto("/pages/client/")
    page.fill("#prompt", "Count slowly.")
    page.click("text=Ask")
    page.wait_for_function("document.querySelector('#answer').textContent.length > 40")
    page.reload()
    page.wait_for_selector("#outcome:has-text('stop')")
    text = page.text_content("#answer")
    rows = wait_rows(lambda rows: rows and rows[-1]["status"] == "completed")
    assert text == rows[-1]["content"] == "".join(WORDS)


# -- the {% llmstream_chat %} widget -----------------------------------------------------------

ANSWER = ".llmstream-message-assistant [data-body]"


def send(page: Any, prompt: str) -> None:
    page.fill("textarea[name=prompt]", prompt)
    page.keyboard.press("Enter")


def test_widget_streams_with_cursor_and_usage(page: Any, upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(WORDS[:20]), delay=0.05)
    page.goto("/pages/widget/?markdown=off")
    page.evaluate(RECORD_GROWTH, ANSWER)
    send(page, "Count, please.")
    page.wait_for_selector(".llmstream-cursor")  # the typing cursor while it streams
    assert page.get_attribute(".llmstream-message-assistant", "aria-busy") == "true"
    page.wait_for_selector(".llmstream-meta:not([hidden])")
    assert page.query_selector(".llmstream-cursor") is None
    text = page.text_content(ANSWER)
    assert text == "".join(WORDS[:20])
    assert_progressive(page, len(text))
    meta = page.text_content(".llmstream-message-assistant .llmstream-meta")
    assert "12 in · 5 out tokens" in meta
    assert "$0.000022" in meta  # 12 x $1 + 5 x $2 per million
    # Accessible: the transcript is a polite live region, the prompt has a label.
    assert page.get_attribute("[data-llmstream-transcript]", "aria-live") == "polite"
    assert page.get_attribute("[data-llmstream-transcript]", "role") == "log"
    assert page.locator("label", has_text="Your message").count() == 1
    assert page.evaluate("document.activeElement.name") == "prompt"
    screenshot(page, "widget-plain")


def test_widget_stop_keeps_partial_text(page: Any, upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(WORDS), delay=0.1)
    page.goto("/pages/widget/?markdown=off")
    send(page, "Count slowly.")
    page.wait_for_function(f"(document.querySelector({ANSWER!r}) || {{}}).textContent?.length > 20")
    page.click("button:has-text('Stop')")
    page.wait_for_selector(".llmstream-meta:has-text('Stopped')")
    assert page.is_hidden("button:has-text('Stop')")
    assert page.evaluate("document.activeElement.name") == "prompt"
    text = page.text_content(ANSWER)
    rows = wait_rows(lambda rows: rows and rows[-1]["status"] == "cancelled")
    assert rows[-1]["finish_reason"] == "cancelled"
    assert rows[-1]["content"] == text
    assert 20 < len(text) < len("".join(WORDS))


@pytest.mark.parametrize("mode", ["turns", "stream"])
def test_widget_reload_mid_answer_resumes(
    page: Any, upstream: FakeUpstream, configure: Any, mode: str
) -> None:
    # "finish": a stream/ turn runs on when its fetch goes away with the page.
    configure(DISCONNECT_GRACE_SECONDS=5, ON_DISCONNECT="finish" if mode == "stream" else "cancel")
    upstream.respond(chunks=openai_chunks(WORDS), delay=0.08)
    page.goto(f"/pages/widget/?markdown=off&mode={mode}")
    send(page, "Count slowly.")
    page.wait_for_function(f"(document.querySelector({ANSWER!r}) || {{}}).textContent?.length > 40")
    page.reload()
    # The conversation comes back with the prompt, and the answer goes on where it was.
    page.wait_for_selector(".llmstream-message-user:has-text('Count slowly.')")
    page.wait_for_selector(".llmstream-meta:not([hidden])")
    rows = wait_rows(lambda rows: rows and rows[-1]["status"] == "completed")
    text = page.text_content(ANSWER)
    assert text == rows[-1]["content"] == "".join(WORDS)  # no duplicate, no gap
    assert page.locator(".llmstream-message-assistant").count() == 1


def test_widget_regenerate_sends_the_prompt_again(page: Any, upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(["First."]))
    upstream.respond(chunks=openai_chunks(["Second."]))
    page.goto("/pages/widget/?markdown=off")
    send(page, "Say something.")
    page.wait_for_selector(".llmstream-meta:not([hidden])")
    page.click("button:has-text('Regenerate')")
    page.wait_for_selector(
        ".llmstream-message-assistant:nth-of-type(4) .llmstream-meta:not([hidden])"
    )
    bodies = page.locator(ANSWER).all_text_contents()
    assert bodies == ["First.", "Second."]
    rows = assistant_rows()
    assert [r["content"] for r in rows] == ["First.", "Second."]
    assert rows[0]["conversation_id"] == rows[1]["conversation_id"]
    assert [m["content"] for m in upstream.requests[1].json["messages"]] == [
        "Say something.",
        "First.",
        "Say something.",
    ]


def test_widget_error_is_shown_kindly(page: Any, upstream: FakeUpstream) -> None:
    # Three pieces, then the upstream connection is cut.
    upstream.respond(chunks=openai_chunks(WORDS[:10]), delay=0.05, close_after=4)
    page.goto("/pages/widget/?markdown=off")
    send(page, "Fail, please.")
    box = page.wait_for_selector(".llmstream-error:not([hidden])")
    assert box.get_attribute("role") == "alert"
    title = page.text_content(".llmstream-error strong")
    assert title == "Could not reach the model's service."
    assert page.is_visible(".llmstream-error button:has-text('Try again')")
    assert page.text_content(ANSWER) == "".join(WORDS[:3])  # the partial text stays
    assert "Traceback" not in page.content()
    screenshot(page, "widget-error")


def test_widget_refused_prompt_goes_back_to_the_box(page: Any, upstream: FakeUpstream) -> None:
    page.goto("/pages/widget/")
    page.evaluate(
        "document.querySelector('[data-llmstream-model]').insertAdjacentHTML('beforeend',"
        " '<option value=\"openai|nope\" selected>nope</option>')"
    )
    send(page, "Hello")
    page.wait_for_selector(".llmstream-status-error:has-text('Not sent')")
    assert page.input_value("textarea[name=prompt]") == "Hello"
    assert page.locator(".llmstream-message").count() == 0


MALICIOUS = [
    "# Heading\n\nSome **bold**, *italic*, `code` and a [link](https://example.com/a).\n\n",
    "<script>window.__xss = 1</script>\n\n",
    '<img src="x" onerror="window.__xss = 2">\n\n',
    "[click](javascript:window.__xss=3) ",
    "![pixel](https://example.com/p.png)\n\n",
    '```html\n<img src=x onerror="window.__xss = 4">\n```\n\n',
    "| a | b |\n|---|---|\n| <b>1</b> | 2 |\n",
]


def test_markdown_renders_but_model_html_never_executes(page: Any, upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(MALICIOUS), delay=0.02)
    page.goto("/pages/widget/")
    send(page, "Be nasty.")
    page.wait_for_selector(".llmstream-meta:not([hidden])")
    page.wait_for_timeout(300)  # time for an injected handler to fire, were there one
    assert page.evaluate("window.__xss") is None
    body = page.locator(ANSWER)
    assert body.locator("h1").inner_text() == "Heading"
    assert body.locator("strong").first.inner_text() == "bold"
    assert body.locator("em").inner_text() == "italic"
    assert body.locator("pre code").inner_text().startswith("<img")
    assert body.locator("table td").first.inner_text() == "<b>1</b>"
    link = body.locator("a[href='https://example.com/a']")
    assert link.get_attribute("rel") == "nofollow noopener noreferrer"
    assert body.locator("script, img, [onerror]").count() == 0
    assert body.locator("a[href^='javascript']").count() == 0
    assert "<script>window.__xss = 1</script>" in body.inner_text()
    screenshot(page, "widget-markdown")


def test_widget_is_usable_on_a_phone(page: Any, upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(["A short answer."]))
    page.set_viewport_size({"width": 390, "height": 740})
    page.goto("/pages/widget/")
    send(page, "Hello from a phone")
    page.wait_for_selector(".llmstream-meta:not([hidden])")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the page scrolls sideways"
    assert page.is_visible("button:has-text('Send')")
    screenshot(page, "widget-phone")


# -- htmx --------------------------------------------------------------------------------------


def events_requests(page: Any) -> list[str]:
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if "/events/" in r.url else None)
    return seen


def test_htmx_streams_and_closes_on_done(page: Any, upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(WORDS[:20]), delay=0.05)
    requests = events_requests(page)
    page.goto("/pages/htmx/")
    page.evaluate(RECORD_GROWTH, ".llmstream-answer .llmstream-text")
    page.fill("textarea[name=prompt]", "Count <b>please</b>")
    page.click("button:has-text('Send')")
    page.wait_for_selector(".llmstream-done")
    text = page.text_content(".llmstream-answer .llmstream-text")
    assert text == "".join(WORDS[:20])
    assert_progressive(page, len(text))
    assert page.text_content(".llmstream-done") == "12 in · 5 out tokens · $0.000022"
    assert page.is_hidden(".llmstream-stop")
    assert page.text_content(".llmstream-message-user .llmstream-text") == "Count <b>please</b>"
    # A second prompt continues the same conversation.
    upstream.respond(chunks=openai_chunks(["Again."]))
    page.fill("textarea[name=prompt]", "More")
    page.click("button:has-text('Send')")
    page.wait_for_selector(".llmstream-turn:nth-of-type(2) .llmstream-done")
    page.wait_for_timeout(1500)
    assert len(requests) == 2, requests  # one connection per turn, none reopened
    rows = assistant_rows()
    assert rows[0]["conversation_id"] == rows[1]["conversation_id"]
    screenshot(page, "htmx")


def test_htmx_failed_turn_does_not_replay_in_a_loop(page: Any, upstream: FakeUpstream) -> None:
    # Regression: with sse-close="done", a turn ending with `error` ended the response, the
    # browser reconnected, got 204, and the htmx SSE extension opened a fresh EventSource
    # without Last-Event-ID: the whole turn again, appended again, forever. The html stream
    # now ends both terminal events with a `close` event, and the fragment closes on it.
    upstream.respond(chunks=openai_chunks(WORDS[:10]), delay=0.05, close_after=4)
    requests = events_requests(page)
    page.goto("/pages/htmx/")
    page.fill("textarea[name=prompt]", "Fail")
    page.click("button:has-text('Send')")
    page.wait_for_selector(".llmstream-answer .llmstream-error")
    page.wait_for_timeout(3000)  # the extension retries after 500 ms: long enough to see it
    assert len(requests) == 1, requests
    assert page.text_content(".llmstream-answer .llmstream-text") == "".join(WORDS[:3])
    assert page.text_content(".llmstream-answer .llmstream-error").startswith(
        "The answer could not be completed:"
    )
    assert page.is_hidden(".llmstream-stop")
    screenshot(page, "htmx-error")


def test_htmx_stop_button(page: Any, upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(WORDS), delay=0.1)
    page.goto("/pages/htmx/")
    page.fill("textarea[name=prompt]", "Count slowly")
    page.click("button:has-text('Send')")
    page.wait_for_function(
        "document.querySelector('.llmstream-answer .llmstream-text')?.textContent.length > 20"
    )
    cursor = (
        "getComputedStyle(document.querySelector('.llmstream-answer .llmstream-text'),"
        " '::after').content"
    )
    assert page.evaluate(cursor) == '"\u258d"'  # the typing cursor, by CSS
    page.click(".llmstream-stop")
    page.wait_for_selector(".llmstream-done[data-finish-reason=cancelled]")
    assert page.evaluate(cursor) == "none"
    rows = wait_rows(lambda rows: rows and rows[-1]["status"] == "cancelled")
    assert rows[-1]["content"] == page.text_content(".llmstream-answer .llmstream-text")


def test_htmx_model_html_never_executes(page: Any, upstream: FakeUpstream) -> None:
    upstream.respond(chunks=openai_chunks(MALICIOUS[1:3]), delay=0.02)
    page.goto("/pages/htmx/")
    page.fill("textarea[name=prompt]", "Be nasty")
    page.click("button:has-text('Send')")
    page.wait_for_selector(".llmstream-done")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert page.locator(".llmstream-answer img, .llmstream-answer script").count() == 0


def test_htmx_form_error_is_shown(page: Any, upstream: FakeUpstream) -> None:
    page.goto("/pages/htmx/")
    page.evaluate("document.querySelector('[data-llmstream-conversation]').value = 'nope'")
    page.fill("textarea[name=prompt]", "Hello")
    page.click("button:has-text('Send')")
    page.wait_for_selector("[data-llmstream-errors] .llmstream-form-error")
    assert "conversation id" in page.text_content("[data-llmstream-errors]")
    assert page.locator(".llmstream-turn").count() == 0

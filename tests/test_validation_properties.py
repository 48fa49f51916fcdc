"""Property-based tests (hypothesis) of request validation (django_llmstream/validation.py).

Whatever a client sends — any bytes under any content type, any JSON value in any field —
``parse_body`` and ``validate_turn`` (and the AI SDK adapter's ``turn_body``) either refuse it
with :class:`RequestValidationError` (400, 413 or 415, naming the field where there is one)
or accept it, and what they accept holds the invariants the rest of the app relies on: a
non-empty prompt of at most ``MAX_PROMPT_CHARS`` characters, text without U+0000 or lone
surrogates, only allowed params, each of its type and within its range. Never another
exception (which would be a 500).

The table-driven cases of tests/test_security.py check exact answers; these check that no
input, however odd, gets another kind of answer.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.test import RequestFactory, override_settings

from django_llmstream import aisdk
from django_llmstream.exceptions import RequestValidationError
from django_llmstream.validation import TurnInput, parse_body, parse_last_event_id, validate_turn

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given  # noqa: E402
from hypothesis import settings as hsettings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MAX_PROMPT = 60
MAX_BODY = 3000
ALLOWED: dict[str, dict[str, Any]] = {
    "temperature": {"type": "float", "min": 0, "max": 2},
    "max_tokens": {"type": "int", "min": 1, "max": 1000},
    "seed": {"type": "int", "min": -(2**63), "max": 2**63 - 1},
    "stop": {"type": "list", "max_items": 3},
    "user": {"type": "str", "max_length": 20},
    "logprobs": {"type": "bool"},
}
# Field names an error may carry: the request's fields, a param's, an unknown field's.
KNOWN_FIELDS = {"prompt", "conversation", "provider", "model", "system", "params"}

T = TypeVar("T")

PROPERTIES = hsettings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(autouse=True)
def _limits() -> Iterator[None]:
    overrides = {"MAX_PROMPT_CHARS": MAX_PROMPT, "MAX_BODY_BYTES": MAX_BODY}
    with override_settings(
        LLMSTREAM={**settings.LLMSTREAM, **overrides, "ALLOWED_PARAMS": ALLOWED}
    ):
        yield


# -- strategies ------------------------------------------------------------------------------

# Any text at all: NUL, CR, lone surrogates, every plane.
any_text = st.text(st.characters(exclude_categories=()), max_size=80)
# Text with the characters that matter over-represented.
nasty_text = st.lists(
    st.sampled_from(["\x00", "\ud800", "\udc00", "\ud83d\ude00", " ", "\n", "\r", "x", "é", "</"])
    | any_text,
    max_size=12,
).map("".join)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**310)  # too large for a float
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
    | nasty_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=10,
)
param_values = (
    json_values
    | st.floats(min_value=-3, max_value=3)
    | st.integers(min_value=-5, max_value=1100)
    | st.sampled_from(["1", "1.5", "nan", "inf", "-0", "1e400", "9" * 5000, " 7 ", "0x10"])
    | st.lists(nasty_text, max_size=5)
)
params = st.dictionaries(
    st.sampled_from([*ALLOWED, "base_url", "stream", "api_key"]) | any_text,
    param_values,
    max_size=4,
)
turn_fields = st.fixed_dictionaries(
    {},
    optional={
        "prompt": nasty_text | any_text | json_values,
        "conversation": st.uuids().map(str) | any_text | json_values,
        "provider": any_text | json_values,
        "model": any_text | json_values,
        "system": nasty_text | json_values,
        "params": params | json_values,
        "csrfmiddlewaretoken": any_text,
    },
)
turn_objects = turn_fields | st.dictionaries(any_text, json_values, max_size=5)


# -- invariants ------------------------------------------------------------------------------


def assert_clean(text: str) -> None:
    assert "\x00" not in text
    text.encode("utf-8")  # strict: raises on a lone surrogate


def assert_accepted(turn: TurnInput) -> None:
    assert isinstance(turn.prompt, str) and turn.prompt.strip()
    assert len(turn.prompt) <= MAX_PROMPT
    assert_clean(turn.prompt)
    if turn.system is not None:
        assert len(turn.system) <= MAX_PROMPT
        assert_clean(turn.system)
        assert turn.conversation is None
    assert turn.conversation is None or isinstance(turn.conversation, uuid.UUID)
    for name in ("provider", "model"):
        value = getattr(turn, name)
        assert value is None or (isinstance(value, str) and value)
    for name, value in turn.params.items():
        spec = ALLOWED[name]  # KeyError: a param that is not allowed got through
        kind = spec["type"]
        if kind in {"int", "float"}:
            assert not isinstance(value, bool)
            assert isinstance(value, int if kind == "int" else float)
            assert math.isfinite(value)
            assert spec["min"] <= value <= spec["max"]
        elif kind == "bool":
            assert isinstance(value, bool)
        elif kind == "str":
            assert isinstance(value, str) and len(value) <= spec["max_length"]
            assert_clean(value)
        else:
            assert isinstance(value, list) and len(value) <= spec["max_items"]
            for item in value:
                assert isinstance(item, str) and len(item) <= 1000
                assert_clean(item)


def assert_refusal(error: RequestValidationError, data: Mapping[str, Any] | None) -> None:
    assert error.status in {400, 413, 415}
    assert error.type == "invalid_request"
    assert isinstance(error.message, str) and error.message
    if error.field is not None:
        if error.field.startswith("params."):
            assert data is not None and error.field[7:] in data.get("params", {})
        else:
            assert error.field in KNOWN_FIELDS or (data is not None and error.field in data)


def outcome(call: Callable[[], T]) -> T | RequestValidationError:
    """What ``call`` returns, or the RequestValidationError it raises (anything else fails
    the test)."""
    try:
        return call()
    except RequestValidationError as error:
        return error


def check_turn(data: Any) -> TurnInput | None:
    """validate_turn(data): accepted with its invariants, or refused properly."""
    turn = outcome(lambda: validate_turn(data))
    if isinstance(turn, RequestValidationError):
        assert turn.status == 400
        assert_refusal(turn, data)
        return None
    assert_accepted(turn)
    return turn


# -- validate_turn ---------------------------------------------------------------------------


@PROPERTIES
@given(turn_objects)
@example({"prompt": "hi", "params": {"temperature": 10**400}})
@example({"prompt": "hi", "params": {"temperature": "1e400"}})
@example({"prompt": "hi", "params": {"max_tokens": float("inf")}})
@example({"prompt": "hi", "params": {"seed": 1e300}})
@example({"prompt": "\ud800\x00" * 40})
@example({"prompt": "ok", "params": {"stop": ["\ud800", "\x00a"], "user": "\udfff"}})
def test_any_object_is_accepted_with_its_invariants_or_refused(data: dict[str, Any]) -> None:
    check_turn(data)


@PROPERTIES
@given(nasty_text)
def test_a_prompt_is_accepted_exactly_when_it_has_text_within_the_limit(prompt: str) -> None:
    turn = check_turn({"prompt": prompt})
    cleaned = prompt.replace("\x00", "")
    cleaned = cleaned.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    assert (turn is not None) == (bool(cleaned.strip()) and len(cleaned) <= MAX_PROMPT)
    if turn is not None:
        assert turn.prompt == cleaned


# -- parse_body ------------------------------------------------------------------------------

CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=utf-16",
    "application/json; charset=latin-1",
    "application/json; charset=base64",
    "application/json; charset=rot13",
    "application/json; charset=no-such-charset",
    "application/vnd.api+json",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=rot13",
    "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data",
    "multipart/form-data; boundary=xyz",
    "text/plain",
    "application/xml",
    "",
]


def body_request(body: bytes, content_type: str) -> Any:
    # CONTENT_TYPE given explicitly: the factory leaves it out when the body is empty.
    return RequestFactory().generic(
        "POST", "/llmstream/turns/", data=body, content_type=content_type, CONTENT_TYPE=content_type
    )


def check_body(body: bytes, content_type: str) -> None:
    """parse_body then validate_turn: accepted with the invariants, or refused properly."""
    data = outcome(lambda: parse_body(body_request(body, content_type)))
    if isinstance(data, RequestValidationError):
        assert_refusal(data, None)
        if data.status == 413:
            assert len(body) > MAX_BODY
        elif data.status == 415:
            assert content_type.split(";")[0] in {"text/plain", "application/xml", ""}
        return
    assert isinstance(data, dict)
    assert len(body) <= MAX_BODY
    check_turn(data)


def multipart(fields: list[tuple[str, str]], boundary: str = "xyz") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode("utf-8", "surrogatepass")


json_bodies = st.one_of(
    json_values.map(lambda value: json.dumps(value).encode()),
    turn_objects.map(lambda value: json.dumps(value).encode()),
    turn_objects.map(
        lambda value: json.dumps(value, ensure_ascii=False).encode("utf-8", "replace")
    ),
)
form_bodies = st.lists(
    st.tuples(st.sampled_from([*KNOWN_FIELDS, "params[temperature]", "params[x]"]), nasty_text),
    max_size=6,
).map(lambda fields: "&".join(f"{k}={v}" for k, v in fields).encode("utf-8", "surrogatepass"))
bodies = st.one_of(
    st.binary(max_size=200),
    json_bodies,
    form_bodies,
    st.lists(st.tuples(st.sampled_from(sorted(KNOWN_FIELDS)), nasty_text), max_size=4).map(
        multipart
    ),
    st.sampled_from(
        [
            b"[" * 5000,
            b'{"prompt": ' * 3000,
            b'{"prompt": "hi", "params": {"temperature": ' + b"9" * 400 + b"}}",
            b'{"prompt": "hi", "params": {"seed": ' + b"9" * 5000 + b"}}",
            b"\xef\xbb\xbf" + b'{"prompt": "hi"}',
            b'{"prompt": "x"}' + b" " * MAX_BODY,
            b"&".join(b"a%d=1" % i for i in range(1200)),
            b"prompt=hi&params=" + b"[" * 2000,
            b"--xyz\r\ngarbage",
        ]
    ),
)


@PROPERTIES
@given(bodies, st.sampled_from(CONTENT_TYPES))
def test_any_body_is_parsed_or_refused(body: bytes, content_type: str) -> None:
    check_body(body, content_type)


# -- the AI SDK adapter and Last-Event-ID ----------------------------------------------------

ui_messages = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "role": st.sampled_from(["user", "assistant", "system"]) | json_values,
            "parts": st.lists(
                st.fixed_dictionaries(
                    {}, optional={"type": st.just("text") | json_values, "text": json_values}
                )
                | json_values,
                max_size=3,
            )
            | json_values,
            "content": nasty_text | json_values,
        },
    )
    | json_values,
    max_size=3,
)
aisdk_bodies = st.fixed_dictionaries(
    {},
    optional={
        "id": any_text | json_values,
        "messages": ui_messages | json_values,
        "trigger": st.sampled_from(["submit-message", "regenerate-message"]) | json_values,
        "messageId": json_values,
        "params": params,
        "model": json_values,
    },
)


@PROPERTIES
@given(aisdk_bodies)
@example({"messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}], "trigger": []})
def test_any_ai_sdk_body_is_accepted_or_refused(data: dict[str, Any]) -> None:
    result = outcome(lambda: aisdk.turn_body(data))
    if isinstance(result, RequestValidationError):
        assert result.status == 400
        assert result.field in {"id", "trigger", "messages"}
        return
    check_turn(result[1])


@PROPERTIES
@given(any_text | st.integers(min_value=0).map(str))
def test_any_last_event_id_is_a_number_or_refused(raw: str) -> None:
    # In the header: a query string cannot carry every string (lone surrogates).
    request = RequestFactory().get("/llmstream/x/", HTTP_LAST_EVENT_ID=raw)
    value = outcome(lambda: parse_last_event_id(request))
    if isinstance(value, RequestValidationError):
        assert (value.status, value.field) == (400, "last_event_id")
        return
    assert isinstance(value, int) and value >= 0


# -- the same bodies through the views, with Django's CSRF check enforced --------------------

TOKEN = "v" * 32
UNREADABLE: list[tuple[bytes, str, int, str | None]] = [
    (b"garbage", "multipart/form-data", 400, None),  # no boundary
    (b"--xyz\r\ngarbage", "multipart/form-data; boundary=xyz", 400, "prompt"),  # no fields
    (b"prompt=hi", "application/x-www-form-urlencoded; charset=rot13", 400, None),
    (b"&".join(b"f%d=1" % i for i in range(1200)), "application/x-www-form-urlencoded", 400, None),
    (b'{"prompt": "hi"}', "application/json; charset=base64", 400, None),
    (b'{"prompt": "hi"}', "application/json; charset=utf-16", 400, None),
    (b"[" * 5000, "application/json", 400, None),
    (b'{"prompt": "hi", "params": {"seed": ' + b"9" * 5000 + b"}}", "application/json", 400, None),
    (
        b'{"prompt": "hi", "params": {"temperature": 1' + b"0" * 400 + b"}}",
        "application/json",
        400,
        "params.temperature",
    ),
    (b"prompt=hi&params=" + b"[" * 3000, "application/x-www-form-urlencoded", 400, "params"),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("url", ["/llmstream/turns/", "/llmstream/stream/"])
@pytest.mark.parametrize(("body", "content_type", "status", "field"), UNREADABLE)
async def test_unreadable_bodies_are_json_errors_and_write_nothing(
    url: str, body: bytes, content_type: str, status: int, field: str | None
) -> None:
    from django.test import AsyncClient

    from django_llmstream.models import Conversation, Message

    with override_settings(LLMSTREAM={**settings.LLMSTREAM, "MAX_BODY_BYTES": 20_000}):
        client = AsyncClient(enforce_csrf_checks=True)
        client.cookies["csrftoken"] = TOKEN
        response = await client.generic(
            "POST", url, body, content_type=content_type, headers={"X-CSRFToken": TOKEN}
        )
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    error = json.loads(response.content)["error"]
    assert (error["type"], error["field"]) == ("invalid_request", field), error
    assert await Conversation.objects.acount() == 0
    assert await Message.objects.acount() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("url", ["/llmstream/turns/", "/llmstream/stream/"])
async def test_a_multipart_form_passes_the_csrf_check_and_is_read(url: str) -> None:
    """Django's CSRF check parses a multipart body from the stream (looking for its token
    field); the form must still be read afterwards (FormData from a browser is multipart)."""
    from django.test import AsyncClient

    from django_llmstream.models import Message

    client = AsyncClient(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = TOKEN
    form = {"prompt": "from a multipart form", "csrfmiddlewaretoken": TOKEN}
    response = await client.post(url, form)  # the test client's default: multipart
    assert response.status_code in {200, 201}, response.content[:300]
    if response.status_code == 200:
        [chunk async for chunk in response.streaming_content]  # type: ignore[attr-defined]
    else:
        from django_llmstream.generation import running_generations

        for generation in list(running_generations().values()):
            await generation.finished.wait()
    assert await Message.objects.filter(role="user", content="from a multipart form").aexists()


@pytest.mark.django_db(transaction=True)
async def test_an_ai_sdk_body_with_an_odd_trigger_is_a_400() -> None:
    from django.test import AsyncClient

    body = {"messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
    client = AsyncClient()
    triggers: list[Any] = [[], {}, 5, "other"]
    for trigger in triggers:
        response = await client.post(
            "/llmstream/stream/?format=ai-sdk", {**body, "trigger": trigger}, "application/json"
        )
        assert response.status_code == 400, response.content[:300]
        assert json.loads(response.content)["error"]["field"] == "trigger"

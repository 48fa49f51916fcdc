"""Request validation: everything is checked before anything is written.

Errors are :class:`RequestValidationError` with the ``field`` the protocol names (``prompt``,
``provider``, ``model``, ``conversation``, ``system``, ``params.<name>``).
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParserError
from django.http.request import RawPostDataException

from django_llmstream.conf import app_settings
from django_llmstream.exceptions import RequestValidationError
from django_llmstream.text import clean_text

__all__ = ["TurnInput", "parse_body", "parse_last_event_id", "readable_body", "validate_turn"]

_KNOWN_FIELDS = {"prompt", "conversation", "provider", "model", "system", "params"}
# Form posts carry Django's CSRF token as a field; it is not ours to refuse.
_IGNORED_FIELDS = {"csrfmiddlewaretoken"}


@dataclass(frozen=True, slots=True)
class TurnInput:
    prompt: str
    conversation: uuid.UUID | None = None
    provider: str | None = None
    model: str | None = None
    system: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


def parse_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object or form fields; 413/415/400 on anything else."""
    limit = int(app_settings.MAX_BODY_BYTES)
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    too_big = RequestValidationError(f"The request body is larger than {limit} bytes.", status=413)
    if declared > limit:
        raise too_big
    try:
        body = request.body
    except RequestDataTooBig as exc:
        raise too_big from exc
    except RawPostDataException:
        # A multipart form that Django's CSRF check has already parsed from the stream (to
        # find its token): the fields are in request.POST, the size was checked before.
        body = b""
    if len(body) > limit:
        raise too_big
    content_type = request.content_type or ""
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            data = json.loads(body.decode(request.encoding or "utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise RequestValidationError(f"The body is not valid JSON: {exc}") from exc
        except LookupError as exc:  # a charset that is a codec but no text encoding (base64)
            raise RequestValidationError(
                f"The body's charset {request.encoding!r} is not a text encoding."
            ) from exc
        except RecursionError as exc:
            raise RequestValidationError("The body is not valid JSON: nested too deeply.") from exc
        if not isinstance(data, dict):
            raise RequestValidationError("The JSON body must be an object.")
        return data
    if content_type in {"application/x-www-form-urlencoded", "multipart/form-data"}:
        with readable_body():
            form: dict[str, Any] = dict(request.POST.items())
        params = {k[7:-1]: v for k, v in form.items() if k.startswith("params[")}
        form = {k: v for k, v in form.items() if not k.startswith("params[")}
        if "params" in form:
            try:
                form["params"] = json.loads(form["params"])
            except (ValueError, RecursionError) as exc:
                raise RequestValidationError(
                    "params must be a JSON object.", field="params"
                ) from exc
        elif params:
            form["params"] = params
        return form
    raise RequestValidationError("Send the body as application/json (or a form).", status=415)


@contextlib.contextmanager
def readable_body() -> Iterator[None]:
    """Around code that reads ``request.POST`` (the form, or Django's CSRF check looking for
    its token): a body Django cannot parse as a form — malformed multipart, a charset a form
    cannot have, more than ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` fields or
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` bytes — is a :class:`RequestValidationError` (400, 413),
    answered in JSON like every other bad request, not Django's HTML ``400``."""
    try:
        yield
    except RequestDataTooBig as exc:
        raise RequestValidationError("The request body is too large.", status=413) from exc
    except (MultiPartParserError, BadRequest, SuspiciousOperation) as exc:
        raise RequestValidationError(f"The form body cannot be read: {exc}") from exc


def _optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RequestValidationError(f"{name} must be a string.", field=name)
    return value


def _check_param(name: str, value: Any, spec: Mapping[str, Any]) -> Any:
    where = f"params.{name}"
    kind = spec.get("type")
    if kind in {"int", "float"}:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # Form fields arrive as strings.
            if isinstance(value, str):
                try:
                    value = int(value) if kind == "int" else float(value)
                except ValueError as exc:
                    raise RequestValidationError(f"{name} must be a number.", field=where) from exc
            else:
                raise RequestValidationError(f"{name} must be a number.", field=where)
        if kind == "int":
            if isinstance(value, float):
                if not value.is_integer():
                    raise RequestValidationError(f"{name} must be a whole number.", field=where)
                value = int(value)
        else:
            try:
                value = float(value)
            except OverflowError as exc:  # an int too large for a float: out of any range
                raise RequestValidationError(
                    f"{name} must be between {spec.get('min')} and {spec.get('max')}.", field=where
                ) from exc
            if not math.isfinite(value):
                raise RequestValidationError(f"{name} must be a finite number.", field=where)
        low, high = spec.get("min"), spec.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            raise RequestValidationError(f"{name} must be between {low} and {high}.", field=where)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise RequestValidationError(f"{name} must be true or false.", field=where)
        return value
    if kind == "str":
        if not isinstance(value, str) or len(value) > int(spec.get("max_length", 1000)):
            raise RequestValidationError(f"{name} must be a short string.", field=where)
        return clean_text(value)
    if kind == "list":
        if not isinstance(value, list) or len(value) > int(spec.get("max_items", 16)):
            raise RequestValidationError(f"{name} must be a short list.", field=where)
        if not all(isinstance(item, str) and len(item) <= 1000 for item in value):
            raise RequestValidationError(f"{name} must be a list of strings.", field=where)
        return [clean_text(item) for item in value]
    raise RequestValidationError(f"{name} is not allowed.", field=where)


def validate_turn(data: Mapping[str, Any]) -> TurnInput:
    """Check the fields of a new turn (provider and model are checked against settings by the
    view, which knows the conversation)."""
    for name in data:
        if name not in _KNOWN_FIELDS and name not in _IGNORED_FIELDS:
            raise RequestValidationError(f"Unknown field {name!r}.", field=name)
    prompt = data.get("prompt")
    if prompt is None:
        raise RequestValidationError("prompt is required.", field="prompt")
    if not isinstance(prompt, str):
        raise RequestValidationError("prompt must be a string.", field="prompt")
    prompt = clean_text(prompt)
    if not prompt.strip():
        raise RequestValidationError("prompt must not be empty.", field="prompt")
    limit = int(app_settings.MAX_PROMPT_CHARS)
    if len(prompt) > limit:
        raise RequestValidationError(
            f"prompt is longer than {limit} characters ({len(prompt)}).", field="prompt"
        )
    conversation_raw = _optional_str(data, "conversation")
    conversation = None
    if conversation_raw is not None:
        try:
            conversation = uuid.UUID(conversation_raw)
        except ValueError as exc:
            raise RequestValidationError(
                "conversation must be a conversation id (a UUID).", field="conversation"
            ) from exc
    system = _optional_str(data, "system")
    if system is not None:
        system = clean_text(system)
        if len(system) > limit:
            raise RequestValidationError(
                f"system is longer than {limit} characters.", field="system"
            )
        if conversation is not None:
            raise RequestValidationError(
                "system can only be set when a conversation starts.", field="system"
            )
    params_raw = data.get("params")
    if params_raw is None or params_raw == "":
        params_raw = {}
    if not isinstance(params_raw, Mapping):
        raise RequestValidationError("params must be an object.", field="params")
    allowed: Mapping[str, Mapping[str, Any]] = app_settings.ALLOWED_PARAMS
    params: dict[str, Any] = {}
    for name, value in params_raw.items():
        spec = allowed.get(name)
        if spec is None:
            raise RequestValidationError(
                f"{name} is not an allowed parameter"
                + (f" (allowed: {', '.join(sorted(allowed))})." if allowed else "."),
                field=f"params.{name}",
            )
        params[name] = _check_param(name, value, spec)
    return TurnInput(
        prompt=prompt,
        conversation=conversation,
        provider=_optional_str(data, "provider"),
        model=_optional_str(data, "model"),
        system=system,
        params=params,
    )


def parse_last_event_id(request: HttpRequest) -> int:
    """``Last-Event-ID`` (header, or ``?last_event_id=``) as an int; 0 when absent."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None or raw == "":
        raw = request.GET.get("last_event_id", "")
    raw = raw.strip()
    if not raw:
        return 0
    # isascii(): str.isdigit() is also true for "²" and other digits int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise RequestValidationError(
            "Last-Event-ID must be an event id this server sent.", field="last_event_id"
        )
    return int(raw)

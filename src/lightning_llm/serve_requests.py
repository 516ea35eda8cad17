"""The JSON bodies `lightning-llm serve` accepts, checked field by field: a bad one becomes a BadRequest
(status and one line) before any model runs."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Any

from lightning_llm.models.sampling import check_sampling_options

# Per-request defaults of a generate request: those of `lightning-llm generate`, with a short continuation.
GENERATE_DEFAULTS: dict[str, Any] = {
    "max_new_tokens": 50,
    "temperature": 0.8,
    "top_k": 200,
    "top_p": None,
    "seed": None,
}
CLASSIFY_EXAMPLE = '{"texts": ["a sentence", ...]}'
GENERATE_EXAMPLE = '{"prompt": "some text", "max_new_tokens": 50}'
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """What one request may ask for; anything more is refused with a 413 or 422."""

    max_texts: int
    max_chars: int
    max_new_tokens: int


@dataclasses.dataclass(frozen=True)
class Rejected:
    """A request refused with an HTTP status and a one-line reason."""

    status: int
    reason: str

    def response(self) -> Any:
        from fastapi.responses import JSONResponse  # the `serve` extra

        return JSONResponse({"detail": self.reason}, status_code=self.status)


class BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.rejected = Rejected(status, reason)


# Requests: a JSON object in, a typed request or a BadRequest out.


@dataclasses.dataclass(frozen=True)
class ClassifyRequest:
    texts: list[str]
    pairs: list[str] | None


@dataclasses.dataclass(frozen=True)
class GenerateRequest:
    prompt: str
    max_new_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int | None


def json_type(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return JSON_TYPES.get(type(value), type(value).__name__)


def check_fields(payload: Any, fields: Sequence[str], example: str) -> dict[str, Any]:
    """The payload as a dict, unless it is no JSON object or names a field the API does not take."""
    if not isinstance(payload, dict):
        raise BadRequest(400, f"the body must be a JSON object such as {example}, not {json_type(payload)}")
    unknown = next((key for key in payload if key not in fields), None)
    if unknown is not None:
        near = difflib.get_close_matches(str(unknown), fields, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise BadRequest(422, f"unknown field {unknown!r}{hint} (this API takes {', '.join(fields)})")
    return payload


def text_list(payload: dict[str, Any], key: str, limits: RequestLimits) -> list[str]:
    """payload[key]: a non-empty array of at most max_texts strings of at most max_chars characters each."""
    if key not in payload:
        raise BadRequest(422, f"missing field {key!r}: send {CLASSIFY_EXAMPLE}")
    texts = payload[key]
    if not isinstance(texts, list):
        raise BadRequest(422, f"{key!r} must be an array of strings, not {json_type(texts)}")
    if not texts:
        raise BadRequest(422, f"{key!r} is empty: send at least one text")
    if len(texts) > limits.max_texts:
        raise BadRequest(
            413,
            f"{key!r} holds {len(texts):,} texts; this server takes at most {limits.max_texts} per request "
            "(--max_texts): split them over several requests",
        )
    for index, text in enumerate(texts):
        check_text(text, f"{key}[{index}]", limits)
    return texts


def check_text(text: Any, name: str, limits: RequestLimits) -> None:
    if not isinstance(text, str):
        raise BadRequest(422, f"{name} is {json_type(text)}, not a string")
    if len(text) > limits.max_chars:
        raise BadRequest(
            413,
            f"{name} has {len(text):,} characters; this server takes at most {limits.max_chars:,} (--max_chars)",
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # JSON allows "\ud800"; tokenizers fail on it
        raise BadRequest(
            422, f"{name} holds a lone surrogate escape (\\ud800-\\udfff), which is not text"
        ) from None


def classify_request(payload: Any, limits: RequestLimits, takes_pairs: bool | None) -> ClassifyRequest:
    """`takes_pairs`: whether the classifier was trained on sentence pairs (None: not known, pairs optional)."""
    payload = check_fields(payload, ("texts", "pairs"), CLASSIFY_EXAMPLE)
    texts = text_list(payload, "texts", limits)
    if takes_pairs is False and "pairs" in payload:
        raise BadRequest(422, "this classifier was trained on single texts: leave out 'pairs'")
    if takes_pairs and "pairs" not in payload:
        raise BadRequest(
            422, "this classifier was trained on sentence pairs: send 'pairs', the second text of each pair"
        )
    pairs = text_list(payload, "pairs", limits) if "pairs" in payload else None
    if pairs is not None and len(pairs) != len(texts):
        raise BadRequest(
            422, f"'pairs' holds {len(pairs)} texts but 'texts' {len(texts)}: send one pair per text"
        )
    return ClassifyRequest(texts, pairs)


def whole_number(payload: dict[str, Any], key: str, optional: bool) -> int | None:
    value = payload.get(key, GENERATE_DEFAULTS[key])
    if (value is None and optional) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise BadRequest(
        422, f"{key!r} must be a whole number{' or null' if optional else ''}, not {json_type(value)}"
    )


def real_number(payload: dict[str, Any], key: str, optional: bool) -> float | None:
    value = payload.get(key, GENERATE_DEFAULTS[key])
    if value is None and optional:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise BadRequest(422, f"{key!r} must be a number{' or null' if optional else ''}, not {json_type(value)}")


def generate_request(payload: Any, limits: RequestLimits) -> GenerateRequest:
    payload = check_fields(payload, ("prompt", *GENERATE_DEFAULTS), GENERATE_EXAMPLE)
    if "prompt" not in payload:
        raise BadRequest(
            422, f"missing field 'prompt': send {GENERATE_EXAMPLE} (an empty prompt starts a text)"
        )
    check_text(payload["prompt"], "'prompt'", limits)
    max_new_tokens = whole_number(payload, "max_new_tokens", optional=False)
    if max_new_tokens is not None and max_new_tokens > limits.max_new_tokens:
        raise BadRequest(
            422,
            f"'max_new_tokens' is {max_new_tokens:,}; this server makes at most {limits.max_new_tokens:,} per "
            "request (--max_new_tokens_limit)",
        )
    request = GenerateRequest(
        prompt=payload["prompt"],
        max_new_tokens=max_new_tokens,
        temperature=real_number(payload, "temperature", optional=False),
        top_k=whole_number(payload, "top_k", optional=True),
        top_p=real_number(payload, "top_p", optional=True),
        seed=whole_number(payload, "seed", optional=True),
    )
    try:
        check_sampling_options(request.max_new_tokens, request.temperature, request.top_k, request.top_p)
    except ValueError as error:
        raise BadRequest(422, f"'{error}") from None
    if request.seed is not None and not 0 <= request.seed < 2**63:
        raise BadRequest(422, f"'seed' is {request.seed}: it must be between 0 and 2**63 - 1, or null")
    return request

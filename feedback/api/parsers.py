"""JSON bodies with the project's limits, for every endpoint that takes one.

The body-level rules live here, once (README, "Errors and limits"):

- at most ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (1 MiB) bytes: 413;
- UTF-8 only: a ``charset`` other than UTF-8 is 415; NUL bytes in the body (UTF-16 and UTF-32
  put one beside every ASCII character) or bytes that are not UTF-8 are 400;
- strict JSON: no ``NaN``/``Infinity``, no duplicate key in an object, no lone surrogate escape;
- no NUL character (``\\u0000``) in any string or key, no number beyond a double's range
  (``1e999``: PostgreSQL's jsonb refuses it) and at most ``JSON_MAX_DEPTH`` levels of nested
  arrays and objects. These three are refused naming the field (``input.x``,
  ``items[3].correction``): ``BodyRefused`` carries the parsed body, so a batch can refuse the
  items concerned and store the others.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.conf import settings
from rest_framework.exceptions import APIException, ParseError, UnsupportedMediaType
from rest_framework.parsers import JSONParser

from ..errors import FieldError, InvalidInput

JSON_MAX_DEPTH = 32  # levels of arrays and objects in a body, the body itself being the first
MAX_REPORTED = 20  # refusals named per body


class PayloadTooLarge(APIException):
    status_code = 413
    default_code = "too_large"
    default_detail = "The request body is larger than the limit."


class BodyRefused(InvalidInput):
    """A well-formed JSON body holding values the project refuses (NUL, ±1e999, too deep),
    each named by its path; ``data`` is the parsed body."""

    def __init__(self, errors: list[FieldError], data: Any) -> None:
        super().__init__(errors)
        self.data = data


# A surrogate escape (\ud800-\udfff). A valid pair decodes to one character; a lone one
# decodes to a string that cannot be encoded, so it is refused here, not with a 500 later.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
# json writes a NUL inside a string as \u0000 (a literal backslash as \\): an odd run of
# backslashes before "u0000" is a NUL.
ENCODED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
# Anything but brackets: removed to leave the nesting. Brackets inside strings stay, which can
# only make the check answer "deeper" wrongly, and then the walk below finds nothing.
NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
EMPTY_PAIRS = re.compile(r"\{\}|\[\]")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"the key {duplicate!r} appears twice in one object")
    return obj


def _deeper_than(text: str, limit: int) -> bool:
    """Whether the JSON text may nest arrays and objects more than ``limit`` levels deep.

    Cheap for the usual body: few brackets cannot nest deeply; otherwise everything but the
    brackets is removed and innermost empty pairs peeled off level by level (C regex passes,
    no loop over characters)."""
    if text.count("[") + text.count("{") <= limit:
        return False
    brackets = NOT_BRACKETS.sub("", text)
    for _ in range(limit):
        brackets, found = EMPTY_PAIRS.subn("", brackets)
        if not brackets:
            return False
        if not found:
            return True  # brackets inside strings: let the walk decide
    return True


def _walk_refusals(data: Any, limit: int) -> list[FieldError]:
    """The paths of NUL characters, non-finite numbers and containers past ``limit`` levels.

    Iterative and bounded by ``limit``: it never recurses, whatever the body."""
    found: list[FieldError] = []
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack and len(found) < MAX_REPORTED:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                found.append(
                    FieldError(path or None, "invalid", "NUL characters are not allowed.")
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                found.append(
                    FieldError(
                        path or None,
                        "out_of_range",
                        "The number is beyond a double's range (at most about ±1.8e308).",
                    )
                )
        elif isinstance(value, (dict, list)):
            if depth > limit:
                found.append(
                    FieldError(
                        path or None,
                        "too_deep",
                        f"JSON nests at most {limit} levels of arrays and objects in a body.",
                    )
                )
                continue
            if isinstance(value, dict):
                children = []
                for key, item in value.items():
                    child = f"{path}.{key}" if path else key
                    if "\x00" in key:
                        found.append(
                            FieldError(path or None, "invalid", "NUL characters are not allowed.")
                        )
                    children.append((item, child, depth + 1))
            else:
                children = [
                    (item, f"{path}[{position}]", depth + 1) for position, item in enumerate(value)
                ]
            stack.extend(reversed(children))
    return found


def parse_json_body(raw: bytes, charset: str | None = None) -> Any:
    """The body's JSON value, under the rules above."""
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(
            f"charset={charset}", detail=f"The body must be UTF-8 JSON, not {charset}."
        )
    if b"\x00" in raw:
        raise ParseError("The body must be UTF-8 JSON: it holds NUL bytes (UTF-16 or UTF-32?).")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(f"The body is not UTF-8: {exc}") from exc
    overflowed: list[str] = []

    def parse_float(literal: str) -> float:
        value = float(literal)
        if value - value != 0:  # inf - inf is nan: 1e999 overflowed
            overflowed.append(literal)
        return value

    try:
        data = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=parse_float,
            object_pairs_hook=_object,
        )
        if ("\\ud" in text or "\\uD" in text) and SURROGATE_ESCAPE.search(text):
            json.dumps(data, ensure_ascii=False).encode()  # rare: only then a full re-encode
    except UnicodeEncodeError as exc:
        raise ParseError(
            "The body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff)."
        ) from exc
    except RecursionError as exc:
        raise ParseError(
            f"The body nests more than {JSON_MAX_DEPTH} levels of arrays and objects."
        ) from exc
    except ValueError as exc:
        raise ParseError(f"The body is not valid JSON: {exc}") from exc
    # Each test is a C scan of the text; the walk that names the fields runs only after one
    # of them found something.
    if (
        overflowed
        or ("u0000" in text and ENCODED_NUL.search(text))
        or _deeper_than(text, JSON_MAX_DEPTH)
    ):
        refusals = _walk_refusals(data, JSON_MAX_DEPTH)
        if refusals:
            raise BodyRefused(refusals, data)
    return data


def read_body(request) -> bytes:
    """The body, at most the limit (413 beyond it): by Content-Length as Django reads it, or,
    for ``Transfer-Encoding: chunked`` without a length (gunicorn passes such a body through
    ``wsgi.input`` already de-chunked), read to its end."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    meta = request.META
    declared = meta.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body has {declared} bytes; the limit is {limit}.")
    if not declared and "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        return read_chunked(request, limit)
    if not declared.isdigit() or int(declared) == 0:
        return b""  # as Django and DRF read a body without a usable length
    raw = request.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"The body is larger than {limit} bytes.")
    return raw


def read_chunked(request, limit: int) -> bytes:
    stream = request.META.get("wsgi.input")
    if stream is None:
        raise ParseError("The chunked body could not be read: send Content-Length.")
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"The body is larger than {limit} bytes.")
    return raw


class LimitedJSONParser(JSONParser):
    """DRF's parser for every JSON endpoint: ``parse_json_body``'s rules. (A chunked body
    reaches it through ``ChunkedBodyMiddleware``, which gives it a length.)"""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        if declared > limit:
            raise PayloadTooLarge(f"The body has {declared} bytes; the limit is {limit}.")
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes.")
        charset = None
        if media_type and "charset=" in media_type:
            charset = media_type.split("charset=", 1)[1].split(";", 1)[0].strip().strip('"')
        return parse_json_body(raw, charset)

"""JSON parsing with the project's limits: 1 MiB bodies, strict JSON, clear errors."""

from __future__ import annotations

import json
import re

from django.conf import settings
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser


class PayloadTooLarge(APIException):
    status_code = 413
    default_code = "too_large"
    default_detail = "The request body is larger than the limit."


# A surrogate escape (\ud800-\udfff). A valid pair decodes to one character; a lone one
# decodes to a string that cannot be encoded, so it is refused here, not with a 500 later.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


class LimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        if declared > limit:
            raise PayloadTooLarge(f"The body has {declared} bytes; the limit is {limit}.")
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise PayloadTooLarge(f"The body is larger than {limit} bytes.")
        try:
            data = json.loads(raw, parse_constant=_reject_constant)
            if SURROGATE_ESCAPE.search(raw):  # rare: only then pay for a full re-encode
                json.dumps(data, ensure_ascii=False).encode()
            return data
        except UnicodeDecodeError as exc:
            raise ParseError(f"The body is not UTF-8: {exc}") from exc
        except UnicodeEncodeError as exc:
            raise ParseError(
                "The body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff)."
            ) from exc
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"The body is not valid JSON: {exc}") from exc

"""Validation of intake payloads.

Hand-written on purpose: intake is the hot path (see the README's benchmark), and checking a
plain dict costs a few microseconds where a serializer layer costs more than the INSERT. Every
refusal names its field with a path relative to the item (``categories[1]``, ``segment.locale``,
``prediction.external_id``; the API prefixes ``items[3].`` in a batch) and says why. Unknown
fields are refused rather than dropped, so a typo never loses data. What holds for any JSON body
(no NUL, no ±1e999, at most 32 levels, UTF-8, no duplicate keys) is the parser's to refuse
(``feedback/api/parsers.py``), once.
The OpenAPI schema for these payloads lives in ``feedback/api/schema.py``; schemathesis checks
that the two agree.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .errors import FieldError

BATCH_MAX_ITEMS = 1000
COMMENT_MAX_CHARS = 5000
CORRECTION_MAX_CHARS = 5000  # a string correction; a JSON one is limited by its encoded size
CORRECTION_MAX_JSON_BYTES = 64 * 1024
SEGMENT_MAX_KEYS = 20
SEGMENT_KEY_MAX_CHARS = 64
SEGMENT_VALUE_MAX_CHARS = 128
EXTERNAL_ID_MAX_CHARS = 255
IDEMPOTENCY_KEY_MAX_CHARS = 255
END_USER_MAX_CHARS = 255
CATEGORIES_MAX = 20
SEGMENT_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")

PREDICTION_FIELDS = frozenset(
    {
        "external_id",
        "model",
        "model_version",
        "input",
        "output",
        "label",
        "confidence",
        "segment",
        "occurred_at",
    }
)
FEEDBACK_FIELDS = frozenset(
    {"prediction", "kind", "rating", "categories", "comment", "correction", "end_user", "segment"}
)
FEEDBACK_KINDS = ("rating", "report", "dispute")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


# json.dumps writes a NUL inside any string as the escape \u0000 (and a literal backslash as
# \\), so an odd run of backslashes before "u0000" is a real NUL. PostgreSQL's jsonb and text
# cannot store one.
ENCODED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(encoded_json: str) -> bool:
    return "u0000" in encoded_json and ENCODED_NUL.search(encoded_json) is not None


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def check_unknown_fields(
    data: dict, allowed: frozenset[str], prefix: str, errors: list[FieldError]
) -> None:
    for name in data:
        if name not in allowed:
            errors.append(
                FieldError(
                    _join(prefix, str(name)),
                    "unknown_field",
                    f"Unknown field {name!r}; allowed: {', '.join(sorted(allowed))}.",
                )
            )


def check_string(
    value: Any,
    path: str,
    errors: list[FieldError],
    *,
    max_chars: int,
    allow_blank: bool = True,
) -> str | None:
    if not isinstance(value, str):
        errors.append(
            FieldError(path, "invalid_type", f"Expected a string, got {_type_name(value)}.")
        )
        return None
    if not allow_blank and not value.strip():
        errors.append(FieldError(path, "blank", "May not be blank."))
        return None
    if len(value) > max_chars:
        errors.append(
            FieldError(path, "too_long", f"At most {max_chars} characters (got {len(value)}).")
        )
        return None
    if "\x00" in value:
        errors.append(FieldError(path, "invalid", "NUL characters are not allowed."))
        return None
    return value


def check_segment(value: Any, path: str, errors: list[FieldError]) -> dict[str, str] | None:
    """A flat object of string keys to string values (at most 20 keys of 64/128 characters)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(
            FieldError(
                path, "invalid_type", f"Expected an object of strings, got {_type_name(value)}."
            )
        )
        return None
    if len(value) > SEGMENT_MAX_KEYS:
        errors.append(
            FieldError(
                path, "too_many_keys", f"At most {SEGMENT_MAX_KEYS} keys (got {len(value)})."
            )
        )
        return None
    before = len(errors)
    for key, item in value.items():
        key_path = f"{path}.{key}"
        if len(key) > SEGMENT_KEY_MAX_CHARS or not SEGMENT_KEY_RE.match(key):
            errors.append(
                FieldError(
                    key_path,
                    "invalid_key",
                    f"Segment keys are 1-{SEGMENT_KEY_MAX_CHARS} characters of letters, digits, "
                    "'_' and '-'.",
                )
            )
            continue
        if not isinstance(item, str):
            errors.append(
                FieldError(
                    key_path, "invalid_type", f"Segment values are strings, got {_type_name(item)}."
                )
            )
        elif len(item) > SEGMENT_VALUE_MAX_CHARS:
            errors.append(
                FieldError(key_path, "too_long", f"At most {SEGMENT_VALUE_MAX_CHARS} characters.")
            )
        elif "\x00" in item:
            errors.append(FieldError(key_path, "invalid", "NUL characters are not allowed."))
    return value if len(errors) == before else None


# Timestamps a client may send (occurred_at): a sane range, not whatever RFC 3339 can spell.
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIMESTAMP = datetime(2100, 1, 1, tzinfo=UTC)


def check_datetime(value: Any, path: str, errors: list[FieldError]) -> datetime | None:
    if not isinstance(value, str):
        errors.append(
            FieldError(
                path, "invalid_type", f"Expected an ISO 8601 string, got {_type_name(value)}."
            )
        )
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None:
        errors.append(
            FieldError(
                path, "invalid", "Expected an ISO 8601 date-time, e.g. 2026-11-20T10:00:00Z."
            )
        )
        return None
    if timezone.is_naive(parsed):
        errors.append(
            FieldError(path, "naive_datetime", "Add a UTC offset or 'Z' to the date-time.")
        )
        return None
    try:
        moment = parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59-14:00 is past year 9999 once in UTC
        moment = None
    if moment is None or not EARLIEST_TIMESTAMP <= moment < LATEST_TIMESTAMP:
        errors.append(
            FieldError(
                path,
                "out_of_range",
                "A date-time from 1970-01-01T00:00:00Z up to (not including) "
                "2100-01-01T00:00:00Z.",
            )
        )
        return None
    return moment


@dataclass(slots=True)
class CleanPrediction:
    external_id: str
    model: str
    model_version: str
    input: Any
    output: Any
    label: str | None
    confidence: float | None
    segment: dict[str, str]
    occurred_at: datetime | None  # None: not sent (defaults to now when created)
    content_hash: str = ""

    def content(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "model_version": self.model_version,
            "input": self.input,
            "output": self.output,
            "label": self.label,
            "confidence": self.confidence,
            "segment": self.segment,
        }


def validate_prediction(data: Any, prefix: str, errors: list[FieldError]) -> CleanPrediction | None:
    before = len(errors)
    if not isinstance(data, dict):
        errors.append(
            FieldError(
                prefix or None, "invalid_type", f"Expected an object, got {_type_name(data)}."
            )
        )
        return None
    check_unknown_fields(data, PREDICTION_FIELDS, prefix, errors)
    external_id = data.get("external_id")
    if external_id is None:
        errors.append(
            FieldError(_join(prefix, "external_id"), "required", "This field is required.")
        )
    else:
        external_id = check_string(
            external_id,
            _join(prefix, "external_id"),
            errors,
            max_chars=EXTERNAL_ID_MAX_CHARS,
            allow_blank=False,
        )
    model = check_string(data.get("model", ""), _join(prefix, "model"), errors, max_chars=200)
    model_version = check_string(
        data.get("model_version", ""), _join(prefix, "model_version"), errors, max_chars=100
    )
    label = data.get("label")
    if label is not None:
        label = check_string(label, _join(prefix, "label"), errors, max_chars=200)
    confidence = data.get("confidence")
    if confidence is not None:
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
            errors.append(
                FieldError(
                    _join(prefix, "confidence"),
                    "invalid_type",
                    f"Expected a number between 0 and 1, got {_type_name(confidence)}.",
                )
            )
        elif not 0 <= confidence <= 1:
            errors.append(
                FieldError(_join(prefix, "confidence"), "out_of_range", "Must be between 0 and 1.")
            )
        else:
            confidence = float(confidence)
    segment = check_segment(data.get("segment"), _join(prefix, "segment"), errors)
    occurred_at = None
    if data.get("occurred_at") is not None:
        occurred_at = check_datetime(data["occurred_at"], _join(prefix, "occurred_at"), errors)
    if len(errors) != before:
        return None
    clean = CleanPrediction(
        external_id=external_id,
        model=model,
        model_version=model_version,
        input=data.get("input"),
        output=data.get("output"),
        label=label,
        confidence=confidence,
        segment=segment,
        occurred_at=occurred_at,
    )
    clean.content_hash = content_hash(clean.content())
    return clean


@dataclass(slots=True)
class CleanFeedback:
    prediction_ref: str | None  # an external_id already logged
    prediction_inline: CleanPrediction | None  # or a prediction logged inline
    kind: str
    rating: int | None
    category_slugs: list[str]  # sorted, distinct: as Feedback.categories stores them
    comment: str
    correction: Any
    end_user: str
    segment: dict[str, str]
    request_hash: str
    idempotency_key: str | None = None

    @property
    def external_id(self) -> str:
        return (
            self.prediction_ref
            if self.prediction_inline is None
            else self.prediction_inline.external_id
        )


def validate_idempotency_key(value: Any, path: str | None, errors: list[FieldError]) -> str | None:
    if value is None:
        return None
    key = check_string(
        value,
        path or "Idempotency-Key",
        errors,
        max_chars=IDEMPOTENCY_KEY_MAX_CHARS,
        allow_blank=False,
    )
    return key


FEEDBACK_KIND_SET = frozenset(FEEDBACK_KINDS)


def validate_feedback(
    data: Any,
    errors: list[FieldError],
    *,
    categories: dict[str, int],
    extra_fields: frozenset[str] = frozenset(),
) -> CleanFeedback | None:
    """Check one feedback item, naming every refusal with a path relative to the item
    (``kind``, ``categories[1]``, ``prediction.external_id``). ``categories`` maps the project's
    active slugs (in taxonomy order, the order an unknown_category error lists them in) to ids.

    Paths are built only for refusals: valid items, the common case of a batch, pay for the
    type and length checks alone. NUL characters, non-finite numbers and nesting depth are the
    JSON parser's to refuse (feedback/api/parsers.py), once for every body."""
    before = len(errors)
    if type(data) is not dict:
        errors.append(
            FieldError(None, "invalid_type", f"Expected an object, got {_type_name(data)}.")
        )
        return None
    allowed = FEEDBACK_FIELDS | extra_fields if extra_fields else FEEDBACK_FIELDS
    for name in data:
        if name not in allowed:
            check_unknown_fields(data, allowed, "", errors)
            break

    prediction = data.get("prediction")
    prediction_ref = None
    prediction_inline = None
    if type(prediction) is str:
        prediction_ref = check_string(
            prediction, "prediction", errors, max_chars=EXTERNAL_ID_MAX_CHARS, allow_blank=False
        )
    elif isinstance(prediction, dict):
        prediction_inline = validate_prediction(prediction, "prediction", errors)
    elif prediction is None:
        errors.append(
            FieldError(
                "prediction",
                "required",
                "The external_id of a logged prediction, or a prediction object.",
            )
        )
    else:
        errors.append(
            FieldError(
                "prediction",
                "invalid_type",
                "Expected an external_id string or a prediction object, "
                f"got {_type_name(prediction)}.",
            )
        )

    kind = data.get("kind")
    if kind is None:
        errors.append(FieldError("kind", "required", "One of rating, report, dispute."))
    elif type(kind) is not str or kind not in FEEDBACK_KIND_SET:
        errors.append(
            FieldError(
                "kind", "invalid_choice", f"{kind!r} is not a kind; valid: rating, report, dispute."
            )
        )

    rating = data.get("rating")
    if rating is not None and (type(rating) is not int or rating not in (1, -1)):
        errors.append(FieldError("rating", "invalid_choice", "Must be 1, -1 or null."))
    elif rating is None and kind == "rating":
        errors.append(FieldError("rating", "required", "A rating needs rating 1 or -1."))

    raw_categories = data.get("categories")
    category_slugs: list[str] = []
    if raw_categories is not None:
        if type(raw_categories) is not list:
            errors.append(
                FieldError(
                    "categories",
                    "invalid_type",
                    f"Expected a list of slugs, got {_type_name(raw_categories)}.",
                )
            )
        elif len(raw_categories) > CATEGORIES_MAX:
            errors.append(
                FieldError("categories", "too_many", f"At most {CATEGORIES_MAX} categories.")
            )
        else:
            known = True
            for position, slug in enumerate(raw_categories):
                if type(slug) is not str or slug not in categories:
                    known = False
                    errors.append(
                        FieldError(
                            f"categories[{position}]",
                            "unknown_category",
                            f"{slug!r} is not an active category of this project; valid: "
                            f"{', '.join(categories) or '(none)'}.",
                        )
                    )
            if known:  # as stored: sorted, distinct
                category_slugs = sorted(set(raw_categories)) if len(raw_categories) > 1 else (
                    raw_categories[:]
                )

    comment = data.get("comment")
    if comment is None:
        comment = ""
    elif type(comment) is not str or len(comment) > COMMENT_MAX_CHARS:
        comment = check_string(comment, "comment", errors, max_chars=COMMENT_MAX_CHARS)

    correction = data.get("correction")
    if isinstance(correction, str):
        if len(correction) > CORRECTION_MAX_CHARS:
            check_string(correction, "correction", errors, max_chars=CORRECTION_MAX_CHARS)
    elif isinstance(correction, (dict, list)):
        if len(canonical_json(correction).encode()) > CORRECTION_MAX_JSON_BYTES:
            errors.append(
                FieldError(
                    "correction",
                    "too_large",
                    f"A JSON correction encodes to at most {CORRECTION_MAX_JSON_BYTES} bytes.",
                )
            )
    elif correction is not None:
        errors.append(
            FieldError(
                "correction",
                "invalid_type",
                f"Expected a string, an object or null, got {_type_name(correction)}.",
            )
        )

    end_user = data.get("end_user")
    if end_user is None:
        end_user = ""
    elif type(end_user) is not str or len(end_user) > END_USER_MAX_CHARS:
        end_user = check_string(end_user, "end_user", errors, max_chars=END_USER_MAX_CHARS)

    segment = data.get("segment")
    segment = {} if segment is None else check_segment(segment, "segment", errors)

    if len(errors) != before:
        return None
    if extra_fields and not extra_fields.isdisjoint(data):
        hashed = {name: value for name, value in data.items() if name not in extra_fields}
    else:
        hashed = data
    return CleanFeedback(
        prediction_ref=prediction_ref,
        prediction_inline=prediction_inline,
        kind=kind,
        rating=rating,
        category_slugs=category_slugs,
        comment=comment,
        correction=correction,
        end_user=end_user,
        segment=segment,
        request_hash=content_hash(hashed),
    )

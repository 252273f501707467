"""An audit request as sent: one declaration for the API (``POST /audits`` and its schema), the
admin's "Run an audit" form and ``manage.py audit`` alike (``audit_request``).

``{"project", "source": {"queue"} | {"export"} | {"goldset", "version", "model_version"},
"segments", "intersectional", "positive_label", "reference", "min_n", "tolerance",
"confidence", "weighted"}``. Every problem is listed at once, each naming its field
(``segments[1]``, ``source.version``, ``reference.locale``), with the codes the API has always
answered (``invalid_type`` for a value of the wrong JSON type, ``out_of_range`` for a number
outside its bounds). What needs the database (the source exists in the project, the positive
label is one of its classes) is ``labeling.services.audits.audit_create``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from feedback.api.inputs import NUL_DETAIL, StrictSerializer, as_field_errors, validated
from feedback.errors import FieldError
from feedback.validation import SEGMENT_KEY_MAX_CHARS, SEGMENT_KEY_RE, SEGMENT_VALUE_MAX_CHARS

DEFAULTS: dict[str, Any] = {
    "intersectional": False,
    "positive_label": None,
    "reference": "overall",
    "min_n": 30,
    "tolerance": 0.05,
    "confidence": 0.95,
    "weighted": True,
}
MAX_SEGMENT_KEYS = 5  # 5 keys and their intersections are 26 grouping sets
LABEL_MAX_CHARS = 200
MODEL_VERSION_MAX_CHARS = 100
_MODEL_VERSION = {"type": "string", "minLength": 1, "maxLength": MODEL_VERSION_MAX_CHARS}


def _source_schema(kind: dict[str, Any], required: list[str], model_version: dict) -> dict:
    return {
        "type": "object",
        "properties": {**kind, "model_version": model_version},
        "required": required,
        "additionalProperties": False,
    }


# Exactly one kind of source, each closed: a mix and unknown fields are refused.
AUDIT_SOURCE_SCHEMA = {
    "oneOf": [
        _source_schema(
            {"queue": {"type": "integer", "minimum": 1, "description": "Its completed items."}},
            ["queue"],
            {**_MODEL_VERSION, "nullable": True, "description": "Optional filter."},
        ),
        _source_schema(
            {"export": {"type": "integer", "minimum": 1, "description": "The export's items."}},
            ["export"],
            {**_MODEL_VERSION, "nullable": True, "description": "Optional filter."},
        ),
        _source_schema(
            {
                "goldset": {"type": "string", "minLength": 1, "description": "A gold set's slug."},
                "version": {"type": "integer", "minimum": 1, "description": "A published one."},
            },
            ["goldset", "version", "model_version"],
            {**_MODEL_VERSION, "description": "Whose predictions are scored."},
        ),
    ],
}


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def source_errors(source: dict[str, Any]) -> list[FieldError]:
    """Why a source object is refused (paths ``source`` and ``source.<name>``)."""
    errors: list[FieldError] = []
    kinds = [kind for kind in ("queue", "export", "goldset") if kind in source]
    if len(kinds) != 1:
        return [
            FieldError(
                "source",
                "invalid",
                'Exactly one of {"queue": id}, {"export": id} or '
                '{"goldset": slug, "version": n, "model_version": "..."}.',
            )
        ]
    kind = kinds[0]
    allowed = (
        {"goldset", "version", "model_version"} if kind == "goldset" else {kind, "model_version"}
    )
    errors += [
        FieldError(f"source.{name}", "unknown_field", f"Valid here: {', '.join(sorted(allowed))}.")
        for name in source
        if name not in allowed
    ]
    if kind == "goldset":
        if not isinstance(source["goldset"], str) or not source["goldset"]:
            errors.append(FieldError("source.goldset", "invalid_type", "A gold set's slug."))
        elif "\x00" in source["goldset"]:
            errors.append(FieldError("source.goldset", "invalid", NUL_DETAIL))
        version = source.get("version")
        if version is None:
            errors.append(FieldError("source.version", "required", "The version number."))
        elif not _is_id(version):
            errors.append(FieldError("source.version", "invalid_type", "A version number (1, 2…)."))
        if "model_version" not in source:
            errors.append(
                FieldError(
                    "source.model_version",
                    "required",
                    "The model version whose predictions are scored against the gold set.",
                )
            )
    elif not _is_id(source[kind]):
        errors.append(FieldError(f"source.{kind}", "invalid_type", f"The {kind}'s id."))
    model_version = source.get("model_version")
    if model_version is not None and (
        not isinstance(model_version, str)
        or not model_version
        or len(model_version) > MODEL_VERSION_MAX_CHARS
    ):
        errors.append(
            FieldError("source.model_version", "invalid_type", "A model version (≤ 100 chars).")
        )
    elif isinstance(model_version, str) and "\x00" in model_version:
        errors.append(FieldError("source.model_version", "invalid", NUL_DETAIL))
    return errors


@extend_schema_field(AUDIT_SOURCE_SCHEMA)
class AuditSourceField(serializers.JSONField):
    """``{"queue": id}``, ``{"export": id}`` or ``{"goldset", "version", "model_version"}``."""

    default_error_messages = {"null": "A queue, an export or a gold set."}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError("An object.", code="invalid_type")
        errors = source_errors(data)
        if errors:
            raise as_field_errors(errors, under="source")
        kind = next(kind for kind in ("queue", "export", "goldset") if kind in data)
        return {"kind": kind, **data}


@extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "string",
            "pattern": SEGMENT_KEY_RE.pattern,
            "maxLength": SEGMENT_KEY_MAX_CHARS,
        },
        "minItems": 1,
        "maxItems": MAX_SEGMENT_KEYS,
        "uniqueItems": True,
    }
)
class SegmentKeysField(serializers.Field):
    """Distinct segment keys, 1 to 5; each refusal names its position (``segments[1]``)."""

    def to_internal_value(self, data: Any) -> list[str]:
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError(
                "A non-empty list of segment keys.", code="invalid_type"
            )
        if len(data) > MAX_SEGMENT_KEYS:
            raise serializers.ValidationError(
                f"At most {MAX_SEGMENT_KEYS} segment keys.", code="too_many"
            )
        errors: list[list[serializers.ErrorDetail]] = []
        for position, key in enumerate(data):
            found: list[serializers.ErrorDetail] = []
            if not isinstance(key, str) or not key:
                found.append(
                    serializers.ErrorDetail("A segment key (a string).", code="invalid_type")
                )
            elif len(key) > SEGMENT_KEY_MAX_CHARS or not SEGMENT_KEY_RE.match(key):
                found.append(
                    serializers.ErrorDetail(
                        f"Segment keys are 1-{SEGMENT_KEY_MAX_CHARS} letters, digits, '_' or '-'.",
                        code="invalid",
                    )
                )
            elif key in data[:position]:
                found.append(serializers.ErrorDetail(f"{key!r} is listed twice.", code="duplicate"))
            errors.append(found)
        if any(errors):
            raise serializers.ValidationError(errors)
        return list(data)

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(
    {"type": "number", "format": "double", "minimum": 0, "maximum": 1, "exclusiveMaximum": True}
)
class ToleranceField(serializers.FloatField):
    """A difference in share: at least 0, under 1."""

    def run_validators(self, value: Any) -> None:
        super().run_validators(value)
        if not math.isfinite(value) or not 0 <= value < 1:
            raise serializers.ValidationError("At least 0 and under 1.", code="out_of_range")


# DRF's codes, as the API answers them for these fields.
CODES = {
    "project": {"blank": "invalid_type"},
    "source": {"null": "required"},
    "positive_label": {"blank": "invalid_type", "max_length": "too_long"},
    **{
        name: {
            "invalid": "invalid_type",
            "null": "invalid_type",
            "min_value": "out_of_range",
            "max_value": "out_of_range",
        }
        for name in ("min_n", "tolerance", "confidence")
    },
}


class AuditCreateSerializer(StrictSerializer):
    """An audit request: the project, the source, the segments to compare and how."""

    project = serializers.SlugField(help_text="The project's slug (an API key's own, too).")
    source = AuditSourceField(help_text="Exactly one of queue, export or goldset.")
    segments = SegmentKeysField(help_text="Distinct segment keys.")
    intersectional = serializers.BooleanField(default=DEFAULTS["intersectional"])
    positive_label = serializers.CharField(
        required=False, allow_null=True, default=None, max_length=LABEL_MAX_CHARS
    )
    reference = serializers.JSONField(
        required=False,
        default=DEFAULTS["reference"],
        help_text='"overall" (every audited row) or a segment, e.g. {"locale": "en-US"}.',
    )
    min_n = serializers.IntegerField(default=DEFAULTS["min_n"], min_value=1, max_value=1_000_000)
    tolerance = ToleranceField(default=DEFAULTS["tolerance"])
    confidence = serializers.FloatField(
        default=DEFAULTS["confidence"], min_value=0.5, max_value=0.999
    )
    weighted = serializers.BooleanField(default=DEFAULTS["weighted"])

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        try:
            return super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if isinstance(exc.detail, dict):
                for name, codes in CODES.items():
                    found = exc.detail.get(name)
                    if isinstance(found, list):
                        exc.detail[name] = [
                            serializers.ErrorDetail(str(e), code=codes.get(e.code, e.code))
                            for e in found
                        ]
            raise

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        reference = attrs["reference"]
        if reference == "overall":
            return attrs
        if not isinstance(reference, dict) or not reference:
            raise serializers.ValidationError(
                {
                    "reference": serializers.ErrorDetail(
                        '"overall", or a segment such as {"locale": "en-US"}.', code="invalid"
                    )
                }
            )
        errors: dict[str, Any] = {}
        for key, value in reference.items():
            if key not in attrs["segments"]:
                errors[key] = serializers.ErrorDetail(
                    "Not one of the audit's segments.", code="unknown_key"
                )
            elif not isinstance(value, str) or not value or len(value) > SEGMENT_VALUE_MAX_CHARS:
                errors[key] = serializers.ErrorDetail("A segment value.", code="invalid_type")
            elif "\x00" in value:
                errors[key] = serializers.ErrorDetail(NUL_DETAIL, code="invalid")
        if errors:
            raise serializers.ValidationError({"reference": errors})
        if len(reference) > 1 and attrs["intersectional"] is not True:
            raise serializers.ValidationError(
                {
                    "reference": serializers.ErrorDetail(
                        "A reference over several keys is an intersection: set intersectional "
                        "to true.",
                        code="needs_intersectional",
                    )
                }
            )
        return attrs


@dataclass(frozen=True)
class AuditRequest:
    """A checked request: the project's slug, the source (with its ``kind``) and the
    parameters stored with the audit (defaults filled in)."""

    project: str
    source: dict[str, Any]
    params: dict[str, Any]


def audit_request(data: Any) -> AuditRequest:
    """An audit request as sent (the API's body, the admin form's, the command's);
    ``InvalidInput`` listing every problem, each naming its field."""
    clean = dict(validated(AuditCreateSerializer, data))
    project, source = clean.pop("project"), clean.pop("source")
    clean["tolerance"], clean["confidence"] = float(clean["tolerance"]), float(clean["confidence"])
    return AuditRequest(project=project, source=source, params=clean)

"""The export request: one declaration, used by the API (and its schema), the admin form and
``manage.py export`` alike (``export_request``). What needs the database (the queue belongs to
the project) is the service's (``export_create``).

``{"queue", "format", "filter": {"model_version", "completed_after", "completed_before",
"segment"}, "include_labels", "include": ["labels", "comments"], "segment_columns",
"split": {"by": "hash", "train", "validation", "test", "key", "seed"} |
{"by": "time", "validation_from", "test_from"}, "exclude_gold_from_train"}``;
``project`` names the project (an API key's own by default).
Unknown fields, values of the wrong JSON type and NUL characters are refused naming the field
(``filter.segment.locale``, ``split.seed``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from feedback.api.inputs import StrictSerializer, validated

from ..models import Export
from ..splits import SEGMENT_PREFIX, SPLITS

FORMATS = tuple(Export.Format.values)
SEGMENT_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_SPLIT = {
    "by": "hash",
    "train": 0.8,
    "validation": 0.1,
    "test": 0.1,
    "key": "external_id",
    "seed": 0,
}


@dataclass(frozen=True)
class ExportRequest:
    """A checked request: what ``export_create`` records (``spec`` is stored as JSON)."""

    queue_id: int | None
    format: str
    spec: dict[str, Any]


@extend_schema_field({"type": "string", "format": "date-time", "nullable": True})
class UtcDateTimeField(serializers.Field):
    """An ISO 8601 date-time, kept as ISO text in UTC (naive: UTC); refused when UTC cannot hold
    it (9999-12-31T23:59-14:00 is past year 9999 once in UTC)."""

    default_error_messages = {
        "invalid_datetime": "An ISO 8601 date-time.",
        "out_of_range": "The date-time is out of range in UTC.",
    }

    def to_internal_value(self, data: Any) -> str:
        try:
            parsed = parse_datetime(data) if isinstance(data, str) else None
        except ValueError:  # well-formed but impossible, e.g. February 30th
            parsed = None
        if parsed is None:
            self.fail("invalid_datetime")
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed, dt.UTC)
        try:
            return parsed.astimezone(dt.UTC).isoformat()
        except OverflowError:
            self.fail("out_of_range")

    def to_representation(self, value: Any) -> Any:
        return value


class ExportFilterSerializer(StrictSerializer):
    model_version = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=100
    )
    completed_after = UtcDateTimeField(required=False, allow_null=True)
    completed_before = UtcDateTimeField(required=False, allow_null=True)
    segment = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=128),
        required=False,
        allow_null=True,
        help_text="Segment values to match: keys of letters, digits, '_' and '-' (≤ 64).",
    )

    def validate_segment(self, value: dict[str, str] | None) -> dict[str, str] | None:
        bad = {
            key: [
                serializers.ErrorDetail(
                    "Letters, digits, '_' and '-', at most 64 characters.", code="invalid_key"
                )
            ]
            for key in value or {}
            if not SEGMENT_KEY.match(key)
        }
        if bad:
            raise serializers.ValidationError(bad)
        return value


class ExportSplitSerializer(StrictSerializer):
    by = serializers.ChoiceField(
        choices=[("hash", "hash"), ("time", "time")],
        required=False,
        help_text="'hash' (default): shares by a hash of (seed, key). 'time': by the "
        "prediction's occurred_at, train before validation_from, validation before test_from, "
        "test after (no look-ahead).",
    )
    train = serializers.FloatField(
        required=False, min_value=0, max_value=1, help_text="Hash split; default 0.8."
    )
    validation = serializers.FloatField(
        required=False, min_value=0, max_value=1, help_text="Hash split; default 0.1."
    )
    test = serializers.FloatField(
        required=False, min_value=0, max_value=1, help_text="Hash split; default 0.1."
    )
    key = serializers.CharField(
        required=False,
        help_text="Hash split: 'external_id' (default) or 'segment.<key>'.",
    )
    seed = serializers.IntegerField(
        required=False, min_value=0, max_value=2**63 - 1, help_text="Hash split; default 0."
    )
    validation_from = UtcDateTimeField(
        required=False, help_text="Time split: the first occurred_at in validation."
    )
    test_from = UtcDateTimeField(
        required=False, help_text="Time split: the first occurred_at in test (≥ validation_from)."
    )

    def validate_key(self, key: str) -> str:
        if key == "external_id" or (
            key.startswith(SEGMENT_PREFIX) and SEGMENT_KEY.match(key[len(SEGMENT_PREFIX) :])
        ):
            return key
        raise serializers.ValidationError(
            "'external_id' or 'segment.<key>'.", code="invalid_choice"
        )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("by") == "time":
            errors = {
                name: [
                    serializers.ErrorDetail(
                        'Only for a hash split ("by": "hash").', code="not_for_time_split"
                    )
                ]
                for name in (*SPLITS, "key", "seed")
                if name in attrs
            }
            for name in ("validation_from", "test_from"):
                if attrs.get(name) is None:
                    errors[name] = [
                        serializers.ErrorDetail(
                            "Required by a time split (an ISO 8601 date-time).", code="required"
                        )
                    ]
            if not errors and parse_datetime(attrs["test_from"]) < parse_datetime(
                attrs["validation_from"]
            ):
                errors["test_from"] = [
                    serializers.ErrorDetail(
                        "Must not come before validation_from.", code="before_validation_from"
                    )
                ]
            if errors:
                raise serializers.ValidationError(errors)
            return attrs
        errors = {
            name: [
                serializers.ErrorDetail(
                    'Only for a time split ("by": "time").', code="not_for_hash_split"
                )
            ]
            for name in ("validation_from", "test_from")
            if name in attrs
        }
        if errors:
            raise serializers.ValidationError(errors)
        shares = {**{name: DEFAULT_SPLIT[name] for name in SPLITS}, **attrs}
        if abs(sum(shares[name] for name in SPLITS) - 1.0) > 1e-9:
            raise serializers.ValidationError(
                "train + validation + test must be 1 (missing shares default to 0.8/0.1/0.1).",
                code="invalid_sum",
            )
        return attrs


INCLUDES = ("labels", "comments")


class ExportRequestSerializer(StrictSerializer):
    project = serializers.SlugField(
        required=False,
        allow_null=True,
        help_text="Optional (or null) with an API key: its own project.",
    )
    queue = serializers.IntegerField(required=False, allow_null=True)
    format = serializers.ChoiceField(Export.Format.choices)
    filter = ExportFilterSerializer(required=False, allow_null=True, help_text="null: no filter.")
    include_labels = serializers.BooleanField(
        required=False, default=False, help_text='The same as "include": ["labels"].'
    )
    include = serializers.ListField(
        child=serializers.ChoiceField(choices=[(name, name) for name in INCLUDES]),
        required=False,
        allow_empty=True,
        max_length=len(INCLUDES),
        help_text="Optional columns: 'labels' (every label of the item), 'comments' (the end "
        "users' feedback comments on the prediction, scrubbed at intake).",
    )
    segment_columns = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        allow_null=True,
        max_length=64,
        help_text="Segment keys to give a column each ('segment.<key>'); null or absent: every "
        "key of the project's predictions.",
    )
    split = ExportSplitSerializer(
        required=False, allow_null=True, help_text="null: the default 0.8/0.1/0.1 by external_id."
    )

    def validate_segment_columns(self, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        bad = [key for key in value if not SEGMENT_KEY.match(key)]
        if bad:
            raise serializers.ValidationError(
                f"Letters, digits, '_' and '-', at most 64 characters (not {bad[0]!r}).",
                code="invalid_key",
            )
        return sorted(set(value))

    exclude_gold_from_train = serializers.BooleanField(required=False, default=True)


def export_request(data: Any) -> ExportRequest:
    """Check an export request (the body of ``POST /exports``, the admin form's, the command's);
    refused with ``InvalidInput`` naming each field."""
    clean = validated(ExportRequestSerializer, data)
    raw_filter = clean.get("filter") or {}
    spec_filter = {
        name: raw_filter[name]
        for name in ("model_version", "completed_after", "completed_before")
        if raw_filter.get(name) is not None
    }
    if raw_filter.get("segment"):
        spec_filter["segment"] = dict(sorted(raw_filter["segment"].items()))
    asked = clean.get("split") or {}
    if asked.get("by") == "time":
        split = {
            "by": "time",
            "validation_from": asked["validation_from"],
            "test_from": asked["test_from"],
        }
    else:
        split = {**DEFAULT_SPLIT, **asked}
        split.update({name: float(split[name]) for name in SPLITS})
    include = set(clean.get("include") or ())
    spec: dict[str, Any] = {
        "filter": spec_filter,
        "include_labels": clean["include_labels"] or "labels" in include,
        "include_comments": "comments" in include,
        "split": split,
        "exclude_gold_from_train": clean["exclude_gold_from_train"],
    }
    if clean.get("segment_columns") is not None:
        spec["segment_columns"] = clean["segment_columns"]
    return ExportRequest(queue_id=clean.get("queue"), format=clean["format"], spec=spec)

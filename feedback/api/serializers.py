"""Output serializers, and input serializers that document what ``feedback/validation.py``
accepts (the validator, not these, checks requests: it is the hot path).

Output serializers mark every field read-only: a response always carries all of them, so the
OpenAPI schema lists them all as required (nullable where they may be null).
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..models import Feedback, FeedbackCategory, Prediction
from ..validation import (
    BATCH_MAX_ITEMS,
    CATEGORIES_MAX,
    COMMENT_MAX_CHARS,
    CORRECTION_MAX_CHARS,
    CORRECTION_MAX_JSON_BYTES,
    END_USER_MAX_CHARS,
    EXTERNAL_ID_MAX_CHARS,
    IDEMPOTENCY_KEY_MAX_CHARS,
    SEGMENT_KEY_MAX_CHARS,
    SEGMENT_MAX_KEYS,
    SEGMENT_VALUE_MAX_CHARS,
)

# Named choice sets (see ENUM_NAME_OVERRIDES in settings): one enum component each.
RATING_CHOICES = [(1, "1"), (-1, "-1")]
BATCH_ITEM_STATUS_CHOICES = [
    (201, "201: created"),
    (200, "200: replay of stored content"),
    (400, "400: invalid, see errors"),
    (409, "409: conflict with stored content, see errors"),
]

SEGMENT_SCHEMA = {
    "type": "object",
    "additionalProperties": {"type": "string", "maxLength": SEGMENT_VALUE_MAX_CHARS},
    "maxProperties": SEGMENT_MAX_KEYS,
    "description": "Flat string attributes of the end user or context (locale, device, "
    f"age_band…): at most {SEGMENT_MAX_KEYS} keys of 1-{SEGMENT_KEY_MAX_CHARS} letters, digits, "
    f"'_' and '-' (not starting with '-'), each mapped to a string of at most "
    f"{SEGMENT_VALUE_MAX_CHARS} characters.",
    "example": {"locale": "de-DE", "device": "ios"},
}
ANY_JSON = {"description": "Any JSON value."}
# A feedback's segment: its prediction's, updated with its own (up to twice as many keys).
MERGED_SEGMENT_SCHEMA = {
    "type": "object",
    "additionalProperties": {"type": "string", "maxLength": SEGMENT_VALUE_MAX_CHARS},
    "description": "The prediction's segment updated with the feedback's own.",
    "example": {"locale": "de-DE", "device": "ios", "age_band": "65+"},
}


@extend_schema_field(SEGMENT_SCHEMA)
class SegmentField(serializers.JSONField):
    pass


@extend_schema_field(MERGED_SEGMENT_SCHEMA)
class MergedSegmentField(serializers.JSONField):
    pass


@extend_schema_field(ANY_JSON)
class AnyJSONField(serializers.JSONField):
    pass


CORRECTION_BRANCHES = [
    {"type": "string"},
    {"type": "object", "additionalProperties": {}},
    {"type": "array", "items": {}},
]


@extend_schema_field({"oneOf": CORRECTION_BRANCHES, "nullable": True})
class CorrectionField(serializers.JSONField):
    """What the output should have been: a string, or JSON (an object or an array), or null."""


# ``feedback/validation.py`` accepts an array too, though API.md names a string or an object.
@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "maxLength": CORRECTION_MAX_CHARS},
            *CORRECTION_BRANCHES[1:],
        ],
        "nullable": True,
        "example": "The refund window is 30 days.",
    }
)
class FeedbackCorrectionField(CorrectionField):
    """A correction sent with feedback: limited in size, and PII-scrubbed when stored."""


FEEDBACK_CORRECTION_HELP = (
    "What the output should have been: a string of at most "
    f"{CORRECTION_MAX_CHARS} characters, or JSON (an object or an array) encoding to at most "
    f"{CORRECTION_MAX_JSON_BYTES // 1024} KiB. PII is scrubbed from its strings."
)


class ErrorItemSerializer(serializers.Serializer):
    field = serializers.CharField(
        allow_null=True, help_text="Path of the offending field (`items[3].kind`), or null."
    )
    code = serializers.CharField(help_text="Machine-readable: `required`, `too_long`, …")
    detail = serializers.CharField(help_text="A human sentence.")


class ErrorSerializer(serializers.Serializer):
    errors = ErrorItemSerializer(many=True)


# --- predictions -----------------------------------------------------------------------------


class PredictionInSerializer(serializers.Serializer):
    external_id = serializers.CharField(
        max_length=EXTERNAL_ID_MAX_CHARS,
        help_text="The app's id of the output; unique per project.",
    )
    model = serializers.CharField(max_length=200, required=False, allow_blank=True)
    model_version = serializers.CharField(max_length=100, required=False, allow_blank=True)
    input = AnyJSONField(required=False, allow_null=True)
    output = AnyJSONField(required=False, allow_null=True)
    label = serializers.CharField(max_length=200, required=False, allow_null=True, allow_blank=True)
    confidence = serializers.FloatField(min_value=0, max_value=1, required=False, allow_null=True)
    segment = SegmentField(required=False, allow_null=True)
    occurred_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="ISO 8601 with an offset; default: now."
    )


class PredictionBatchInSerializer(serializers.Serializer):
    items = serializers.ListField(
        child=PredictionInSerializer(), min_length=1, max_length=BATCH_MAX_ITEMS,
        help_text="Each item is judged on its own: invalid ones are reported by index.",
    )


class PredictionSerializer(serializers.ModelSerializer):
    input = AnyJSONField(read_only=True)
    output = AnyJSONField(read_only=True)
    segment = SegmentField(read_only=True)

    class Meta:
        model = Prediction
        fields = [
            "id", "external_id", "model", "model_version", "input", "output", "label",
            "confidence", "segment", "occurred_at", "created_at",
        ]
        read_only_fields = fields


class BatchResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the item in `items`.")
    status = serializers.ChoiceField(choices=BATCH_ITEM_STATUS_CHOICES)
    id = serializers.IntegerField(allow_null=True, help_text="The stored object's id (201, 200).")
    errors = ErrorItemSerializer(many=True, help_text="Why the item was refused (400, 409).")


class PredictionBatchResultSerializer(BatchResultSerializer):
    external_id = serializers.CharField(allow_null=True)


class PredictionBatchOutSerializer(serializers.Serializer):
    results = PredictionBatchResultSerializer(many=True)


# --- feedback --------------------------------------------------------------------------------


@extend_schema_field(
    {
        "oneOf": [
            {
                "type": "string",
                "minLength": 1,
                "maxLength": EXTERNAL_ID_MAX_CHARS,
                "description": "The external_id of a prediction already logged.",
            },
            {"$ref": "#/components/schemas/PredictionInRequest"},
        ],
        "example": "chat-8812",
    }
)
class PredictionRefField(serializers.JSONField):
    pass


class FeedbackInSerializer(serializers.Serializer):
    prediction = PredictionRefField(
        help_text="An external_id already logged, or a prediction object (logged if new)."
    )
    kind = serializers.ChoiceField(choices=Feedback.Kind.choices)
    rating = serializers.ChoiceField(
        choices=RATING_CHOICES, required=False, allow_null=True,
        help_text="Required for kind=rating.",
    )
    categories = serializers.ListField(
        child=serializers.SlugField(max_length=64), required=False, allow_null=True,
        max_length=CATEGORIES_MAX,
        help_text="Slugs of the project's active taxonomy (GET /api/v1/categories).",
    )
    comment = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=COMMENT_MAX_CHARS,
        help_text="Free text; PII is scrubbed before it is stored.",
    )
    correction = FeedbackCorrectionField(required=False, help_text=FEEDBACK_CORRECTION_HELP)
    end_user = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=END_USER_MAX_CHARS,
        help_text="The app's opaque user id; stored only as an HMAC.",
    )
    segment = SegmentField(required=False, allow_null=True)


class FeedbackBatchItemSerializer(FeedbackInSerializer):
    idempotency_key = serializers.CharField(
        required=False, allow_null=True, max_length=IDEMPOTENCY_KEY_MAX_CHARS,
        help_text="Like the Idempotency-Key header of POST /api/v1/feedback, per item.",
    )


class FeedbackBatchInSerializer(serializers.Serializer):
    items = serializers.ListField(
        child=FeedbackBatchItemSerializer(), min_length=1, max_length=BATCH_MAX_ITEMS,
        help_text="Each item is judged on its own: invalid ones are reported by index.",
    )


class FeedbackBatchOutSerializer(serializers.Serializer):
    results = BatchResultSerializer(many=True)


class FeedbackSerializer(serializers.ModelSerializer):
    prediction = serializers.SerializerMethodField(help_text="The prediction's external_id.")
    rating = serializers.ChoiceField(choices=RATING_CHOICES, allow_null=True, read_only=True)
    categories = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text="Category slugs, sorted."
    )
    # No length limit here: scrubbing may lengthen a string ("a@b.io" becomes "[EMAIL]").
    correction = CorrectionField(read_only=True, help_text=FEEDBACK_CORRECTION_HELP)
    segment = MergedSegmentField(read_only=True)
    status = serializers.ChoiceField(
        choices=Feedback.DisputeStatus.choices, allow_null=True, read_only=True,
        help_text="Disputes only (open, in_review, upheld, rejected); null otherwise.",
    )

    class Meta:
        model = Feedback
        fields = [
            "id", "prediction", "kind", "rating", "status", "categories", "comment",
            "correction", "segment", "idempotency_key", "resolution_note", "resolved_at",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_prediction(self, obj: Feedback) -> str:
        return prediction_external_id(obj)


def prediction_external_id(obj: Feedback) -> str:
    external_id = getattr(obj, "prediction_external_id", None)  # set by intake: no query
    if external_id is not None:
        return external_id
    return obj.prediction.external_id


class CategorySerializer(serializers.ModelSerializer):
    class Meta:
        model = FeedbackCategory
        fields = ["slug", "name", "description"]
        read_only_fields = fields


class DisputeSerializer(serializers.ModelSerializer):
    status = serializers.ChoiceField(choices=Feedback.DisputeStatus.choices, read_only=True)

    class Meta:
        model = Feedback
        fields = ["id", "status", "resolution_note", "resolved_at"]
        read_only_fields = fields

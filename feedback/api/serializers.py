"""Output serializers, and input serializers that document what ``feedback/validation.py``
accepts (the validator, not these, checks requests: it is the hot path)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..models import Feedback, FeedbackCategory, Prediction
from ..validation import (
    BATCH_MAX_ITEMS,
    CATEGORIES_MAX,
    COMMENT_MAX_CHARS,
    END_USER_MAX_CHARS,
    EXTERNAL_ID_MAX_CHARS,
    IDEMPOTENCY_KEY_MAX_CHARS,
    SEGMENT_MAX_KEYS,
    SEGMENT_VALUE_MAX_CHARS,
)

SEGMENT_SCHEMA = {
    "type": "object",
    "additionalProperties": {"type": "string", "maxLength": SEGMENT_VALUE_MAX_CHARS},
    "maxProperties": SEGMENT_MAX_KEYS,
    "description": "Flat string attributes of the end user or context (locale, device, age_band…).",
    "example": {"locale": "de-DE", "device": "ios"},
}
ANY_JSON = {"description": "Any JSON value."}


@extend_schema_field(SEGMENT_SCHEMA)
class SegmentField(serializers.JSONField):
    pass


@extend_schema_field(ANY_JSON)
class AnyJSONField(serializers.JSONField):
    pass


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "object"}], "nullable": True})
class CorrectionField(serializers.JSONField):
    pass


class ErrorItemSerializer(serializers.Serializer):
    field = serializers.CharField(allow_null=True)
    code = serializers.CharField()
    detail = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    errors = ErrorItemSerializer(many=True)


# --- predictions -----------------------------------------------------------------------------


class PredictionInSerializer(serializers.Serializer):
    external_id = serializers.CharField(max_length=EXTERNAL_ID_MAX_CHARS)
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
    items = PredictionInSerializer(many=True, max_length=BATCH_MAX_ITEMS, min_length=1)


class PredictionSerializer(serializers.ModelSerializer):
    input = AnyJSONField()
    output = AnyJSONField()
    segment = SegmentField()

    class Meta:
        model = Prediction
        fields = [
            "id", "external_id", "model", "model_version", "input", "output", "label",
            "confidence", "segment", "occurred_at", "created_at",
        ]


class BatchResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=[200, 201, 400, 409])
    id = serializers.IntegerField(allow_null=True)
    errors = ErrorItemSerializer(many=True)


class PredictionBatchResultSerializer(BatchResultSerializer):
    external_id = serializers.CharField(allow_null=True)


class PredictionBatchOutSerializer(serializers.Serializer):
    results = PredictionBatchResultSerializer(many=True)


# --- feedback --------------------------------------------------------------------------------


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "maxLength": EXTERNAL_ID_MAX_CHARS,
             "description": "The external_id of a prediction already logged."},
            {"$ref": "#/components/schemas/PredictionInRequest"},
        ]
    }
)
class PredictionRefField(serializers.JSONField):
    pass


class FeedbackInSerializer(serializers.Serializer):
    prediction = PredictionRefField()
    kind = serializers.ChoiceField(choices=Feedback.Kind.choices)
    rating = serializers.ChoiceField(
        choices=[1, -1], required=False, allow_null=True, help_text="Required for kind=rating."
    )
    categories = serializers.ListField(
        child=serializers.CharField(), required=False, max_length=CATEGORIES_MAX,
        help_text="Slugs of the project's active taxonomy (GET /api/v1/categories).",
    )
    comment = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=COMMENT_MAX_CHARS
    )
    correction = CorrectionField(required=False)
    end_user = serializers.CharField(
        required=False, allow_null=True, allow_blank=True, max_length=END_USER_MAX_CHARS,
        help_text="The app's opaque user id; stored only as an HMAC.",
    )
    segment = SegmentField(required=False, allow_null=True)


class FeedbackBatchItemSerializer(FeedbackInSerializer):
    idempotency_key = serializers.CharField(
        required=False, allow_null=True, max_length=IDEMPOTENCY_KEY_MAX_CHARS
    )


class FeedbackBatchInSerializer(serializers.Serializer):
    items = FeedbackBatchItemSerializer(many=True, max_length=BATCH_MAX_ITEMS, min_length=1)


class FeedbackBatchOutSerializer(serializers.Serializer):
    results = BatchResultSerializer(many=True)


class FeedbackSerializer(serializers.ModelSerializer):
    prediction = serializers.SerializerMethodField()
    categories = serializers.SerializerMethodField()
    correction = CorrectionField()
    segment = SegmentField()
    status = serializers.ChoiceField(
        choices=Feedback.DisputeStatus.choices, allow_null=True,
        help_text="Disputes only: open, in_review, upheld, rejected.",
    )

    class Meta:
        model = Feedback
        fields = [
            "id", "prediction", "kind", "rating", "status", "categories", "comment",
            "correction", "segment", "idempotency_key", "resolution_note", "resolved_at",
            "created_at",
        ]

    @extend_schema_field(OpenApiTypes.STR)
    def get_prediction(self, obj: Feedback) -> str:
        return obj.prediction.external_id

    @extend_schema_field({"type": "array", "items": {"type": "string"}})
    def get_categories(self, obj: Feedback) -> list[str]:
        slugs = getattr(obj, "category_slugs", None)
        if slugs is not None:
            return slugs
        return [category.slug for category in obj.categories.all()]


class CategorySerializer(serializers.ModelSerializer):
    class Meta:
        model = FeedbackCategory
        fields = ["slug", "name", "description"]


class DisputeSerializer(serializers.ModelSerializer):
    status = serializers.ChoiceField(choices=Feedback.DisputeStatus.choices)

    class Meta:
        model = Feedback
        fields = ["id", "status", "resolution_note", "resolved_at"]

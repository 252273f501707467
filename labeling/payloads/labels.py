"""A reviewer's label as sent: one declaration for the API (``POST /items/{id}/labels`` and its
schema), the admin workspace's form and ``seed_demo`` alike (``label_input``).

What depends on the item stays with ``labeling.services.labels``: the project's active
categories, the queue's label choices (required, allowed), a verdict that contradicts the true
label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rest_framework import serializers

from feedback.api.inputs import NUL_DETAIL, StrictSerializer, validated
from feedback.api.serializers import CorrectionField
from feedback.validation import CORRECTION_MAX_CHARS, canonical_json, has_nul

from ..models import Label

NOTES_MAX_CHARS = 5000
SECONDS_MAX = 86400
CONFIRM_FIELD = "confirm_contradiction"


class SecondsField(serializers.FloatField):
    """Seconds from 0 to a day (the bounds are in the schema); a value outside is ``invalid``,
    the code the API has always answered."""

    def run_validators(self, value: Any) -> None:
        try:
            super().run_validators(value)
        except serializers.ValidationError:
            raise serializers.ValidationError(
                "Seconds, between 0 and 86,400.", code="invalid"
            ) from None


class LabelInSerializer(StrictSerializer):
    verdict = serializers.ChoiceField(
        Label.Verdict.choices,
        error_messages={
            name: "One of correct, incorrect, unsure."
            for name in ("invalid_choice", "required", "null")
        },
    )
    categories = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        allow_null=True,
        help_text="Slugs of the project's active categories.",
    )
    true_label = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        help_text="One of the queue's label choices (required by a queue that has them, for a "
        "correct or incorrect verdict).",
    )
    correction = CorrectionField(required=False, allow_null=True)
    notes = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=NOTES_MAX_CHARS,
        trim_whitespace=False,
    )
    seconds_spent = SecondsField(
        required=False, allow_null=True, min_value=0, max_value=SECONDS_MAX
    )
    confirm_contradiction = serializers.BooleanField(
        required=False,
        default=False,
        help_text="A verdict that contradicts the true label (`correct` with a label other than "
        "the predicted one, `incorrect` with the predicted label) is refused: 400 naming "
        "`true_label` with code `contradicts_verdict`. Send `true` to store it anyway. Not "
        "stored with the label.",
    )

    def validate_correction(self, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str | dict | list):
            raise serializers.ValidationError("A string, an object or null.", code="invalid_type")
        text = canonical_json(value)
        if len(text) > CORRECTION_MAX_CHARS * 4:
            raise serializers.ValidationError("The correction is too long.", code="too_long")
        if has_nul(text):
            raise serializers.ValidationError(NUL_DETAIL, code="invalid")  # PostgreSQL refuses
        return value


@dataclass(frozen=True)
class LabelInput:
    """A checked label (``label_input``); the item-bound rules are the service's."""

    verdict: str
    categories: tuple[str, ...] = ()
    true_label: str = ""
    correction: Any = None
    notes: str = ""
    seconds_spent: float | None = None
    confirm_contradiction: bool = False


def label_input(data: Any) -> LabelInput:
    """A label as sent (the API's body, the workspace form's, the demo's); ``InvalidInput``
    naming each field otherwise."""
    clean = validated(LabelInSerializer, data)
    seconds = clean.get("seconds_spent")
    return LabelInput(
        verdict=clean["verdict"],
        categories=tuple(clean.get("categories") or ()),
        true_label=clean.get("true_label") or "",
        correction=clean.get("correction"),
        notes=clean.get("notes") or "",
        seconds_spent=float(seconds) if seconds is not None else None,
        confirm_contradiction=clean[CONFIRM_FIELD],
    )

"""Gold sets and gold items as sent: one declaration each, for the API (and its schema), the
admin forms and ``seed_demo`` alike.

- ``GoldSetInSerializer`` / ``gold_set_input``: ``{"slug", "name", "description", "project"}``
  (``project``: the API's way of naming it; the admin picks it in the form).
- ``GoldItemInSerializer`` / ``gold_item_input``: ``{"key", "input", "output", "expected":
  {"verdict", "label", "categories"}, "segment"}``; ``partial`` for a change (the fields sent).

What needs the database stays with ``labeling.services.goldsets``: categories of the project's
taxonomy, a key taken, a published version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rest_framework import serializers

from feedback.api.inputs import NUL_DETAIL, StrictSerializer, as_field_errors, validated
from feedback.api.serializers import AnyJSONField, SegmentField
from feedback.errors import FieldError
from feedback.validation import CATEGORIES_MAX, canonical_json, check_segment, has_nul

from ..models import Label

SLUG_PATTERN = r"^[-a-zA-Z0-9_]+$"
SLUG_MAX_CHARS = 100
NAME_MAX_CHARS = 200
TEXT_MAX_CHARS = 5000
KEY_MAX_CHARS = 255
LABEL_MAX_CHARS = 200
# Model fields of an item's content, in the order an item is shown.
ITEM_MODEL_FIELDS = (
    "key",
    "input",
    "output",
    "segment",
    "expected_verdict",
    "expected_label",
    "expected_categories",
)


class GoldSetInSerializer(StrictSerializer):
    slug = serializers.RegexField(
        SLUG_PATTERN,
        max_length=SLUG_MAX_CHARS,
        error_messages={"invalid": f"1-{SLUG_MAX_CHARS} letters, digits, '-' and '_'."},
    )
    name = serializers.CharField(max_length=NAME_MAX_CHARS, required=False, allow_blank=True)
    description = serializers.CharField(max_length=TEXT_MAX_CHARS, required=False, allow_blank=True)
    project = serializers.CharField(
        required=False,
        help_text="The project's slug: needed by a person in several projects (an API key "
        "creates in its own).",
    )


@dataclass(frozen=True)
class GoldSetInput:
    slug: str
    name: str = ""
    description: str = ""
    project: str | None = None


def gold_set_input(data: Any) -> GoldSetInput:
    """A gold set as sent (the API's body, the admin form's); ``InvalidInput`` naming each
    field otherwise."""
    clean = validated(GoldSetInSerializer, data)
    return GoldSetInput(
        slug=clean["slug"],
        name=clean.get("name", ""),
        description=clean.get("description", ""),
        project=clean.get("project"),
    )


class VersionNotesSerializer(StrictSerializer):
    notes = serializers.CharField(required=False, allow_blank=True, max_length=TEXT_MAX_CHARS)


def version_notes(data: Any) -> str:
    """The optional ``{"notes": "..."}`` body of version creation and publication."""
    return validated(VersionNotesSerializer, data).get("notes", "")


class ExpectedSerializer(StrictSerializer):
    verdict = serializers.ChoiceField(
        Label.Verdict.choices,
        allow_null=True,
        allow_blank=True,
        required=False,
        error_messages={"invalid_choice": "One of correct, incorrect, unsure."},
    )
    label = serializers.CharField(
        allow_null=True,
        allow_blank=True,
        required=False,
        max_length=LABEL_MAX_CHARS,
        trim_whitespace=False,
    )
    categories = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        allow_null=True,
        max_length=CATEGORIES_MAX,
        help_text="Category slugs of the project's taxonomy (retired ones included).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("verdict") and not attrs.get("label"):
            raise serializers.ValidationError(
                "A gold item expects a verdict, a label, or both.", code="required"
            )
        return attrs


def _json_without_nul(value: Any) -> Any:
    if has_nul(canonical_json(value)):
        raise serializers.ValidationError(NUL_DETAIL, code="invalid")  # PostgreSQL refuses it
    return value


class GoldItemInSerializer(StrictSerializer):
    key = serializers.CharField(max_length=KEY_MAX_CHARS, trim_whitespace=False)
    input = AnyJSONField(required=False, allow_null=True)
    output = AnyJSONField(required=False, allow_null=True)
    expected = ExpectedSerializer(
        help_text='What the item expects: {"verdict", "label", "categories"}; a change replaces '
        "it as a whole."
    )
    segment = SegmentField(required=False, allow_null=True)

    def validate_key(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("May not be blank.", code="blank")
        return value

    def validate_input(self, value: Any) -> Any:
        return _json_without_nul(value)

    def validate_output(self, value: Any) -> Any:
        return _json_without_nul(value)

    def validate_segment(self, value: Any) -> dict[str, str]:
        errors: list[FieldError] = []
        segment = check_segment(value, "segment", errors)
        if errors:
            raise as_field_errors(errors, under="segment")
        return segment or {}


class GoldItemPatchSerializer(GoldItemInSerializer):
    """A change of an item: the fields sent replace the stored ones (``key`` renames it)."""

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for declared in fields.values():
            declared.required = False
        fields["key"].help_text = "Renames the item."
        return fields


@dataclass(frozen=True)
class GoldItemInput:
    """A checked item, as model field values. ``given``: the fields sent (a change sets only
    those); an item added has them all."""

    key: str = ""
    input: Any = None
    output: Any = None
    segment: dict[str, str] = field(default_factory=dict)
    expected_verdict: str = ""
    expected_label: str = ""
    expected_categories: tuple[str, ...] = ()
    given: frozenset[str] = frozenset(ITEM_MODEL_FIELDS)

    def values(self) -> dict[str, Any]:
        """The model field values to store (categories sorted and distinct: the canonical
        content never depends on the order given)."""
        values = {name: getattr(self, name) for name in ITEM_MODEL_FIELDS if name in self.given}
        if "expected_categories" in values:
            values["expected_categories"] = sorted(set(values["expected_categories"]))
        return values


def gold_item_input(data: Any, *, partial: bool = False) -> GoldItemInput:
    """An item as sent (the API's body, the admin inline's, the demo's); ``partial``: a change,
    where only the fields sent are checked and set. ``InvalidInput`` naming each field."""
    declaration = GoldItemPatchSerializer if partial else GoldItemInSerializer
    clean = validated(declaration, data, partial=partial)
    values: dict[str, Any] = {}
    for name in ("key", "input", "output", "segment"):
        if name in clean:
            values[name] = clean[name]
        elif not partial:
            values[name] = {} if name == "segment" else None
    if "segment" in values and values["segment"] is None:
        values["segment"] = {}
    if "expected" in clean:
        expected = clean["expected"]
        values["expected_verdict"] = expected.get("verdict") or ""
        values["expected_label"] = expected.get("label") or ""
        values["expected_categories"] = tuple(expected.get("categories") or ())
    return GoldItemInput(**values, given=frozenset(values))

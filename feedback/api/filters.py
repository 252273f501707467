"""Query filters. Unknown parameters are refused (400), never silently ignored."""

from __future__ import annotations

from datetime import UTC

from django import forms
from django.db.models.fields.json import KeyTransform
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from drf_spectacular.utils import extend_schema_field

from ..errors import FieldError, InvalidInput
from ..models import Feedback
from ..selectors import with_any_category
from ..validation import SEGMENT_KEY_MAX_CHARS, SEGMENT_KEY_RE
from .inputs import query_params

SEGMENT_PREFIX = "segment."
PAGINATION_PARAMS = frozenset({"cursor", "page_size"})


class RepeatableCharField(forms.Field):
    widget = forms.SelectMultiple  # reads every value of a repeated parameter

    def to_python(self, value):
        if not value:
            return []
        return [str(item) for item in value]


@extend_schema_field({"type": "array", "items": {"type": "string"}})
class RepeatableCharFilter(filters.Filter):
    field_class = RepeatableCharField


class UtcDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, converted to UTC; refused (400) when UTC cannot hold it."""

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except OverflowError:
            raise forms.ValidationError("Out of range in UTC.", code="out_of_range") from None


class UtcDateTimeFilter(filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class FeedbackFilterSet(filters.FilterSet):
    project = filters.CharFilter(field_name="project__slug", help_text="A project's slug.")
    kind = filters.ChoiceFilter(choices=Feedback.Kind.choices)
    status = filters.ChoiceFilter(choices=Feedback.DisputeStatus.choices)
    category = RepeatableCharFilter(
        method="filter_category", help_text="Category slug; repeat for any of several."
    )
    model_version = filters.CharFilter(field_name="prediction__model_version")
    created_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Feedback
        fields: list[str] = []

    def filter_category(self, queryset, name, value):
        if not value:
            return queryset
        return queryset.filter(with_any_category(value))


def segment_params(params) -> dict[str, str]:
    """``segment.<key>=<value>`` query parameters, keys checked like stored segment keys."""
    found: dict[str, str] = {}
    errors: list[FieldError] = []
    for name in params:
        if not name.startswith(SEGMENT_PREFIX):
            continue
        key = name[len(SEGMENT_PREFIX) :]
        if len(key) > SEGMENT_KEY_MAX_CHARS or not SEGMENT_KEY_RE.match(key):
            errors.append(FieldError(name, "invalid_key", "Not a valid segment key."))
            continue
        found[key] = params.get(name)
    if errors:
        raise InvalidInput(errors)
    return found


class StrictFilterBackend(filters.DjangoFilterBackend):
    """django-filter, plus ``segment.<key>`` filters; unknown parameters and NUL are a 400
    (``inputs.query_params``)."""

    def filter_queryset(self, request, queryset, view):
        filterset_class = self.get_filterset_class(view, queryset)
        allowed = set(filterset_class.base_filters) if filterset_class else set()
        query_params(request, allowed | PAGINATION_PARAMS, prefixes=[SEGMENT_PREFIX])
        queryset = super().filter_queryset(request, queryset, view)
        for position, (key, value) in enumerate(segment_params(request.query_params).items()):
            alias = f"_segment_{position}"
            # KeyTransform (not a "segment__<key>" lookup): a key may itself contain "__".
            queryset = queryset.alias(**{alias: KeyTransform(key, "segment")}).filter(
                **{alias: value}
            )
        return queryset

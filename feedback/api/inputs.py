"""What a request sends, checked once: its query parameters, its JSON body, strict serializers.

- ``query_params(request, allowed)``: unknown parameters and NUL characters are a 400 naming
  the parameter (a typo is never a silently ignored filter; PostgreSQL cannot compare text
  holding NUL). django-filter views get the same through ``StrictFilterBackend``.
- ``json_object(request)``: "the body must be a JSON object" (no body reads as ``{}``).
- ``StrictSerializer``: the base of every input serializer outside intake. It refuses unknown
  fields, a non-string where the schema says text (DRF's ``CharField`` would turn ``123`` into
  ``"123"``), and NUL characters in text. The view, the admin form and the management command
  validate with the same serializer (``validated(SerializerClass, data)``); services take typed
  keyword arguments and check only what needs the database.

The intake POSTs (``feedback/validation.py``) keep their own hand-written, measured path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework import serializers

from ..errors import FieldError, InvalidInput

NUL = "\x00"
NUL_DETAIL = "NUL characters are not allowed."


def _shown(name: str) -> str:
    return name.replace(NUL, "\\x00")


def query_params(
    request, allowed: Iterable[str], *, prefixes: Iterable[str] = ()
) -> dict[str, list[str]]:
    """The query parameters, refused (400, each error naming its parameter) when one is
    unknown or holds a NUL character. ``prefixes``: families of names (``segment.``)."""
    allowed = set(allowed)
    prefixes = tuple(prefixes)
    params = request.query_params
    listed = ", ".join([*sorted(allowed), *(f"{p}<key>" for p in prefixes)]) or "none"
    unknown = f"Unknown query parameter; allowed: {listed}."
    errors = [
        FieldError(_shown(name), "unknown_parameter", unknown)
        for name in params
        if name not in allowed and not name.startswith(prefixes)
    ]
    errors += [
        FieldError(_shown(name), "invalid", NUL_DETAIL)
        for name, values in params.lists()
        if NUL in name or any(NUL in value for value in values)
    ]
    if errors:
        raise InvalidInput(errors)
    return {name: params.getlist(name) for name in params}


def json_object(data: Any) -> dict[str, Any]:
    """The request body (``request.data``) if it is a JSON object; no body is ``{}``."""
    if not isinstance(data, dict):
        raise InvalidInput.one(None, "invalid_type", "The body must be a JSON object.")
    return data


def _error(detail: str, code: str) -> list[serializers.ErrorDetail]:
    return [serializers.ErrorDetail(detail, code=code)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text_errors(field: serializers.Field, value: Any) -> list | dict | None:
    """Why ``value`` is refused for ``field`` before DRF sees it: a value DRF would coerce
    rather than refuse (``123`` as ``"123"``, ``"yes"`` as true: ``invalid_type``; ``"12"`` as
    12: ``invalid``, DRF's own code for a value of the wrong type there), or a NUL character in
    text. Lists and dicts are checked item by item; DRF refuses the rest itself."""
    if value is None:
        return None
    if isinstance(field, serializers.ChoiceField):
        return None  # a choice is checked against its choices
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else _error("true or false.", "invalid_type")
    if isinstance(field, serializers.IntegerField):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else _error("An integer.", "invalid")
    if isinstance(field, serializers.FloatField):
        return None if _is_number(value) else _error("A number.", "invalid")
    if isinstance(field, serializers.CharField):
        if _is_number(value):
            return _error("A string.", "invalid_type")
        if isinstance(value, str) and NUL in value:
            return _error(NUL_DETAIL, "invalid")
        return None
    if isinstance(field, serializers.ListField) and isinstance(value, list):
        found = [_text_errors(field.child, item) or [] for item in value]
        return found if any(found) else None
    if isinstance(field, serializers.DictField) and isinstance(value, dict):
        found = {
            key: error for key, item in value.items() if (error := _text_errors(field.child, item))
        }
        return found or None
    return None


class StrictSerializer(serializers.Serializer):
    """Refuses unknown fields, non-strings for text fields, and NUL in text (400 naming each)."""

    unknown_detail = "Unknown field."  # a subclass may list what is allowed

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            return super().to_internal_value(data)  # DRF's "expected a dictionary"
        errors: dict[str, Any] = {
            name: [serializers.ErrorDetail(self.unknown_detail, code="unknown_field")]
            for name in sorted(set(data) - set(self.fields))
        }
        for name, field in self.fields.items():
            if name in data and not field.read_only:
                error = _text_errors(field, data[name])
                if error:
                    errors[name] = error
        if not errors:
            return super().to_internal_value(data)
        # The other fields' refusals too, in one answer (DRF would coerce the ones above).
        try:
            super().to_internal_value({k: v for k, v in data.items() if k not in errors})
        except serializers.ValidationError as exc:
            found = exc.detail if isinstance(exc.detail, dict) else {}
            for name, detail in found.items():
                errors.setdefault(name, detail)
        ordered = [name for name in self.fields if name in errors]
        raise serializers.ValidationError(
            {name: errors[name] for name in [*sorted(set(errors) - set(ordered)), *ordered]}
        )


def validated(serializer_class: type[serializers.Serializer], data: Any, **kwargs: Any) -> Any:
    """``data`` checked by ``serializer_class``, as validated data; refused with ``InvalidInput``
    (a 400 naming each field, in the API; a message in the admin or a command)."""
    from .errors import flatten

    incoming = serializer_class(data=json_object(data), **kwargs)
    if not incoming.is_valid():
        raise InvalidInput(flatten(incoming.errors))
    return incoming.validated_data


def as_field_errors(errors: list[FieldError], *, under: str) -> serializers.ValidationError:
    """``FieldError``s of a shared checker (``feedback.validation``), with paths under the field
    ``under`` (``segment.locale``), as the ``ValidationError`` a ``validate_<field>`` raises."""
    detail: dict[str, list] = {}
    own: list = []
    for error in errors:
        rest = (error.field or "")[len(under) :].lstrip(".")
        item = serializers.ErrorDetail(error.detail, code=error.code)
        if rest:
            detail.setdefault(rest, []).append(item)
        else:
            own.append(item)
    return serializers.ValidationError(own or detail)

"""Form fields shared by the labeling admin's forms (queues and gold sets)."""

from __future__ import annotations

from typing import Any

from django import forms


class CommaListField(forms.CharField):
    """A list of short strings typed as ``a, b, c`` (blanks dropped)."""

    def prepare_value(self, value: Any) -> Any:
        return ", ".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:  # type: ignore[override]
        text = super().to_python(value) or ""
        return [part.strip() for part in text.split(",") if part.strip()]

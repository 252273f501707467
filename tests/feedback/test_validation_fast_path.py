"""The fast check of ordinary feedback items accepts only what the field-by-field checks
accept, and returns the same clean item."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from feedback.validation import (
    FEEDBACK_FIELDS,
    _allowed_fields,
    _feedback_fast,
    validate_feedback_fields,
)

CATEGORIES = {"incorrect": 1, "incomplete": 2, "unsafe": 3}
text = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["", " ", "a\x00b", "x" * 256, "x" * 5001, "incorrect", "p-1"]),
)
value = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 2), st.floats(allow_nan=False), text,
    st.lists(text, max_size=3), st.dictionaries(text, text, max_size=3),
)
items = st.dictionaries(
    st.sampled_from(sorted(FEEDBACK_FIELDS | {"idempotency_key", "extra"})),
    st.one_of(
        value,
        st.sampled_from(["rating", "report", "dispute"]),
        st.lists(st.sampled_from([*CATEGORIES, "rude", 1]), max_size=22),
        st.dictionaries(st.sampled_from(["locale", "bad key", "a" * 65]), text, max_size=3),
    ),
)


@settings(max_examples=400, deadline=None)
@given(items, st.booleans())
def test_the_fast_check_agrees_with_the_field_checks(item, batch):
    extra = frozenset({"idempotency_key"}) if batch else frozenset()
    fast = _feedback_fast(item, CATEGORIES, _allowed_fields(extra), extra)
    errors: list = []
    full = validate_feedback_fields(item, "", errors, categories=CATEGORIES, extra_fields=extra)
    if fast is not None:
        assert not errors
        assert fast == full

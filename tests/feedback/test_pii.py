"""PII scrubbing of comments and corrections; end users pseudonymised."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from feedback.pii import luhn_valid, pseudonymise, scrub_text, scrub_value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+bot@mail.example.co.uk today", "write to [EMAIL] today"),
        ("card 4111 1111 1111 1111 please", "card [CARD] please"),
        ("card 4111-1111-1111-1111", "card [CARD]"),
        ("amex 378282246310005.", "amex [CARD]."),
        ("call +49 30 12345678", "call [PHONE]"),
        ("call (555) 123-4567 now", "call [PHONE] now"),
        ("call 555-123-4567", "call [PHONE]"),
        ("mobile 0171 2345678", "mobile [PHONE]"),
        ("from 192.168.10.254 yesterday", "from [IP] yesterday"),
        ("v6 2001:db8::8a2e:370:7334 and ::1", "v6 [IP] and [IP]"),
        ("a@b.io, 10.0.0.1, +1 415 555 0100", "[EMAIL], [IP], [PHONE]"),
    ],
)
def test_personal_data_is_replaced(text, expected):
    assert scrub_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "The answer was wrong on 2026-11-20 at 10:30.",
        "I paid 1234 dollars for 3 items, order 55.",
        "card 4111 1111 1111 1112 fails Luhn but is too long for a phone",
        "version 1.2.3 of the app",
        "ratio 3:4:5 is fine",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert scrub_text(text) == text


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")


def test_json_corrections_are_scrubbed_in_every_string():
    value = {"reply": "mail x@y.org", "items": ["ip 8.8.8.8", 3, None], "ok": True}

    assert scrub_value(value) == {
        "reply": "mail [EMAIL]",
        "items": ["ip [IP]", 3, None],
        "ok": True,
    }


def test_scrubbing_can_be_turned_off_per_project(project, prediction_factory):
    from feedback.selectors import project_context
    from feedback.services.intake import feedback_submit

    project.scrub_pii = False
    project.save()
    prediction_factory(project=project, external_id="p")

    (result,) = feedback_submit(
        context=project_context(project=project),
        items=[{"prediction": "p", "kind": "report", "comment": "mail me at a@b.co"}],
    )

    assert result.obj.comment == "mail me at a@b.co"


test_scrubbing_can_be_turned_off_per_project = pytest.mark.django_db(
    test_scrubbing_can_be_turned_off_per_project
)


def test_pseudonyms_are_stable_per_project_and_differ_across_projects():
    assert pseudonymise("s1", "user-1") == pseudonymise("s1", "user-1")
    assert pseudonymise("s1", "user-1") != pseudonymise("s2", "user-1")
    assert len(pseudonymise("s1", "user-1")) == 64


emails = st.from_regex(r"[a-z][a-z0-9._]{0,10}@[a-z]{2,8}\.(com|org|de)", fullmatch=True)
filler = st.text(alphabet=st.characters(whitelist_categories=("L", "Zs")), max_size=30)


@given(before=filler, email=emails, after=filler)
def test_no_email_survives(before, email, after):
    scrubbed = scrub_text(f"{before} {email} {after}")

    assert email not in scrubbed
    assert "[EMAIL]" in scrubbed


@given(st.text(max_size=200))
def test_scrubbing_is_idempotent(text):
    once = scrub_text(text)

    assert scrub_text(once) == once


def card_numbers():
    def complete(digits):
        for check in range(10):
            candidate = digits + str(check)
            if luhn_valid(candidate):
                return candidate
        raise AssertionError

    return st.text(alphabet="0123456789", min_size=15, max_size=15).map(complete)


@given(card=card_numbers())
def test_every_luhn_valid_card_is_caught(card):
    assert scrub_text(f"my card is {card} thanks") == "my card is [CARD] thanks"

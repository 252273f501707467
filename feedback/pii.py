"""PII scrubbing and end-user pseudonymisation.

``scrub_text`` replaces e-mail addresses, card numbers (13-19 digits passing the Luhn check),
IP addresses (v4 and v6) and phone numbers with ``[EMAIL]``, ``[CARD]``, ``[IP]`` and
``[PHONE]``. Order matters: cards before phones (a card is also a long digit run), IPs before
phones (``10.0.0.12`` looks like digits and dots). False positives are preferred to leaks: an
order number of 9+ digits will read as a phone number.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from typing import Any

EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
CARD = re.compile(r"(?<![\d\w])\d(?:[ \-]?\d){12,18}(?![\d\w])")
IPV4 = re.compile(
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])"
)
# Candidate IPv6 runs (hex groups and colons); each candidate is confirmed by ``ipaddress``.
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
PHONE = re.compile(
    r"(?<![\w+])"
    r"(?:\+\d{1,3}[\s.\-]?)?"          # country code
    r"(?:\(\d{1,4}\)[\s.\-]?)?"         # area code in parentheses
    r"\d{2,5}(?:[\s.\-]?\d{2,5}){1,4}"  # groups of digits
    r"(?!\w)"
)
DIGIT = re.compile(r"\d")  # every pattern below that needs a digit matches it with \d
# Fewer digits than this in the whole text: no card (13+), no phone (7+; ``_phone`` keeps
# shorter runs), and an IPv4 address needs 4 digits and 3 dots.
MIN_PII_DIGITS = 7
DATE_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ \-]", "", match.group(0))
    return "[CARD]" if luhn_valid(digits) else match.group(0)


def _ipv6(match: re.Match[str]) -> str:
    candidate = match.group(0)
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return candidate
    return "[IP]"


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(ch.isdigit() for ch in text)
    if text.startswith("+") and 7 <= digits <= 15:
        return "[PHONE]"
    if digits < 7 or digits > 15 or DATE_LIKE.fullmatch(text.strip()):
        return text
    # Plain digit runs shorter than 9 without separators are more often amounts or ids.
    if digits < 9 and text.isdigit():
        return text
    return "[PHONE]"


def scrub_text(text: str) -> str:
    """Return ``text`` with personal data replaced by placeholders."""
    if not text:
        return text
    # Digits counted before the e-mail and IPv6 placeholders take theirs away (a C scan: a
    # generator showed in the profile); most comments hold a few digits or none, and then the
    # three digit patterns below cannot replace anything (batch profile: they were a quarter
    # of the per-item Python time).
    digits = len(DIGIT.findall(text))
    if "@" in text:
        text = EMAIL.sub("[EMAIL]", text)
    if ":" in text:
        text = IPV6.sub(_ipv6, text)
    if digits == 0:
        return text
    if digits >= MIN_PII_DIGITS:
        text = CARD.sub(_card, text)
    if digits >= 4 and text.count(".") >= 3:
        text = IPV4.sub("[IP]", text)
    if digits >= MIN_PII_DIGITS:
        text = PHONE.sub(_phone, text)
    return text


# Deeper than any JSON body the API accepts (feedback/api/parsers.py: 32 levels).
SCRUB_MAX_DEPTH = 64


def scrub_value(value: Any, _depth: int = 0) -> Any:
    """Scrub every string inside a JSON value (strings, lists, objects); keys are kept.

    Refuses (ValueError) a value nested deeper than ``SCRUB_MAX_DEPTH``, rather than recurse
    without bound: a caller past the API's parser must not reach Python's recursion limit."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, (list, dict)):
        if _depth >= SCRUB_MAX_DEPTH:
            raise ValueError(f"JSON nested deeper than {SCRUB_MAX_DEPTH} levels")
        if isinstance(value, list):
            return [scrub_value(item, _depth + 1) for item in value]
        return {key: scrub_value(item, _depth + 1) for key, item in value.items()}
    return value


def pseudonymise(secret: str, end_user: str) -> str:
    """HMAC-SHA256 of an app's end-user id under the project's secret (hex)."""
    # hmac.digest: OpenSSL's one-shot HMAC, the same bytes as hmac.new(...) without building
    # an HMAC object per call (batch profile).
    return hmac.digest(secret.encode(), end_user.encode(), "sha256").hex()

"""Browser feedback tokens: the format, minting and checking (no database, no cache).

A token lets one end user's browser send feedback about one prediction of one project:

    <payload>.<signature>

- ``payload``: base64url without padding of compact JSON (UTF-8), at least
  ``{"v":1,"prj":"<project slug>","pred":"<prediction external_id>","sub":"<end user>",
  "kinds":["rating","report","dispute"],"exp":<unix seconds>,"iat":<unix seconds>}``.
  Readable by anyone (the browser reads ``kinds`` and ``exp`` from it): never secret.
- ``signature``: base64url without padding of HMAC-SHA256 over the payload segment exactly as
  sent (its ASCII characters), keyed with the project's token secret (its UTF-8 bytes, the
  whole string as shown, ``rfts_`` included).

The app's server mints tokens offline (README, "Feedback from the end user's browser", ten
lines of Python or JavaScript) or through ``POST /api/v1/feedback-tokens``. Checking is here
(``token_check``); which secret(s) a project accepts and the cache are
``feedback.selectors.token_project``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from typing import Any

VERSION = 1
KINDS = ("rating", "report", "dispute")
TTL_MIN_SECONDS = 60
TTL_MAX_SECONDS = 7 * 86400
# A token longer than this is refused before any decoding (a payload of long ids is ~600).
MAX_TOKEN_CHARS = 4096
# Tokens minted on a server whose clock is ahead are accepted this much early (iat).
CLOCK_SKEW_SECONDS = 300
SECRET_PREFIX = "rfts_"
SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


class TokenRefused(Exception):
    """A token that cannot be used: ``code`` is ``invalid_token`` or ``token_expired``."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a token says, once its signature checked out."""

    project: str
    prediction: str
    end_user: str
    kinds: tuple[str, ...]
    expires_at: int
    issued_at: int
    digest: str  # sha256 of the whole token: names its rate-limit counter


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signature(secret: str, payload_segment: str) -> str:
    mac = hmac.new(secret.encode(), payload_segment.encode("ascii"), hashlib.sha256)
    return b64url(mac.digest())


def token_mint(
    *,
    secret: str,
    project: str,
    prediction: str,
    end_user: str,
    kinds: list[str] | tuple[str, ...],
    issued_at: int,
    ttl_seconds: int,
) -> tuple[str, int]:
    """A signed token and its expiry (unix seconds). The caller has checked the inputs."""
    expires_at = issued_at + ttl_seconds
    claims = {
        "v": VERSION,
        "prj": project,
        "pred": prediction,
        "sub": end_user,
        "kinds": list(kinds),
        "exp": expires_at,
        "iat": issued_at,
    }
    payload = b64url(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    return f"{payload}.{signature(secret, payload)}", expires_at


def token_project(raw: str) -> str | None:
    """The project slug a token names, unchecked (CORS decides on it before the view checks
    the token; the view then refuses a forged one). None when it names none."""
    try:
        return token_parse(raw).project
    except TokenRefused:
        return None


def _claims(raw: str) -> tuple[str, dict[str, Any], str]:
    if not raw or len(raw) > MAX_TOKEN_CHARS:
        raise TokenRefused("invalid_token", "Not a feedback token.")
    payload, dot, sig = raw.partition(".")
    if not dot or not SEGMENT.fullmatch(payload) or not SEGMENT.fullmatch(sig):
        raise TokenRefused(
            "invalid_token", "Not a feedback token: expected <payload>.<signature>, base64url."
        )
    try:
        claims = json.loads(_unb64url(payload))
    except (ValueError, binascii.Error):
        raise TokenRefused("invalid_token", "The token's payload is not JSON.") from None
    if type(claims) is not dict:
        raise TokenRefused("invalid_token", "The token's payload is not a JSON object.")
    return payload, claims, sig


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token split and its payload decoded, nothing checked yet."""

    raw: str
    payload: str
    claims: dict[str, Any]
    signature: str

    @property
    def project(self) -> str | None:
        project = self.claims.get("prj")
        return project if type(project) is str and project else None


def token_parse(raw: str) -> ParsedToken:
    """The token's parts (TokenRefused when it is not ``<payload>.<signature>`` of a JSON
    object): which project's secrets to check it with."""
    return ParsedToken(raw, *_claims(raw))


def token_check(
    raw: str | ParsedToken, *, secrets: list[str], now: float
) -> TokenClaims:
    """The claims of a token signed with one of ``secrets`` and not expired, or TokenRefused.

    The signature is checked before anything the payload says is believed: a forged or
    tampered token is ``invalid_token`` even when it is also expired."""
    parsed = raw if isinstance(raw, ParsedToken) else token_parse(raw)
    raw, payload, claims, sig = parsed.raw, parsed.payload, parsed.claims, parsed.signature
    if not any(hmac.compare_digest(signature(secret, payload), sig) for secret in secrets):
        # Comparing the encoded signature, not decoded bytes: base64's unused low bits would
        # let four spellings of one signature pass.
        raise TokenRefused(
            "invalid_token",
            "The token's signature does not match: forged, altered, or signed with a secret "
            "that was rotated since.",
        )
    project, prediction, end_user = claims.get("prj"), claims.get("pred"), claims.get("sub")
    kinds, expires_at, issued_at = claims.get("kinds"), claims.get("exp"), claims.get("iat")
    if (
        claims.get("v") != VERSION
        or not all(type(v) is str and v for v in (project, prediction, end_user))
        or type(kinds) is not list
        or not kinds
        or any(kind not in KINDS for kind in kinds)
        or type(expires_at) is not int
        or type(issued_at) is not int
    ):
        raise TokenRefused(
            "invalid_token",
            'The token\'s payload needs v 1, prj, pred, sub (non-empty strings), kinds (a '
            'non-empty list of rating, report, dispute), exp and iat (integers).',
        )
    if expires_at - issued_at > TTL_MAX_SECONDS or issued_at > now + CLOCK_SKEW_SECONDS:
        raise TokenRefused(
            "invalid_token",
            f"The token lives longer than {TTL_MAX_SECONDS} s, or was issued in the future.",
        )
    if expires_at <= now:
        raise TokenRefused("token_expired", "The token has expired; ask the app for a new one.")
    return TokenClaims(
        project=project,
        prediction=prediction,
        end_user=end_user,
        kinds=tuple(kinds),
        expires_at=expires_at,
        issued_at=issued_at,
        digest=hashlib.sha256(raw.encode()).hexdigest(),
    )

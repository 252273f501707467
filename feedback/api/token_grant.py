"""``Authorization: FeedbackToken <token>``: an end user's browser, for one prediction.

The token (format: ``feedback/feedback_tokens.py``) is checked against its project's token
secret(s) (``feedback.selectors.token_project``), then counted against two rates: per token
(``REDRESS_FEEDBACK_TOKEN_RATE``) and per end user of the project
(``REDRESS_FEEDBACK_END_USER_RATE``, whatever token they hold), 429 with Retry-After past either.

What a token may do (everything else is 403 ``token_scope``):

- ``POST /api/v1/feedback`` for its prediction, with one of its kinds
  (``feedback/api/token_intake.py``, served by the intake lane like a key's POST);
- ``GET /api/v1/categories`` (its project's);
- ``GET /api/v1/disputes/{id}`` for a dispute filed from a browser for its prediction by its
  end user.

Refusals, in the error shape: 401 ``invalid_token`` (malformed, forged, altered, unknown
project, signed with a rotated secret), 401 ``token_expired``, 403 ``token_scope``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from ..errors import FieldError, Forbidden
from ..feedback_tokens import TokenClaims, TokenRefused, token_check, token_parse
from ..pii import pseudonymise
from ..selectors import TokenProject
from ..selectors import token_project as token_project_context
from .auth import ClientUser
from .throttling import counted_wait

SCHEME = "feedbacktoken"
SCHEME_NAME = "FeedbackToken"
GRANT_ATTRIBUTE = "redress_token_grant"
# (URL name, method) a token may call through DRF; its feedback POST is the intake lane's.
TOKEN_ENDPOINTS = frozenset({("categories", "GET"), ("dispute-detail", "GET")})


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A checked token: what it allows, and its project's context."""

    claims: TokenClaims
    project: TokenProject
    end_user_hash: str  # the end user as feedback stores it (HMAC with the project's secret)

    @property
    def project_id(self) -> int:
        return self.project.intake.project_id


def feedback_token_of(request) -> str | None:
    """The raw token of a ``FeedbackToken`` Authorization header ("" if it carries none), or
    None for another scheme."""
    scheme, _, raw = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return raw.strip() if scheme.lower() == SCHEME else None


def refused(code: str, detail: str) -> exceptions.AuthenticationFailed:
    exc = exceptions.AuthenticationFailed(detail, code=code)
    exc.auth_header = f'{SCHEME_NAME} error="{code}"'
    return exc


def out_of_scope(field: str | None, detail: str) -> Forbidden:
    return Forbidden(FieldError(field, "token_scope", detail))


def token_grant(request) -> TokenGrant:
    """The request's checked token (made once per request), or 401."""
    http_request = getattr(request, "_request", request)
    grant = getattr(http_request, GRANT_ATTRIBUTE, None)
    if grant is not None:
        return grant
    now = time.time()
    try:
        parsed = token_parse(feedback_token_of(http_request) or "")
        slug = parsed.project
        project = token_project_context(slug) if slug else None
        if project is None:
            raise TokenRefused("invalid_token", "Not a valid feedback token.")
        claims = token_check(parsed, secrets=project.secrets(now), now=now)
    except TokenRefused as exc:
        raise refused(exc.code, exc.detail) from None
    grant = TokenGrant(
        claims=claims,
        project=project,
        end_user_hash=pseudonymise(project.intake.project_secret, claims.end_user),
    )
    setattr(http_request, GRANT_ATTRIBUTE, grant)
    return grant


def token_grant_checked(request) -> TokenGrant:
    """``token_grant``, counted against its rates: 429 past either."""
    grant = token_grant(request)
    wait = token_wait(grant)
    if wait is not None:
        raise exceptions.Throttled(wait)
    return grant


def token_wait(grant: TokenGrant) -> float | None:
    """Seconds to wait when the token or its end user is over their rate, else None."""
    return counted_wait(
        [
            (f"ftok:{grant.claims.digest[:40]}", settings.REDRESS_FEEDBACK_TOKEN_RATE),
            (
                f"fuser:{grant.project_id}:{grant.end_user_hash[:40]}",
                settings.REDRESS_FEEDBACK_END_USER_RATE,
            ),
        ]
    )


class TokenClient(ClientUser):
    """``request.user`` for a request made with a feedback token: an end user's browser."""

    def __init__(self, grant: TokenGrant) -> None:
        self.grant = grant

    def __str__(self) -> str:
        return f"feedback-token:{self.grant.claims.project}"


class FeedbackTokenAuthentication(BaseAuthentication):
    """DRF's side of the token: the allowed GETs, and 403 ``token_scope`` for any other
    endpoint, before its view runs (deny by default: a new endpoint is closed to tokens)."""

    def authenticate(self, request):
        if feedback_token_of(request) is None:
            return None
        match = getattr(request._request, "resolver_match", None)
        name = match.url_name if match is not None else None
        grant = token_grant(request)  # 401 first: a bad token is a bad token anywhere
        if (name, request.method) not in TOKEN_ENDPOINTS and not (
            request.method in ("HEAD", "OPTIONS") and (name, "GET") in TOKEN_ENDPOINTS
        ):
            raise exceptions.PermissionDenied(
                "A feedback token may only post feedback about its prediction, read the "
                "project's categories and read the disputes it filed.",
                code="token_scope",
            )
        return TokenClient(grant), grant

    def authenticate_header(self, request) -> str:
        return SCHEME_NAME


class FeedbackTokenScheme(OpenApiAuthenticationExtension):
    target_class = "feedback.api.token_grant.FeedbackTokenAuthentication"
    name = "FeedbackToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "An end user's browser: `Authorization: FeedbackToken <token>`, a "
            "short-lived token for one prediction and one end user, minted by the app's server "
            "(POST /api/v1/feedback-tokens, or offline with the project's token secret; "
            "README). 401 `invalid_token` or `token_expired`; 403 `token_scope` outside the "
            "token's prediction, kinds or endpoints.",
        }

"""``Authorization: Token <personal token>`` authentication, against the stored sha256."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed

from ..models import PersonalToken
from ..services.keys import hash_key


class PersonalTokenAuthentication(BaseAuthentication):
    """DRF's TokenAuthentication, with the token looked up by its hash (``PersonalToken``)."""

    keyword = "token"

    def authenticate(self, request):
        scheme, _, raw = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != self.keyword:
            return None  # not ours: session authentication comes next
        raw = raw.strip()
        if not raw or " " in raw:
            raise AuthenticationFailed("The Token header carries no single token.")
        token = (
            PersonalToken.objects.select_related("user").filter(key_hash=hash_key(raw)).first()
        )
        if token is None or not token.user.is_active:
            raise AuthenticationFailed("Unknown token, or its user is inactive.")
        return token.user, token

    def authenticate_header(self, request) -> str:
        return "Token"


class PersonalTokenScheme(OpenApiAuthenticationExtension):
    target_class = "feedback.api.token_auth.PersonalTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A person's token: `Authorization: Token <token>` "
            "(manage.py drf_create_token <username>; shown once).",
        }

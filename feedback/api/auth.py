"""``Authorization: Bearer <project API key>`` authentication."""

from __future__ import annotations

from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed

from ..selectors import KeyContext, api_key_context
from ..services.keys import hash_key


class ClientUser:
    """``request.user`` for a request made by software, not a person (an app's API key, an end
    user's browser with a feedback token): authenticated, but no staff, no permissions, no pk."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False


class ApiKeyClient(ClientUser):
    """``request.user`` for a request made with a project API key: an app, not a person."""

    def __init__(self, context: KeyContext, key_hash: str) -> None:
        self.context = context
        self.key_hash = key_hash  # names the key's rate-limit counter

    def __str__(self) -> str:
        return f"api-key:{self.context.key_id}"


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, raw_key = header.partition(" ")
        if scheme.lower() != self.keyword:
            return None  # not ours: Token and session authentication come next
        raw_key = raw_key.strip()
        if not raw_key:
            raise AuthenticationFailed("The Bearer header carries no key.")
        context = api_key_context(raw_key)
        if context is None:
            raise AuthenticationFailed("Unknown or revoked API key.")
        return ApiKeyClient(context, hash_key(raw_key)), context

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) when credentials are missing or invalid.
        return 'Bearer realm="api"'


def key_context(request) -> KeyContext | None:
    """The key's context on the intake path (and the throttle); every other view asks the
    request's ``Caller`` (``feedback.api.caller.caller_of``)."""
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, KeyContext) else None

"""CORS for the browser feedback-token endpoints, per project (django-cors-headers).

No origin is allowed in settings (``CORS_ALLOWED_ORIGINS`` is empty); this handler of
corsheaders' ``check_request_enabled`` signal decides each request:

- Only the token endpoints (``REDRESS_TOKEN_CORS_PATHS``: ``/api/v1/feedback``,
  ``/categories``, ``/disputes/{id}``) ever get CORS headers. ``CORS_URLS_REGEX`` matches
  nothing: corsheaders asks this signal about every request, and touches only those it allows
  (a refused one keeps its response as it was, without even ``Vary: Origin``).
- A preflight (OPTIONS with Access-Control-Request-Method) carries no Authorization header, so
  it cannot name a project: it is allowed for an origin that *some* project lists. It only
  lets the browser send the real request; that one is checked below, and a page of another
  project's origin gets no Access-Control-Allow-Origin on it, so its script reads nothing.
- The request itself: allowed when it carries ``Authorization: FeedbackToken`` and the origin
  is one of the token's project's ``allowed_origins`` (the token's project as it names it; a
  forged token is refused by the view with 401, so a forger reads nothing more than that).
- A request with an API key (Bearer), a person's token, a session or nothing never gets CORS
  headers: a key pasted into a web page fails loudly in the browser.
"""

from __future__ import annotations

import re

from corsheaders.signals import check_request_enabled
from django.conf import settings
from django.dispatch import receiver

from ..feedback_tokens import token_project
from ..selectors import token_origins
from ..selectors import token_project as token_project_context
from .token_grant import feedback_token_of


def _token_path(path: str) -> bool:
    return re.match(settings.REDRESS_TOKEN_CORS_PATHS, path) is not None


@receiver(check_request_enabled, dispatch_uid="redress-feedback-token-cors")
def token_origin_allowed(sender, request, **kwargs) -> bool:
    if not _token_path(request.path_info):
        return False
    origin = request.headers.get("origin")
    if not origin:
        return False
    if request.method == "OPTIONS" and "access-control-request-method" in request.headers:
        return origin in token_origins()
    raw = feedback_token_of(request)
    if not raw:
        return False  # keys, people, anonymous: never CORS
    slug = token_project(raw)
    project = token_project_context(slug) if slug else None
    return project is not None and origin in project.allowed_origins

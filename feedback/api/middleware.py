"""Two middleware for the API, and the system check that keeps the lane honest.

``ChunkedBody``: a body sent with ``Transfer-Encoding: chunked`` has no Content-Length, so
Django reads it as empty (gunicorn passes it de-chunked through ``wsgi.input``). It is read
here, up to the 1 MiB limit (413 beyond it), and given its length, for every view.

``KeyRequestFastLane``: ``POST /api/v1/predictions``, ``/feedback`` and ``/feedback/batch`` with
a Bearer key use nothing that the session, CSRF, authentication and messages middleware set up
(the key is the caller, there is no cookie to read or write); passing a request through those
four and resolving its URL cost a sixth of the single-item request's Python (profile in
docs/performance.md).
The lane hands such a request straight to the one intake implementation
(feedback/api/intake.py ``KeyIntake.serve``); every other request continues down the chain.
The paths come from the URLconf: every static route whose view is a ``KeyIntake``.

A middleware added below the lane would silently never see those requests: the system check
``redress.E001`` fails (``manage.py check``, every test run, every server start) when anything
but the four browser middleware follows it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from io import BytesIO
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern

LANE = "feedback.api.middleware.KeyRequestFastLane"
# What the lane's requests may skip: they only serve browsers (sessions, CSRF, login, messages).
BROWSER_ONLY = (
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
)

Serve = Callable[[HttpRequest], HttpResponse]


@checks.register(checks.Tags.security)
def check_nothing_below_the_lane(app_configs: Any = None, **kwargs: Any) -> list[checks.Error]:
    middleware = list(settings.MIDDLEWARE)
    if LANE not in middleware:
        return []
    below = [name for name in middleware[middleware.index(LANE) + 1 :] if name not in BROWSER_ONLY]
    return [
        checks.Error(
            f"{name} is below {LANE} in MIDDLEWARE: API-key POSTs to the intake endpoints "
            "skip everything below the lane, so they would never pass through it.",
            hint="Put it above the lane (or, if it only serves browsers, add it to "
            "feedback.api.middleware.BROWSER_ONLY).",
            id="redress.E001",
        )
        for name in below
    ]


class ChunkedBody:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        if not meta.get("CONTENT_LENGTH") and "chunked" in meta.get(
            "HTTP_TRANSFER_ENCODING", ""
        ).lower():
            from .errors import exception_handler
            from .parsers import PayloadTooLarge, read_chunked

            try:
                raw = read_chunked(request, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
            except PayloadTooLarge as exc:
                refused = exception_handler(exc, {})
                return HttpResponse(
                    _json(refused.data),
                    status=refused.status_code,
                    content_type="application/json",
                )
            meta["CONTENT_LENGTH"] = str(len(raw))
            request._stream = LimitedStream(BytesIO(raw), len(raw))
        return self.get_response(request)


def _json(data: Any) -> bytes:
    from rest_framework.renderers import JSONRenderer

    return JSONRenderer().render(data)


KEY_ATTRIBUTE = "serve_key_request"
# A browser's feedback-token POST (``Authorization: FeedbackToken``) takes the lane too: it
# needs no session, CSRF or login either. CORS headers are added above the lane
# (corsheaders' middleware comes first).
TOKEN_ATTRIBUTE = "serve_token_request"


def key_request_routes(resolver: URLResolver, attribute: str = KEY_ATTRIBUTE) -> dict[str, Serve]:
    """path → ``serve_key_request`` (or ``attribute``) for the static routes of views that
    have one."""
    routes = {}
    for path, serve, callback in _static_routes(resolver, "/", attribute):
        try:
            match = resolver.resolve(path)
        except Resolver404:  # e.g. shadowed by an include that matches but has no such route
            continue
        if match.func is callback and not match.args and not match.kwargs:
            routes[path] = serve
    return routes


def _static_routes(
    resolver: URLResolver, prefix: str, attribute: str = KEY_ATTRIBUTE
) -> Iterator[tuple[str, Serve, Any]]:
    for entry in resolver.url_patterns:
        pattern = entry.pattern
        if not isinstance(pattern, RoutePattern) or pattern.converters:
            continue  # regex or converters: not a fixed path
        if isinstance(entry, URLResolver):
            yield from _static_routes(entry, prefix + str(pattern), attribute)
        elif isinstance(entry, URLPattern):
            serve = getattr(entry.callback, attribute, None)
            if serve is not None:
                yield prefix + str(pattern), serve, entry.callback


class KeyRequestFastLane:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._resolver: URLResolver | None = None
        self._routes: dict[str, Serve] = {}
        self._token_routes: dict[str, Serve] = {}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            scheme = request.META.get("HTTP_AUTHORIZATION", "")[:14].lower()
            if scheme[:7] == "bearer ":
                serve = self.routes().get(request.path_info)
                if serve is not None:
                    return serve(request)
            elif scheme == "feedbacktoken ":
                serve = self.routes(TOKEN_ATTRIBUTE).get(request.path_info)
                if serve is not None:
                    return serve(request)
        return self.get_response(request)

    def routes(self, attribute: str = KEY_ATTRIBUTE) -> dict[str, Serve]:
        # get_resolver() is cached per URLconf and rebuilt when ROOT_URLCONF changes (tests).
        resolver = get_resolver()
        if resolver is not self._resolver:
            self._routes = key_request_routes(resolver)
            self._token_routes = key_request_routes(resolver, TOKEN_ATTRIBUTE)
            self._resolver = resolver
        return self._routes if attribute == KEY_ATTRIBUTE else self._token_routes

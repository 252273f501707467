"""The lane for API-key requests to the hot intake views, ahead of the browser middleware.

``POST /api/v1/feedback`` and ``/feedback/batch`` with a Bearer key use nothing that the
session, CSRF, authentication and messages middleware set up: the key is the caller, the views
are CSRF-exempt, and there is no cookie to read or write. Passing a request through those four
and then resolving its URL cost a sixth of the single-item request's Python (profile in
docs/performance.md). This middleware sits after the security, common (host validation) and
clickjacking middleware and before the rest; for a POST with a Bearer key to a path served by a
view made with ``fast_intake`` (feedback/api/intake.py) it calls that view's
``serve_key_request`` directly. Whatever the view does not serve itself (an unknown or revoked
key, another content type…) continues down the whole chain exactly as before, as does every
other request.

The paths come from the URLconf, not from a list here: every route without converters whose
view has ``serve_key_request``, and which resolves to that view (a route that an earlier one
shadows is left out). They are found once per URLconf.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern

Serve = Callable[[HttpRequest], HttpResponse | None]


def key_request_routes(resolver: URLResolver) -> dict[str, Serve]:
    """path → ``serve_key_request`` for the static routes of views that have one."""
    routes = {}
    for path, serve, callback in _static_routes(resolver, "/"):
        try:
            match = resolver.resolve(path)
        except Resolver404:  # e.g. shadowed by an include that matches but has no such route
            continue
        if match.func is callback and not match.args and not match.kwargs:
            routes[path] = serve
    return routes


def _static_routes(resolver: URLResolver, prefix: str) -> Iterator[tuple[str, Serve, Any]]:
    for entry in resolver.url_patterns:
        pattern = entry.pattern
        if not isinstance(pattern, RoutePattern) or pattern.converters:
            continue  # regex or converters: not a fixed path
        if isinstance(entry, URLResolver):
            yield from _static_routes(entry, prefix + str(pattern))
        elif isinstance(entry, URLPattern):
            serve = getattr(entry.callback, "serve_key_request", None)
            if serve is not None:
                yield prefix + str(pattern), serve, entry.callback


class KeyRequestFastLane:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self._resolver: URLResolver | None = None
        self._routes: dict[str, Serve] = {}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if (
            request.method == "POST"
            and request.META.get("HTTP_AUTHORIZATION", "")[:7].lower() == "bearer "
        ):
            serve = self.routes().get(request.path_info)
            if serve is not None:
                response = serve(request)
                if response is not None:
                    return response
        return self.get_response(request)

    def routes(self) -> dict[str, Serve]:
        # get_resolver() is cached per URLconf and rebuilt when ROOT_URLCONF changes (tests).
        resolver = get_resolver()
        if resolver is not self._resolver:
            self._routes = key_request_routes(resolver)
            self._resolver = resolver
        return self._routes

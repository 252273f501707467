"""The two hot intake POSTs (``/feedback`` and ``/feedback/batch``) as plain Django views.

DRF's dispatch (request wrapping, content negotiation, authenticator, permission and throttle
classes, the exception machinery) cost more than the rest of a single request together (bench
profile). For the ordinary request (a Bearer key, a JSON body, no query string, an Accept
that JSON satisfies) these views do the same steps directly, in the same order and with the
same answers: 401/403 → 429 → 413/400 → the service. Everything else, and every other method
on those URLs, goes to the DRF view unchanged, which also keeps serving the OpenAPI schema:
the wrapper carries the DRF view's ``cls`` and ``initkwargs``, which drf-spectacular reads.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from functools import update_wrapper
from io import BytesIO
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.http import HttpRequest, HttpResponse
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer

from ..errors import ServiceError
from ..selectors import KeyContext
from ..services.intake import feedback_submit
from .errors import exception_handler
from .parsers import LimitedJSONParser
from .throttling import ingest_key_checked
from .views import (
    batch_entry,
    batch_items,
    feedback_representation,
    raise_for_single,
    require_object,
)

# Set on a request whose key these views turned down (unknown, revoked, no ingest scope).
DECLINED = "_redress_key_declined"
FAST_ACCEPT = frozenset({"", "*/*", "application/json"})
_render = JSONRenderer().render  # DRF's bytes exactly (compact, UTF-8, U+2028/9 escaped)
_parser = LimitedJSONParser()


def _response(data: Any, status: int, allow: str) -> HttpResponse:
    response = HttpResponse(_render(data), status=status, content_type="application/json")
    response["Allow"] = allow  # as DRF's APIView answers
    return response


def _error_response(exc: Exception, allow: str) -> HttpResponse:
    """The project's one error shape and headers (Retry-After), from its exception handler."""
    rendered = exception_handler(exc, {})
    response = _response(rendered.data, rendered.status_code, allow)
    for header in ("Retry-After", "WWW-Authenticate"):
        if header in rendered:
            response[header] = rendered[header]
    return response


def _fast_key(request: HttpRequest) -> str | None:
    """The raw API key of a request these views serve themselves, or None for the DRF view."""
    meta = request.META
    if request.method != "POST" or meta.get("QUERY_STRING"):  # ?format= is DRF's
        return None
    length = meta.get("CONTENT_LENGTH", "")
    if request.content_type != "application/json" or not length.isdigit() or int(length) == 0:
        return None  # DRF answers 415, or takes a body without a length as {}
    if meta.get("HTTP_ACCEPT", "").strip() not in FAST_ACCEPT:
        return None  # negotiation (406, renderer parameters) is DRF's
    scheme, _, raw_key = meta.get("HTTP_AUTHORIZATION", "").partition(" ")
    raw_key = raw_key.strip()
    if scheme.lower() != "bearer" or not raw_key:
        return None
    return raw_key


def _skip_health_check_if_idle() -> None:
    """Spare the ``SELECT 1`` of CONN_HEALTH_CHECKS (a round trip per request) when the
    persistent connection is idle and nothing is waiting on its socket.

    A connection the server ended (restart, terminated backend, idle timeout) has its
    FATAL message or EOF waiting to be read, so the socket polls readable and Django's own
    check runs as before. Only a silently dropped network path escapes this, as it would
    escape a check made just before the query."""
    if not connection.health_check_enabled or connection.health_check_done:
        return
    conn = connection.connection
    if conn is None or conn.closed or conn.broken or conn.info.transaction_status != 0:
        return  # not connected, or not idle: let Django decide
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if not readable:
        connection.health_check_done = True


Handler = Callable[[HttpRequest, KeyContext, Any], tuple[Any, int]]


def fast_intake(drf_view: Callable[..., HttpResponse], handle: Handler) -> Callable[..., Any]:
    """Serve POSTs with ``handle`` (request, context, parsed body → body, status), the rest
    with ``drf_view``.

    The view's ``serve_key_request(request)`` is the plain path alone: the response, or None
    when the request is not one it serves (then nothing was read or counted).
    ``KeyRequestFastLane`` (feedback/api/middleware.py) calls it ahead of the browser
    middleware."""
    template = drf_view.cls(**drf_view.initkwargs)
    template.setup(HttpRequest())  # as as_view() does per request: HEAD where there is GET
    allow = ", ".join(template.allowed_methods)

    def serve(request: HttpRequest) -> HttpResponse | None:
        raw_key = _fast_key(request)
        if raw_key is None or DECLINED in request.__dict__:
            return None
        context, wait = ingest_key_checked(raw_key)
        if context is None:
            request.__dict__[DECLINED] = True  # the lane asked first: not twice
            return None  # 401 or 403, not counted: the DRF view's to answer
        if wait is not None:
            return _error_response(exceptions.Throttled(wait), allow)
        try:
            # As DRF does for a JSON parser: the body through Django (its size check answers
            # 413 for a body over DATA_UPLOAD_MAX_MEMORY_SIZE), then parsed.
            data = _parser.parse(BytesIO(request.body), None, {"request": request})
            if connection.vendor == "postgresql":
                _skip_health_check_if_idle()
            body, status = handle(request, context, data)
        except (ServiceError, exceptions.APIException, RequestDataTooBig) as exc:
            return _error_response(exc, allow)
        return _response(body, status, allow)

    def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = serve(request)
        if response is None:
            return drf_view(request, *args, **kwargs)
        return response

    # cls, initkwargs (read by drf-spectacular) and csrf_exempt (API keys carry no cookie)
    update_wrapper(view, drf_view)
    view.serve_key_request = serve
    return view


def feedback_post(request: HttpRequest, context: KeyContext, data: Any) -> tuple[Any, int]:
    """POST /api/v1/feedback: what ``FeedbackView.post`` does."""
    (result,) = feedback_submit(
        context=context,
        items=[require_object(data)],
        idempotency_keys=[request.META.get("HTTP_IDEMPOTENCY_KEY")],
        prefix_items=False,
        item_key_field=False,
    )
    raise_for_single(result)
    return feedback_representation(result.obj), result.status


def feedback_batch_post(request: HttpRequest, context: KeyContext, data: Any) -> tuple[Any, int]:
    """POST /api/v1/feedback/batch: what ``FeedbackBatchView.post`` does."""
    items = batch_items(require_object(data))
    results = feedback_submit(context=context, items=items)
    return {"results": [batch_entry(r) for r in results]}, 200

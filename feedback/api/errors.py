"""The one error shape: ``{"errors": [{"field": ..., "code": ..., "detail": ...}]}``.

Every refusal of the API goes through ``exception_handler``: the service layer's
``ServiceError`` and DRF's own exceptions (validation, auth, throttling, parsing) alike.

A database that cannot serve the request now (out of connections, a statement or lock timeout,
a server restarting or unreachable) is a 503 with ``Retry-After``, not a 500: from
``exception_handler`` for any view that uses it, and from ``handler500`` for what fails outside
a view (middleware, the intake lane), with a plain page outside the API (config/urls.py).
"""

from __future__ import annotations

import logging
import sqlite3
import sys
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpResponse, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from ..errors import FieldError, ServiceError

logger = logging.getLogger("redress.database")

# Seconds a client is asked to wait when the database turned a request away.
DATABASE_RETRY_AFTER = 5
# SQLSTATE classes and codes that mean "not now" rather than "never", so that the same request
# a few seconds later may well succeed: 08 connection exception, 53 insufficient resources
# (53300 too many connections), 57 operator intervention (57014 statement timeout, 57P01-03
# shutting down / starting up), 40 rollbacks (serialization failure, deadlock), 55P03 lock
# timeout. Other database errors are bugs: 500.
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "40"})
TIMEOUT_SQLSTATES = frozenset({"57014", "55P03"})

DEFAULT_CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    429: "throttled",
    503: "unavailable",
}


def flatten(detail: Any, field: str | None = None) -> list[FieldError]:
    """Turn DRF's nested error detail into a flat list with field paths."""
    if isinstance(detail, dict):
        out: list[FieldError] = []
        for key, value in detail.items():
            if key in ("non_field_errors", "__all__"):
                child = field
            elif field is None:
                child = str(key)
            else:
                child = f"{field}.{key}"
            out.extend(flatten(value, child))
        return out
    if isinstance(detail, list):
        if all(isinstance(item, (str, exceptions.ErrorDetail)) for item in detail):
            out = []
            for item in detail:
                out.extend(flatten(item, field))
            return out
        out = []
        for position, item in enumerate(detail):
            if item:
                out.extend(flatten(item, f"{field or ''}[{position}]"))
        return out
    code = getattr(detail, "code", None) or "invalid"
    return [FieldError(field, str(code), str(detail))]


def error_body(errors: list[FieldError]) -> dict[str, list[dict[str, Any]]]:
    return {"errors": [error.as_dict() for error in errors]}


def database_refusal(exc: BaseException | None) -> FieldError | None:
    """The error to answer (503) when ``exc`` is the database turning a request away for now;
    None for any other exception."""
    if isinstance(exc, InterfaceError):  # the connection is gone
        return _unavailable()
    if not isinstance(exc, OperationalError):
        return None
    cause = exc.__cause__
    if isinstance(cause, sqlite3.OperationalError):
        message = str(cause)
        if "locked" in message or "busy" in message:
            return FieldError(
                None,
                "database_timeout",
                f"The database is busy; retry in {DATABASE_RETRY_AFTER} s.",
            )
        return None  # e.g. "no such table": a bug
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate in TIMEOUT_SQLSTATES:
        return FieldError(
            None,
            "database_timeout",
            f"The database did not answer in time; retry in {DATABASE_RETRY_AFTER} s.",
        )
    if sqlstate is None or sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES:
        return _unavailable()  # no SQLSTATE: refused or lost before the server said why
    return None


def _unavailable() -> FieldError:
    return FieldError(
        None,
        "database_unavailable",
        "The database cannot take this request now (out of connections, restarting or "
        f"unreachable); retry in {DATABASE_RETRY_AFTER} s.",
    )


def _log_refusal(exc: BaseException, path: str) -> None:
    # One line per request, without a traceback: the cause is PostgreSQL's own message.
    logger.warning("503 for %s: the database refused it: %s", path, str(exc).strip())


def database_unavailable_response(request) -> HttpResponse | None:
    """``handler500``'s answer while the exception being handled is the database turning the
    request away: 503 with Retry-After, the error shape under /api/ and a plain page elsewhere.
    None for any other exception (a real 500)."""
    exc = sys.exc_info()[1]
    error = database_refusal(exc)
    if error is None:
        return None
    _log_refusal(exc, request.path)
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse(error_body([error]), status=503)
    else:
        response = HttpResponse(
            "<!doctype html><title>Service unavailable</title><h1>Service unavailable</h1>"
            f"<p>{error.detail}</p>",
            status=503,
            content_type="text/html; charset=utf-8",
        )
    response["Retry-After"] = str(DATABASE_RETRY_AFTER)
    return response


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.errors), status=exc.status_code)
    refusal = database_refusal(exc)
    if refusal is not None:
        set_rollback()
        request = context.get("request")
        _log_refusal(exc, getattr(request, "path", "?"))
        return Response(
            error_body([refusal]),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )
    if isinstance(exc, RequestDataTooBig):  # Django refuses the body before any parser runs
        from .parsers import PayloadTooLarge

        exc = PayloadTooLarge("The request body is larger than 1 MiB.")
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)  # sets Retry-After, WWW-Authenticate
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = flatten(exc.detail)
    else:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
        code = getattr(detail, "code", None) or DEFAULT_CODES.get(response.status_code, "error")
        errors = [FieldError(None, str(code), str(detail))]
    response.data = error_body(errors)
    return response


def json_error_view(status_code: int, code: str, detail: str):
    def view(request, exception=None):
        return JsonResponse(error_body([FieldError(None, code, detail)]), status=status_code)

    return view


handler404 = json_error_view(status.HTTP_404_NOT_FOUND, "not_found", "No such resource.")
_server_error = json_error_view(
    status.HTTP_500_INTERNAL_SERVER_ERROR, "server_error", "Internal error; it has been logged."
)


def handler500(request, exception=None):
    return database_unavailable_response(request) or _server_error(request)

"""The one error shape: ``{"errors": [{"field": ..., "code": ..., "detail": ...}]}``.

Every refusal of the API goes through ``exception_handler``: the service layer's
``ServiceError`` and DRF's own exceptions (validation, auth, throttling, parsing) alike.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..errors import FieldError, ServiceError

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


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ServiceError):
        return Response(error_body(exc.errors), status=exc.status_code)
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
handler500 = json_error_view(
    status.HTTP_500_INTERNAL_SERVER_ERROR, "server_error", "Internal error; it has been logged."
)

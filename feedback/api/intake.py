"""The intake POSTs (``/predictions``, ``/feedback``, ``/feedback/batch``): one implementation.

A POST with a Bearer key to these paths is served here, and only here, as a plain Django view:
the key (401 unknown, 403 without the ``ingest`` scope) and its rate (429), the body (413, 415,
406, 400: ``feedback/api/parsers.py``), then the service, whose outcomes map to statuses below.
DRF's dispatch (request wrapping, negotiation, authenticator, permission and throttle classes)
cost more than the rest of a single request together (bench profile), and none of it is needed
for a key and a JSON body. Every other request to these paths (a GET, a person's token, no
credentials) goes to the DRF view, which refuses a POST without a key and serves the OpenAPI
schema (the wrapper carries its ``cls`` and ``initkwargs``, which drf-spectacular reads).

``KeyRequestFastLane`` (feedback/api/middleware.py) calls ``serve`` ahead of the browser
middleware.
"""

from __future__ import annotations

import re
import select
from collections.abc import Callable
from functools import update_wrapper
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer

from ..errors import Conflict, FieldError, InvalidInput, ServiceError
from ..models import Feedback
from ..selectors import KeyContext, api_key_context
from ..services.intake import (
    CONFLICT,
    CREATED,
    INVALID,
    REPLAYED,
    UPDATED,
    ItemResult,
    Outcome,
    feedback_submit,
    predictions_log,
)
from ..validation import BATCH_MAX_ITEMS
from .errors import database_refusal, exception_handler
from .inputs import json_object
from .parsers import BodyRefused, parse_json_body, read_body
from .serializers import PredictionSerializer, prediction_external_id
from .throttling import ingest_key_checked
from .token_grant import feedback_token_of, token_grant_checked

STATUS = {CREATED: 201, REPLAYED: 200, INVALID: 400, CONFLICT: 409, UPDATED: 200}
ACCEPTED_MEDIA = frozenset({"*/*", "application/*", "application/json"})
_render = JSONRenderer().render  # DRF's bytes exactly (compact, UTF-8, U+2028/9 escaped)


# --- from outcomes to HTTP -------------------------------------------------------------------


def batch_items(data: Any) -> list[Any]:
    extra = sorted(set(json_object(data)) - {"items"})
    if extra:
        raise InvalidInput([
            FieldError(name, "unknown_field", "A batch is {\"items\": [...]} and nothing else.")
            for name in extra
        ])
    items = data.get("items")
    if not isinstance(items, list):
        raise InvalidInput.one("items", "invalid_type", "Expected a list of items.")
    if not items:
        raise InvalidInput.one("items", "empty", "Send at least one item.")
    if len(items) > BATCH_MAX_ITEMS:
        raise InvalidInput.one(
            "items", "too_many", f"At most {BATCH_MAX_ITEMS} items per batch (got {len(items)})."
        )
    return items


def _renamed(errors: list[FieldError], prefix: str, names: dict[str, str]) -> list[FieldError]:
    """Item-relative paths as the client sent them: under ``items[i]``, or renamed (the
    single endpoint's idempotency key is a header)."""
    out = []
    for error in errors:
        path = names.get(error.field, error.field) if error.field is not None else None
        if prefix:
            path = prefix if not path else prefix + path if path[0] == "[" else f"{prefix}.{path}"
        out.append(FieldError(path, error.code, error.detail))
    return out


def raise_for_single(result: ItemResult, names: dict[str, str] | None = None) -> None:
    if result.outcome is INVALID:
        raise InvalidInput(_renamed(result.errors, "", names or {}))
    if result.outcome is CONFLICT:
        raise Conflict(_renamed(result.errors, "", names or {}))


def batch_entry(result: ItemResult) -> dict[str, Any]:
    return {
        "index": result.index,
        "status": STATUS[result.outcome],
        "id": result.obj.pk if result.ok else None,
        "errors": [e.as_dict() for e in _renamed(result.errors, f"items[{result.index}]", {})],
    }


ITEM_PATH = re.compile(r"items\[(\d+)\](?:\.(.+)|(\[.+))?")


def _refused_by_item(refused: list[FieldError], count: int) -> dict[int, list[FieldError]]:
    """The parser's refusals (NUL, ±1e999, too deep) by batch item, with item-relative paths;
    a refusal outside the items refuses the whole body."""
    by_item: dict[int, list[FieldError]] = {}
    for error in refused:
        match = ITEM_PATH.fullmatch(error.field or "")
        if match is None or int(match.group(1)) >= count:
            raise InvalidInput(refused)
        by_item.setdefault(int(match.group(1)), []).append(
            FieldError(match.group(2) or match.group(3), error.code, error.detail)
        )
    return by_item


def _run_batch(
    service: Callable[[list[Any]], list[ItemResult]],
    items: list[Any],
    refused: list[FieldError],
) -> list[ItemResult]:
    """``service(items)``, but the items the parser refused are reported, not passed on."""
    if not refused:
        return service(items)
    by_item = _refused_by_item(refused, len(items))
    kept = [index for index in range(len(items)) if index not in by_item]
    results: list[ItemResult | None] = [None] * len(items)
    for index, errors in by_item.items():
        sent = items[index].get("external_id") if isinstance(items[index], dict) else None
        external_id = sent if isinstance(sent, str) else None  # a prediction's, as sent
        results[index] = ItemResult(index, INVALID, errors=errors, external_id=external_id)
    for index, result in zip(kept, service([items[i] for i in kept]) if kept else [], strict=True):
        result.index = index
        results[index] = result
    return results  # type: ignore[return-value]


def feedback_representation(obj: Feedback) -> dict[str, Any]:
    """What ``FeedbackSerializer(obj).data`` gives for a POST response, built directly: the
    serializer's field objects cost about as much as the rest of the view's Python on the
    single-item path (bench profile); tests/feedback/test_intake_api.py compares the two."""
    return {
        "id": obj.id,
        "prediction": prediction_external_id(obj),
        "kind": obj.kind,
        "rating": obj.rating,
        "status": obj.status,
        "categories": list(obj.categories),
        "comment": obj.comment,
        "correction": obj.correction,
        "segment": obj.segment,
        "idempotency_key": obj.idempotency_key,
        "resolution_note": obj.resolution_note,
        "resolved_at": _iso_datetime(obj.resolved_at),
        "created_at": _iso_datetime(obj.created_at),
    }


def _iso_datetime(value: Any) -> str | None:
    """DRF's ISO 8601 output of an aware datetime: in the current time zone, UTC as ``Z``."""
    if value is None:
        return None
    text = timezone.localtime(value).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# --- the three POSTs -------------------------------------------------------------------------

Refused = list[FieldError]
Handler = Callable[[HttpRequest, KeyContext, Any, Refused], tuple[Any, int]]


def _single(data: Any, refused: Refused) -> dict:
    if refused:
        raise InvalidInput(refused)
    return json_object(data)


def predictions_post(
    request: HttpRequest, context: KeyContext, data: Any, refused: Refused
) -> tuple[Any, int]:
    """POST /api/v1/predictions: one prediction, or ``{"items": [...]}``."""
    if isinstance(data, dict) and "items" in data and "external_id" not in data:
        items = batch_items(data)
        results = _run_batch(
            lambda kept: predictions_log(context=context, items=kept), items, refused
        )
        body = [{**batch_entry(r), "external_id": r.external_id} for r in results]
        return {"results": body}, 200
    (result,) = predictions_log(context=context, items=[_single(data, refused)])
    raise_for_single(result)
    return PredictionSerializer(result.obj).data, STATUS[result.outcome]


KEY_HEADER = {"idempotency_key": "Idempotency-Key"}


def feedback_post(
    request: HttpRequest, context: KeyContext, data: Any, refused: Refused
) -> tuple[Any, int]:
    """POST /api/v1/feedback: one item; its idempotency key is the header."""
    (result,) = feedback_submit(
        context=context,
        items=[_single(data, refused)],
        idempotency_keys=[request.META.get("HTTP_IDEMPOTENCY_KEY")],
    )
    raise_for_single(result, KEY_HEADER)
    return feedback_representation(result.obj), STATUS[result.outcome]


def feedback_batch_post(
    request: HttpRequest, context: KeyContext, data: Any, refused: Refused
) -> tuple[Any, int]:
    """POST /api/v1/feedback/batch: up to 1,000 items, each with its own idempotency_key."""
    results = _run_batch(
        lambda kept: feedback_submit(context=context, items=kept), batch_items(data), refused
    )
    return {"results": [batch_entry(r) for r in results]}, 200


# --- serving ---------------------------------------------------------------------------------


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


def bearer_key(request: HttpRequest) -> str | None:
    """The raw key of a ``Bearer`` Authorization header ("" when it carries none), or None."""
    scheme, _, raw_key = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return raw_key.strip() if scheme.lower() == "bearer" else None


def _unauthenticated(detail: str) -> exceptions.AuthenticationFailed:
    exc = exceptions.AuthenticationFailed(detail)
    exc.auth_header = 'Bearer realm="api"'  # as DRF sets it from the authenticator
    return exc


def _check_key(raw_key: str) -> tuple[KeyContext, float | None]:
    if not raw_key:
        raise _unauthenticated("The Bearer header carries no key.")
    context, wait = ingest_key_checked(raw_key)
    if context is None:
        if api_key_context(raw_key) is None:
            raise _unauthenticated("Unknown or revoked API key.")
        raise exceptions.PermissionDenied(
            "This endpoint takes a project API key with the 'ingest' scope."
        )
    return context, wait


def _acceptable(accept: str) -> bool:
    if accept in ("", "*/*", "application/json"):
        return True
    return any(
        part.split(";", 1)[0].strip().lower() in ACCEPTED_MEDIA for part in accept.split(",")
    )


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


def read_json(request: HttpRequest) -> tuple[Any, Refused]:
    """The body of an intake POST: (data, what the parser refused), or the error (406, 413,
    415). Shared by the key and the feedback-token paths."""
    if not _acceptable(request.META.get("HTTP_ACCEPT", "")):
        raise exceptions.NotAcceptable()
    raw = read_body(request)
    if not raw:
        return {}, []  # as DRF takes a body without a length
    if request.content_type != "application/json":
        raise exceptions.UnsupportedMediaType(request.content_type)
    try:
        return parse_json_body(raw, request.content_params.get("charset")), []
    except BodyRefused as exc:
        return exc.data, exc.errors


def serving(allow: str, work: Callable[[], tuple[Any, int]]) -> HttpResponse:
    """``work()``'s body and status as JSON, its refusals in the project's error shape."""
    try:
        if connection.vendor == "postgresql":
            _skip_health_check_if_idle()
        body, status = work()
    except (ServiceError, exceptions.APIException, RequestDataTooBig) as exc:
        return _error_response(exc, allow)
    except DatabaseError as exc:
        # The database turning the request away for now (no connection, a timeout): 503
        # with Retry-After from the one handler; anything else is a bug, and raises.
        if database_refusal(exc) is None:
            raise
        return _error_response(exc, allow)
    return _response(body, status, allow)


class KeyIntake:
    """The URL's view: Bearer-key POSTs served by ``serve`` (the one implementation), a
    browser's feedback-token POSTs by ``serve_token`` (``token_handle``: the feedback URL only),
    the rest by the DRF view."""

    def __init__(
        self,
        drf_view: Callable[..., HttpResponse],
        handle: Handler,
        token_handle: Callable[[HttpRequest, Any, Any, Refused], tuple[Any, int]] | None = None,
    ) -> None:
        self.drf_view = drf_view
        self.handle = handle
        self.token_handle = token_handle
        template = drf_view.cls(**drf_view.initkwargs)
        template.setup(HttpRequest())  # as as_view() does per request: HEAD where there is GET
        self.allow = ", ".join(template.allowed_methods)
        # cls, initkwargs (read by drf-spectacular) and csrf_exempt (keys carry no cookie)
        update_wrapper(self, drf_view)
        self.serve_key_request = self.serve
        if token_handle is not None:
            self.serve_token_request = self.serve_token

    def __call__(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            if bearer_key(request) is not None:
                return self.serve(request)
            if self.token_handle is not None and feedback_token_of(request) is not None:
                return self.serve_token(request)
        return self.drf_view(request, *args, **kwargs)

    def serve_token(self, request: HttpRequest) -> HttpResponse:
        """A POST with ``Authorization: FeedbackToken …`` (feedback/api/token_intake.py)."""
        handle = self.token_handle
        assert handle is not None

        def work() -> tuple[Any, int]:
            grant = token_grant_checked(request)  # 401, 429
            data, refused = read_json(request)
            return handle(request, grant, data, refused)

        return serving(self.allow, work)

    def serve(self, request: HttpRequest) -> HttpResponse:
        """A POST with a Bearer key, whatever else it carries."""

        def work() -> tuple[Any, int]:
            context, wait = _check_key(bearer_key(request) or "")
            if wait is not None:
                raise exceptions.Throttled(wait)
            data, refused = read_json(request)
            return self.handle(request, context, data, refused)

        return serving(self.allow, work)


__all__ = ["KeyIntake", "Outcome", "feedback_batch_post", "feedback_post", "predictions_post"]

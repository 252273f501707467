"""OpenAPI documentation pieces shared by the API's views (drf-spectacular).

- The Bearer API-key security scheme.
- The documented error responses (one shape everywhere, see API.md) and their headers.
- A post-processing hook that closes the intake request objects (``feedback/validation.py``
  refuses unknown fields, so the schema says ``additionalProperties: false`` for them) and
  allows empty query values where they mean "not given".

``tests/feedback/test_openapi.py`` (schemathesis) checks that this schema and the API agree.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from .serializers import ErrorSerializer


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "feedback.api.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A project API key: `Authorization: Bearer rdr_…` "
            "(manage.py create_api_key <project> --scopes ingest,data).",
        }


# Security requirements, for ``extend_schema(auth=...)``: intake takes an API key only (a
# person's token authenticates but is refused with 403); reads also take a person.
API_KEY_ONLY: list[dict[str, list[str]]] = [{"ApiKey": []}]

ERROR_DESCRIPTIONS = {
    400: "Invalid input; each error names its field (`items[3].kind`, `segment.locale`).",
    401: "Missing or invalid credentials (a feedback token: `invalid_token` or "
    "`token_expired`).",
    403: "Authenticated, but not allowed (the key lacks the scope, the person the role, or a "
    "feedback token is outside its prediction, kinds or endpoints: `token_scope`).",
    404: "Not found (or another project's).",
    409: "Conflict with stored state: an idempotency key or an external_id reused with other "
    "content (a feedback token's second dispute: `dispute_exists`).",
    413: "Body larger than 1 MiB.",
    415: "Not JSON (send `Content-Type: application/json`).",
    429: "Rate limited per API key (`REDRESS_INGEST_RATE`), or per feedback token and end user "
    "(`REDRESS_FEEDBACK_TOKEN_RATE`, `REDRESS_FEEDBACK_END_USER_RATE`); retry after "
    "`Retry-After` seconds.",
}


def errors_for(*codes: int) -> dict[int, OpenApiResponse]:
    """The documented ``{"errors": [...]}`` responses for these status codes."""
    return {
        code: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code])
        for code in codes
    }


# Response headers of the error responses. Every operation can answer 401 (the first
# authenticator names the Bearer scheme) and 429 (the throttle counts every keyed request).
ERROR_HEADERS = [
    OpenApiParameter(
        "WWW-Authenticate", str, OpenApiParameter.HEADER, response=[401],
        description='`Bearer realm="api"`; for a feedback token, `FeedbackToken '
        'error="invalid_token"` or `error="token_expired"`.',
    ),
    OpenApiParameter(
        "Retry-After", int, OpenApiParameter.HEADER, response=[429],
        description="Seconds until the rate limit window resets.",
    ),
]

IDEMPOTENCY_KEY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    # Blank (whitespace-only) keys are refused: at least one non-space character.
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"\S"},
    OpenApiParameter.HEADER,
    required=False,
    description="Optional, up to 255 characters, unique per project. A replay with the same "
    "body answers 200 with the stored feedback; with another body, 409.",
)

# Components of request bodies whose unknown fields ``feedback/validation.py`` refuses. The batch
# envelopes (``{"items": [...]}``) are left open: only ``items`` is read from them.
CLOSED_REQUEST_COMPONENTS = (
    "PredictionInRequest",
    "FeedbackInRequest",
    "FeedbackBatchItemRequest",
    "FeedbackTokenInRequest",
)


# Operations whose query parameters treat an empty value as absent (django-filter and DRF's
# pagination do: ``?kind=&cursor=`` lists everything), so the schema allows empty values there.
EMPTY_QUERY_VALUE_OPERATIONS = frozenset({"feedback_list"})
# Operations refusing a request without a body (400); drf-spectacular cannot tell for a
# PolymorphicProxySerializer.
BODY_REQUIRED_OPERATIONS = frozenset(
    {"predictions_log", "feedback_submit", "feedback_submit_batch", "feedback_tokens_create"}
)


# Operations a browser's feedback token may call (feedback/api/token_grant.py): the only ones
# whose security lists the FeedbackToken scheme (it is a default authenticator, so
# drf-spectacular would list it everywhere; everywhere else a token gets 403 token_scope).
TOKEN_OPERATIONS = frozenset({"feedback_submit", "categories_list", "disputes_retrieve"})
TOKEN_SCHEME = "FeedbackToken"


def intake_postprocess(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """drf-spectacular post-processing hook (after the enum hook).

    Closes the request objects whose unknown fields are refused, marks the query parameters
    for which an empty value means "not given", and the request bodies that are required.
    """
    schemas = result.get("components", {}).get("schemas", {})
    for name in CLOSED_REQUEST_COMPONENTS:
        if name in schemas:
            schemas[name]["additionalProperties"] = False
    for item in result.get("paths", {}).values():
        for operation in item.values():
            operation_id = operation.get("operationId")
            security = operation.get("security")
            if security is not None:
                security = [s for s in security if TOKEN_SCHEME not in s]
                if operation_id in TOKEN_OPERATIONS:
                    security.append({TOKEN_SCHEME: []})
                operation["security"] = security
            if operation_id in BODY_REQUIRED_OPERATIONS and "requestBody" in operation:
                operation["requestBody"]["required"] = True
            if operation_id in EMPTY_QUERY_VALUE_OPERATIONS:
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "query":
                        parameter["allowEmptyValue"] = True
    return result

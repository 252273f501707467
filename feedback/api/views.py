"""Intake and feedback endpoints. Thin: parse, call a service or selector, render."""

from __future__ import annotations

import datetime as dt

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import generics, serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..errors import Conflict, FieldError, InvalidInput, NotFound
from ..models import Feedback, FeedbackCategory
from ..selectors import category_list, dispute_get, feedback_list, token_dispute_get
from ..services.disputes import dispute_resolve
from ..services.feedback_tokens import feedback_token_create, project_origins_set
from .caller import FEEDBACK_READ, MANAGE, MEMBER, RESOLVE, Needs, TokenCaller, caller_of
from .filters import FeedbackFilterSet, StrictFilterBackend
from .inputs import json_object
from .permissions import AnyProjectCaller, HasIngestScope
from .schema import API_KEY_ONLY, ERROR_HEADERS, IDEMPOTENCY_KEY_HEADER, errors_for
from .serializers import (
    CategorySerializer,
    DisputeSerializer,
    FeedbackBatchInSerializer,
    FeedbackBatchOutSerializer,
    FeedbackInSerializer,
    FeedbackSerializer,
    PredictionBatchInSerializer,
    PredictionBatchOutSerializer,
    PredictionInSerializer,
    PredictionSerializer,
)

ReadsFeedback = Needs.of(FEEDBACK_READ)


class PredictionsView(APIView):
    permission_classes = [HasIngestScope]

    @extend_schema(
        operation_id="predictions_log",
        summary="Log one prediction, or a batch of them",
        description="Scope `ingest`. One prediction object, or `{\"items\": [...]}` with at most "
        "1,000 of them. Re-posting an external_id with the same content answers 200 with the "
        "stored prediction; with other content, 409. A batch always answers 200 with one "
        "result per item (201, 200, 400 or 409), storing the valid ones.",
        auth=API_KEY_ONLY,
        request=PolymorphicProxySerializer(
            component_name="PredictionOrBatch",
            serializers=[PredictionInSerializer, PredictionBatchInSerializer],
            resource_type_field_name=None,
        ),
        parameters=ERROR_HEADERS,
        responses={
            201: OpenApiResponse(PredictionSerializer, description="Logged (one prediction)."),
            200: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="PredictionOrBatchResult",
                    serializers=[PredictionSerializer, PredictionBatchOutSerializer],
                    resource_type_field_name=None,
                ),
                description="One prediction already logged with the same content, or the "
                "results of a batch.",
            ),
            **errors_for(400, 401, 403, 409, 413, 415, 429),
        },
    )
    def post(self, request: Request) -> Response:
        # Served by feedback/api/intake.py for a Bearer key (the one implementation, which the
        # URL and the middleware lane route to); any other caller was refused above.
        raise PermissionDenied(HasIngestScope.message)


class FeedbackPagination(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
        except Exception as exc:  # DRF raises NotFound for a malformed cursor
            raise InvalidInput.one("cursor", "invalid", "Invalid cursor.") from exc
        # The position is an id (ordering "-id"); a forged one must not reach the query.
        if cursor is not None and cursor.position is not None:
            try:
                int(cursor.position)
            except ValueError:
                raise InvalidInput.one("cursor", "invalid", "Invalid cursor.") from None
        return cursor

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not raw.isdigit() or not 1 <= int(raw) <= self.max_page_size:
            raise InvalidInput.one(
                "page_size", "out_of_range", f"An integer from 1 to {self.max_page_size}."
            )
        return int(raw)


class FeedbackView(generics.ListAPIView):
    """``GET``: read feedback (scope ``data`` or a member). ``POST``: submit (``ingest``)."""

    serializer_class = FeedbackSerializer
    pagination_class = FeedbackPagination
    filter_backends = [StrictFilterBackend]
    filterset_class = FeedbackFilterSet

    def get_permissions(self) -> list[BasePermission]:
        if self.request.method == "POST":
            return [HasIngestScope()]
        return [ReadsFeedback()]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Feedback.objects.none()
        caller = caller_of(self.request)
        # Feedback carries segments: a reviewer reads it only where blind review is off.
        caller.refuse_listing(FEEDBACK_READ, slug=self.request.query_params.get("project"))
        return feedback_list(project_ids=caller.project_ids(FEEDBACK_READ))

    @extend_schema(
        operation_id="feedback_list",
        summary="Read feedback",
        description="Scope `data`, or a data scientist or admin of the project (a person whose "
        "only role in a project is reviewer reads its feedback only if a queue they review "
        "shows segments: 403 otherwise). Newest first, cursor-paginated (follow `next`).\n\n"
        "Besides the parameters below, filter on segment attributes with "
        "`segment.<key>=<value>` (e.g. `?segment.locale=de-DE&segment.device=ios`); a key is "
        "1-64 letters, digits, '_' and '-', and an invalid one is a 400. Any other unknown "
        "parameter is a 400 too, never silently ignored.",
        parameters=[
            OpenApiParameter(
                "status", str, enum=Feedback.DisputeStatus.values,
                description="Disputes in this status.",
            ),
            OpenApiParameter(
                "page_size", {"type": "integer", "minimum": 1, "maximum": 500},
                description="Results per page (default 50).",
            ),
            *ERROR_HEADERS,
        ],
        responses={200: FeedbackSerializer(many=True), **errors_for(400, 401, 403, 429)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="feedback_submit",
        summary="Submit feedback: a rating, a report or a dispute",
        description="Scope `ingest`. `prediction` names a logged prediction by external_id, or "
        "carries one inline (logged if new). Disputes start `open`.\n\n"
        "From an end user's browser with `Authorization: FeedbackToken <token>`: the token's "
        "prediction and end user are used (send them only to repeat them: another value is "
        "403 `token_scope`), and only the token's kinds (403 `token_scope`). One rating per "
        "end user and prediction: a second one changes it in place (200, same id). One "
        "dispute: a second is 409 `dispute_exists` naming the first. Rate limited per token "
        "and per end user (429). 401 `invalid_token` (forged, altered, rotated secret) or "
        "`token_expired`. The answer leaves out `segment`.",
        auth=API_KEY_ONLY,
        request=FeedbackInSerializer,
        parameters=[IDEMPOTENCY_KEY_HEADER, *ERROR_HEADERS],
        responses={
            201: OpenApiResponse(FeedbackSerializer, description="Stored."),
            200: OpenApiResponse(
                FeedbackSerializer,
                description="Replay of an Idempotency-Key with the same body: the stored "
                "feedback. With a feedback token, also an end user's rating changed in place.",
            ),
            **errors_for(400, 401, 403, 409, 413, 415, 429),
        },
    )
    def post(self, request: Request) -> Response:
        # Served by feedback/api/intake.py for a Bearer key (the one implementation, which the
        # URL and the middleware lane route to); any other caller was refused above.
        raise PermissionDenied(HasIngestScope.message)


class FeedbackBatchView(APIView):
    permission_classes = [HasIngestScope]

    @extend_schema(
        operation_id="feedback_submit_batch",
        summary="Submit up to 1,000 feedback items; valid ones stored, others reported by index",
        description="Scope `ingest`. Answers 200 with one result per item, in order: 201 "
        "stored, 200 replay of an idempotency_key, 400 invalid or 409 conflict (with `errors`). "
        "Only a body that is not a batch at all is refused as a whole (400).",
        auth=API_KEY_ONLY,
        request=FeedbackBatchInSerializer,
        parameters=ERROR_HEADERS,
        responses={
            200: OpenApiResponse(FeedbackBatchOutSerializer, description="One result per item."),
            **errors_for(400, 401, 403, 413, 415, 429),
        },
    )
    def post(self, request: Request) -> Response:
        # Served by feedback/api/intake.py for a Bearer key (the one implementation, which the
        # URL and the middleware lane route to); any other caller was refused above.
        raise PermissionDenied(HasIngestScope.message)


class CategoryListView(APIView):
    permission_classes = [AnyProjectCaller]

    @extend_schema(
        operation_id="categories_list",
        summary="The project's active feedback taxonomy",
        description="Any API key of the project, or a member of it, or a feedback token "
        "(its project's). In taxonomy order.",
        parameters=[
            OpenApiParameter(
                "project", str,
                description="The project's slug: required for a person (400 without it, 404 "
                "for a project they are not a member of); an API key's own project is used "
                "whatever this says.",
            ),
            *ERROR_HEADERS,
        ],
        responses={200: CategorySerializer(many=True), **errors_for(400, 401, 404, 429)},
    )
    def get(self, request: Request) -> Response:
        caller = caller_of(request)
        # A key's own project is used whatever ?project= says (the parameter is for people).
        slug = request.query_params.get("project") if caller.is_person else None
        project_id = caller.project(MEMBER, slug=slug).pk
        categories: list[FeedbackCategory] = list(category_list(project_id=project_id))
        return Response(CategorySerializer(categories, many=True).data)


class DisputeDetailView(APIView):
    permission_classes = [AnyProjectCaller]

    @extend_schema(
        operation_id="disputes_retrieve",
        summary="How a dispute stands",
        description="Any API key of the project (apps follow up on their users' disputes), or "
        "a member of it. Another project's dispute, or feedback that is not a dispute: 404. "
        "With a feedback token: only a dispute filed from a browser about the token's "
        "prediction by its end user (404 otherwise).",
        parameters=[
            OpenApiParameter("id", int, OpenApiParameter.PATH, description="The dispute's id."),
            *ERROR_HEADERS,
        ],
        responses={200: DisputeSerializer, **errors_for(401, 404, 429)},
    )
    def get(self, request: Request, pk: int) -> Response:
        caller = caller_of(request)
        if isinstance(caller, TokenCaller):  # a browser reads the disputes it filed
            grant = caller.grant
            dispute = token_dispute_get(
                project_id=grant.project_id,
                dispute_id=pk,
                prediction=grant.claims.prediction,
                end_user=grant.end_user_hash,
            )
        else:
            dispute = dispute_get(project_ids=caller.project_ids(MEMBER), dispute_id=pk)
        if dispute is None:
            raise NotFound(FieldError("id", "not_found", f"No dispute {pk} in this project."))
        return Response(DisputeSerializer(dispute).data)


class DisputeResolveInSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["upheld", "rejected"])
    resolution_note = serializers.CharField(
        help_text="Why; the app may show it to its user. Required."
    )


class DisputeResolveView(APIView):
    """Resolve a dispute by hand: the same service as the admin's triage action."""

    permission_classes = [AnyProjectCaller]

    @extend_schema(
        operation_id="disputes_resolve",
        summary="Resolve a dispute: upheld (the user was right) or rejected",
        description="Project admins (a person; API keys get 403). Another project's dispute: "
        "404; a member who is not an admin: 403; already resolved: 409. Emits the "
        "`dispute.resolved` webhook event.",
        parameters=[
            OpenApiParameter("id", int, OpenApiParameter.PATH, description="The dispute's id."),
            *ERROR_HEADERS,
        ],
        request=DisputeResolveInSerializer,
        responses={200: DisputeSerializer, **errors_for(400, 401, 403, 404, 409, 429)},
    )
    def post(self, request: Request, pk: int) -> Response:
        caller = caller_of(request)
        dispute = dispute_get(project_ids=caller.project_ids(MEMBER), dispute_id=pk)
        if dispute is None:
            raise NotFound(FieldError("id", "not_found", f"No dispute {pk} in this project."))
        caller.require(RESOLVE, project_id=dispute.project_id)
        data = request.data if isinstance(request.data, dict) else None
        if data is None:
            raise InvalidInput.one(None, "invalid_type", "Expected a JSON object.")
        errors = []
        wanted = data.get("status")
        if wanted not in ("upheld", "rejected"):
            errors.append(FieldError("status", "invalid_choice", "upheld or rejected."))
        note = data.get("resolution_note")
        if not isinstance(note, str) or not note.strip():
            errors.append(FieldError("resolution_note", "required",
                                     "Say why: the app shows this note to its user."))
        if errors:
            raise InvalidInput(errors)
        if dispute.status in (Feedback.DisputeStatus.UPHELD, Feedback.DisputeStatus.REJECTED):
            raise Conflict.one("status", "already_resolved",
                               f"This dispute was already resolved ({dispute.status}).")
        resolved = dispute_resolve(dispute_id=pk, upheld=wanted == "upheld", note=note,
                                   actor=request.user)
        return Response(DisputeSerializer(resolved).data)


class FeedbackTokenInSerializer(serializers.Serializer):
    """Documents the body; ``feedback_token_create`` checks it (unknown fields: 400)."""

    prediction = serializers.CharField(
        max_length=255, help_text="The external_id of a prediction logged in the key's project."
    )
    end_user = serializers.CharField(
        max_length=255,
        help_text="The app's id of the end user; stored pseudonymised (HMAC), like a key's.",
    )
    kinds = serializers.ListField(
        child=serializers.ChoiceField(choices=["rating", "report", "dispute"]),
        min_length=1,
        max_length=3,
        required=False,
        help_text="What the token may send; default all three.",
    )
    ttl_seconds = serializers.IntegerField(
        min_value=60, max_value=7 * 86400, required=False,
        help_text="Lifetime, 60 s to 7 days; default 86,400 (a day).",
    )


class FeedbackTokenOutSerializer(serializers.Serializer):
    token = serializers.CharField(
        help_text="`<payload>.<signature>`, base64url without padding (README: the format)."
    )
    expires_at = serializers.DateTimeField()


class FeedbackTokenView(APIView):
    permission_classes = [HasIngestScope]

    @extend_schema(
        operation_id="feedback_tokens_create",
        summary="Mint a feedback token for an end user's browser",
        description="Scope `ingest`. A short-lived token for one prediction of the key's "
        "project and one end user, limited to `kinds`; the browser sends it as "
        "`Authorization: FeedbackToken <token>`. The same token can be minted offline with "
        "the project's token secret (README). Unknown fields: 400; a prediction not logged in "
        "the key's project: 404.",
        auth=API_KEY_ONLY,
        request=FeedbackTokenInSerializer,
        parameters=ERROR_HEADERS,
        responses={
            201: OpenApiResponse(FeedbackTokenOutSerializer, description="Minted."),
            **errors_for(400, 401, 403, 404, 413, 415, 429),
        },
    )
    def post(self, request: Request) -> Response:
        context = caller_of(request).key
        assert context is not None  # HasIngestScope: a key
        token, expires_at = feedback_token_create(context=context, data=request.data)
        when = dt.datetime.fromtimestamp(expires_at, tz=dt.UTC)
        return Response(FeedbackTokenOutSerializer({"token": token, "expires_at": when}).data,
                        status=201)


class AllowedOriginsSerializer(serializers.Serializer):
    allowed_origins = serializers.ListField(
        child=serializers.CharField(),
        max_length=50,
        help_text="Origins (scheme://host[:port]) whose pages may call the feedback-token "
        "endpoints from a browser (CORS). No path, no trailing slash, no wildcard.",
    )


class ProjectOriginsView(APIView):
    """A project's allowed origins (CORS for the feedback-token endpoints): its admins."""

    permission_classes = [Needs.of(MANAGE)]

    @extend_schema(
        operation_id="project_allowed_origins_retrieve",
        summary="The origins whose pages may send browser feedback",
        description="Project admins. Another project (or one where the person is not an "
        "admin): 404.",
        parameters=ERROR_HEADERS,
        responses={200: AllowedOriginsSerializer, **errors_for(401, 403, 404, 429)},
    )
    def get(self, request: Request, slug: str) -> Response:
        project = caller_of(request).project(MANAGE, slug=slug)
        return Response({"allowed_origins": project.allowed_origins})

    @extend_schema(
        operation_id="project_allowed_origins_update",
        summary="Set the origins whose pages may send browser feedback",
        description="Project admins. Replaces the list; an origin that is not "
        "`scheme://host[:port]` (https, or http for development) is a 400 naming it. Takes "
        "effect at once for this process, within a second for the others.",
        request=AllowedOriginsSerializer,
        parameters=ERROR_HEADERS,
        responses={200: AllowedOriginsSerializer, **errors_for(400, 401, 403, 404, 429)},
    )
    def put(self, request: Request, slug: str) -> Response:
        project = caller_of(request).project(MANAGE, slug=slug)
        data = json_object(request.data)
        unknown = sorted(set(data) - {"allowed_origins"})
        if unknown:
            raise InvalidInput([
                FieldError(name, "unknown_field", "Only allowed_origins.") for name in unknown
            ])
        if "allowed_origins" not in data:
            raise InvalidInput.one("allowed_origins", "required", "A list of origins.")
        project = project_origins_set(project=project, origins=data["allowed_origins"])
        return Response({"allowed_origins": project.allowed_origins})

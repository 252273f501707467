"""Intake and feedback endpoints. Thin: parse, call a service or selector, render."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import generics, status
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ..errors import Conflict, FieldError, InvalidInput, NotFound
from ..models import Feedback, FeedbackCategory, Project
from ..selectors import category_list, dispute_get, feedback_list, projects_for_user
from ..services.intake import CONFLICT, INVALID, ItemResult, feedback_submit, predictions_log
from ..validation import BATCH_MAX_ITEMS
from .auth import key_context
from .filters import FeedbackFilterSet, StrictFilterBackend
from .permissions import AnyProjectCaller, HasIngestScope, ReadsProjectData
from .serializers import (
    CategorySerializer,
    DisputeSerializer,
    ErrorSerializer,
    FeedbackBatchInSerializer,
    FeedbackBatchOutSerializer,
    FeedbackInSerializer,
    FeedbackSerializer,
    PredictionBatchInSerializer,
    PredictionBatchOutSerializer,
    PredictionInSerializer,
    PredictionSerializer,
)

ERRORS = {
    code: OpenApiResponse(ErrorSerializer, description=description)
    for code, description in {
        400: "Invalid input; each error names its field.",
        401: "Missing or invalid credentials.",
        403: "Authenticated, but not allowed (scope or role).",
        404: "Not found (or another project's).",
        409: "Conflict with stored state (idempotency key or external_id reused with other content).",
        413: "Body larger than 1 MiB.",
        415: "Not JSON.",
        429: "Rate limited; see Retry-After.",
    }.items()
}


def errors_for(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: ERRORS[code] for code in codes}


def batch_items(data: Any) -> list[Any]:
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


def require_object(data: Any) -> dict:
    if not isinstance(data, dict):
        raise InvalidInput.one(None, "invalid_type", "The body must be a JSON object.")
    return data


def raise_for_single(result: ItemResult) -> None:
    if result.status == INVALID:
        raise InvalidInput(result.errors)
    if result.status == CONFLICT:
        raise Conflict(result.errors)


def batch_entry(result: ItemResult) -> dict[str, Any]:
    return {
        "index": result.index,
        "status": result.status,
        "id": result.obj.pk if result.ok else None,
        "errors": [error.as_dict() for error in result.errors],
    }


class PredictionsView(APIView):
    permission_classes = [HasIngestScope]

    @extend_schema(
        operation_id="predictions_log",
        summary="Log one prediction, or a batch of them",
        request=PolymorphicProxySerializer(
            component_name="PredictionOrBatch",
            serializers=[PredictionInSerializer, PredictionBatchInSerializer],
            resource_type_field_name=None,
        ),
        responses={
            201: OpenApiResponse(PredictionSerializer, description="Logged."),
            200: OpenApiResponse(
                PolymorphicProxySerializer(
                    component_name="PredictionOrBatchResult",
                    serializers=[PredictionSerializer, PredictionBatchOutSerializer],
                    resource_type_field_name=None,
                ),
                description="Already logged with the same content (single), or batch results.",
            ),
            **errors_for(400, 401, 403, 409, 413, 415, 429),
        },
    )
    def post(self, request: Request) -> Response:
        context = key_context(request)
        data = require_object(request.data)
        if "items" in data and "external_id" not in data:
            results = predictions_log(context=context, items=batch_items(data), prefix_items=True)
            body = [
                {**batch_entry(r), "external_id": r.obj.external_id if r.ok else None}
                for r in results
            ]
            return Response({"results": body}, status=status.HTTP_200_OK)
        (result,) = predictions_log(context=context, items=[data], prefix_items=False)
        raise_for_single(result)
        return Response(PredictionSerializer(result.obj).data, status=result.status)


class FeedbackPagination(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except Exception as exc:  # DRF raises NotFound for a malformed cursor
            raise InvalidInput.one("cursor", "invalid", "Invalid cursor.") from exc


class FeedbackView(generics.ListAPIView):
    """``GET``: read feedback (scope ``data`` or a project member). ``POST``: submit (``ingest``)."""

    serializer_class = FeedbackSerializer
    pagination_class = FeedbackPagination
    filter_backends = [StrictFilterBackend]
    filterset_class = FeedbackFilterSet

    def get_permissions(self) -> list[BasePermission]:
        if self.request.method == "POST":
            return [HasIngestScope()]
        return [ReadsProjectData()]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation
            return Feedback.objects.none()
        context = key_context(self.request)
        if context is not None:
            return feedback_list(project_ids=[context.project_id])
        return feedback_list(project_ids=projects_for_user(user=self.request.user).values("pk"))

    @extend_schema(
        operation_id="feedback_list",
        summary="Read feedback",
        parameters=[
            OpenApiParameter(
                "segment.<key>", str, description="Filter on a segment attribute, e.g. segment.locale=de-DE."
            )
        ],
        responses={200: FeedbackSerializer(many=True), **errors_for(400, 401, 403)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="feedback_submit",
        summary="Submit feedback: a rating, a report or a dispute",
        request=FeedbackInSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key", str, OpenApiParameter.HEADER, required=False,
                description="Up to 255 characters. A replay with the same body answers 200 with "
                "the stored feedback; with another body, 409.",
            )
        ],
        responses={
            201: OpenApiResponse(FeedbackSerializer, description="Stored."),
            200: OpenApiResponse(FeedbackSerializer, description="Replay of an idempotency key."),
            **errors_for(400, 401, 403, 409, 413, 415, 429),
        },
    )
    def post(self, request: Request) -> Response:
        data = require_object(request.data)
        key = request.headers.get("Idempotency-Key")
        (result,) = feedback_submit(
            context=key_context(request),
            items=[data],
            idempotency_keys=[key],
            prefix_items=False,
            item_key_field=False,
        )
        raise_for_single(result)
        return Response(FeedbackSerializer(result.obj).data, status=result.status)


class FeedbackBatchView(APIView):
    permission_classes = [HasIngestScope]

    @extend_schema(
        operation_id="feedback_submit_batch",
        summary="Submit up to 1,000 feedback items; valid ones are stored, others reported by index",
        request=FeedbackBatchInSerializer,
        responses={200: FeedbackBatchOutSerializer, **errors_for(400, 401, 403, 413, 415, 429)},
    )
    def post(self, request: Request) -> Response:
        items = batch_items(require_object(request.data))
        results = feedback_submit(context=key_context(request), items=items)
        return Response({"results": [batch_entry(r) for r in results]})


def caller_project(request: Request, *, param: str = "project") -> Project | int:
    """The project a request acts in: its key's, or ``?project=<slug>`` for a person."""
    context = key_context(request)
    if context is not None:
        return context.project_id
    slug = request.query_params.get(param)
    if not slug:
        raise InvalidInput.one(param, "required", "Name the project: ?project=<slug>.")
    project = projects_for_user(user=request.user).filter(slug=slug).first()
    if project is None:
        raise NotFound(FieldError(param, "not_found", f"No project {slug!r} of yours."))
    return project.pk


class CategoryListView(APIView):
    permission_classes = [AnyProjectCaller]

    @extend_schema(
        operation_id="categories_list",
        summary="The project's active feedback taxonomy",
        parameters=[
            OpenApiParameter("project", str, description="A person names the project (slug).")
        ],
        responses={200: CategorySerializer(many=True), **errors_for(400, 401, 404)},
    )
    def get(self, request: Request) -> Response:
        project_id = caller_project(request)
        categories: list[FeedbackCategory] = list(category_list(project_id=project_id))
        return Response(CategorySerializer(categories, many=True).data)


class DisputeDetailView(APIView):
    permission_classes = [AnyProjectCaller]

    @extend_schema(
        operation_id="disputes_retrieve",
        summary="How a dispute stands",
        responses={200: DisputeSerializer, **errors_for(401, 404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        context = key_context(request)
        if context is not None:
            project_ids = [context.project_id]
        else:
            project_ids = projects_for_user(user=request.user).values("pk")
        dispute = dispute_get(project_ids=project_ids, dispute_id=pk)
        if dispute is None:
            raise NotFound(FieldError("id", "not_found", f"No dispute {pk} in this project."))
        return Response(DisputeSerializer(dispute).data)

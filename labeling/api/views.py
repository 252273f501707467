"""Queues, sampling runs, and the reviewer flow (claim, label, release). Thin views."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.api.auth import key_context
from feedback.api.permissions import ReadsProjectData
from feedback.api.serializers import ErrorSerializer
from feedback.errors import FieldError, InvalidInput, NotFound
from feedback.selectors import active_categories, projects_for_user

from ..models import Queue, QueueItem, SamplingRun
from ..selectors import (
    MANAGE_ROLES,
    can_manage,
    can_read,
    can_review,
    claim_payload,
    queue_stats,
    queues_visible_to,
)
from ..services.claims import item_release, queue_claim_next
from ..services.labels import item_label_submit
from ..services.queues import queue_create, queue_update
from ..services.sampling import sampling_run_request
from .serializers import (
    ClaimSerializer,
    LabelInSerializer,
    LabelSerializer,
    QueueSerializer,
    QueueStatsSerializer,
    QueueWriteSerializer,
    SamplingRunSerializer,
)

ERRORS = {code: OpenApiResponse(ErrorSerializer) for code in (400, 401, 403, 404, 409)}


class IsPerson(BasePermission):
    message = "This endpoint is for people (a token or the admin session), not API keys."

    def has_permission(self, request, view) -> bool:
        return request.user.is_authenticated and key_context(request) is None


def visible_queues(request: Request):
    context = key_context(request)
    if context is not None:
        return (
            Queue.objects.filter(project_id=context.project_id)
            .select_related("project")
            .prefetch_related("reviewers")
        )
    return queues_visible_to(user=request.user)


def get_queue(request: Request, pk: int) -> Queue:
    queue = visible_queues(request).filter(pk=pk).first()
    if queue is None:
        raise NotFound(FieldError("id", "not_found", f"No queue {pk} of yours."))
    return queue


def require_manager(request: Request, queue: Queue) -> None:
    if key_context(request) is not None or not can_manage(queue=queue, user=request.user):
        raise PermissionDenied("Only the project's admins may change its queues.")


class QueueListView(generics.ListAPIView):
    serializer_class = QueueSerializer
    permission_classes = [ReadsProjectData]
    pagination_class = None

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Queue.objects.none()
        return visible_queues(self.request).order_by("project__slug", "name")

    def get_permissions(self):
        return [IsPerson()] if self.request.method == "POST" else [ReadsProjectData()]

    @extend_schema(
        operation_id="queues_create",
        request=QueueWriteSerializer,
        responses={201: QueueSerializer, **ERRORS},
    )
    def post(self, request: Request) -> Response:
        incoming = QueueWriteSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        project = (
            projects_for_user(user=request.user, roles=MANAGE_ROLES)
            .filter(slug=data["project"])
            .first()
        )
        if project is None:
            raise NotFound(
                FieldError(
                    "project", "not_found", f"No project {data['project']!r} that you administer."
                )
            )
        queue = queue_create(project=project, data=_plain(data))
        return Response(QueueSerializer(queue).data, status=status.HTTP_201_CREATED)


def _plain(data: dict) -> dict:
    """Validated data with date-times back as ISO strings (the policy is stored as JSON)."""
    data = dict(data)
    sampling = dict(data.get("sampling") or {})
    spec = dict(sampling.get("filter") or {})
    for key in ("created_after", "created_before"):
        if key in spec:
            spec[key] = spec[key].isoformat()
    if "filter" in sampling:
        sampling["filter"] = spec
    if "sampling" in data:
        data["sampling"] = sampling
    data.pop("project", None)
    return data


class QueueDetailView(APIView):
    permission_classes = [ReadsProjectData]

    def get_permissions(self):
        return [IsPerson()] if self.request.method == "PATCH" else [ReadsProjectData()]

    @extend_schema(operation_id="queues_retrieve", responses={200: QueueSerializer, **ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        return Response(QueueSerializer(get_queue(request, pk)).data)

    @extend_schema(
        operation_id="queues_partial_update",
        request=QueueWriteSerializer,
        responses={200: QueueSerializer, **ERRORS},
    )
    def patch(self, request: Request, pk: int) -> Response:
        queue = get_queue(request, pk)
        require_manager(request, queue)
        incoming = QueueWriteSerializer(data=request.data, partial=True)
        incoming.is_valid(raise_exception=True)
        if "project" in incoming.validated_data:
            raise InvalidInput.one(
                "project", "read_only", "A queue cannot move to another project."
            )
        queue = queue_update(queue=queue, data=_plain(incoming.validated_data))
        return Response(QueueSerializer(queue).data)


class QueueSampleView(APIView):
    permission_classes = [IsPerson]

    @extend_schema(
        operation_id="queues_sample",
        request=None,
        responses={202: OpenApiResponse(description='{"run": <id>}'), **ERRORS},
    )
    def post(self, request: Request, pk: int) -> Response:
        queue = get_queue(request, pk)
        require_manager(request, queue)
        run = sampling_run_request(queue=queue, actor=request.user)
        return Response({"run": run.pk}, status=status.HTTP_202_ACCEPTED)


class SamplingRunView(generics.RetrieveAPIView):
    serializer_class = SamplingRunSerializer
    permission_classes = [ReadsProjectData]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return SamplingRun.objects.none()
        return SamplingRun.objects.filter(queue__in=visible_queues(self.request))


class QueueStatsView(APIView):
    permission_classes = [ReadsProjectData]

    @extend_schema(operation_id="queues_stats", responses={200: QueueStatsSerializer, **ERRORS})
    def get(self, request: Request, pk: int) -> Response:
        queue = get_queue(request, pk)
        # Per-reviewer gold accuracy, and production label counts that a gold answer leaves
        # unchanged, would tell a reviewer which of their items were checks: the figures are for
        # the project's admins and data scientists (and data keys). Reviewers have their own
        # figures in the workspace.
        if key_context(request) is None and not can_read(queue=queue, user=request.user):
            raise PermissionDenied(
                "Queue statistics are for the project's admins and data scientists."
            )
        return Response(queue_stats(queue=queue))


def reviewable_queue(request: Request, pk: int) -> Queue:
    """The queue, if the caller reviews in it: 403 when they only see it, 404 otherwise."""
    queue = Queue.objects.select_related("project").filter(pk=pk).first()
    if queue is not None and can_review(queue=queue, user=request.user):
        return queue
    if queue is not None and queues_visible_to(user=request.user).filter(pk=pk).exists():
        raise PermissionDenied("You are not a reviewer of this queue.")
    raise NotFound(FieldError("id", "not_found", f"No queue {pk} of yours."))


class ClaimView(APIView):
    permission_classes = [IsAuthenticated, IsPerson]

    @extend_schema(
        operation_id="queues_claim",
        request=None,
        responses={
            200: ClaimSerializer,
            204: OpenApiResponse(description="Nothing left."),
            **ERRORS,
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        queue = reviewable_queue(request, pk)
        lease = queue_claim_next(queue=queue, reviewer=request.user)
        if lease is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        item = QueueItem.objects.select_related("queue", "prediction", "gold_item").get(
            pk=lease.item_id
        )
        return Response(claim_payload(item=item, lease_expires_at=lease.expires_at))


def reviewable_item(request: Request, pk: int) -> QueueItem:
    """The item, if the caller reviews its queue: 403 when they only see the queue, else 404.

    Refusals speak of the item only: the queue's id is not the caller's to learn.
    """
    item = QueueItem.objects.select_related("queue", "queue__project").filter(pk=pk).first()
    if item is not None and can_review(queue=item.queue, user=request.user):
        return item
    if item is not None and queues_visible_to(user=request.user).filter(pk=item.queue_id).exists():
        raise PermissionDenied("You are not a reviewer of this item's queue.")
    raise NotFound(FieldError("id", "not_found", f"No item {pk} of yours."))


class LabelCreateView(APIView):
    permission_classes = [IsAuthenticated, IsPerson]

    @extend_schema(
        operation_id="items_label",
        request=LabelInSerializer,
        responses={201: LabelSerializer, **ERRORS},
    )
    def post(self, request: Request, pk: int) -> Response:
        item = reviewable_item(request, pk)
        if not isinstance(request.data, dict):
            raise InvalidInput.one(None, "invalid_type", "The body must be a JSON object.")
        label = item_label_submit(
            item_id=item.pk,
            reviewer=request.user,
            data=request.data,
            categories=set(active_categories(project_id=item.queue.project_id)),
        )
        return Response(LabelSerializer(label).data, status=status.HTTP_201_CREATED)


class ReleaseView(APIView):
    permission_classes = [IsAuthenticated, IsPerson]

    @extend_schema(
        operation_id="items_release",
        request=None,
        responses={200: OpenApiResponse(description='{"released": true}'), **ERRORS},
    )
    def post(self, request: Request, pk: int) -> Response:
        item = reviewable_item(request, pk)
        item_release(item=item, reviewer=request.user)
        return Response({"released": True})

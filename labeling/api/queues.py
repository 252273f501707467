"""Queues over REST: list, create, read, change, statistics (API.md, "Queues and labeling").

Who: a project API key with the ``data`` scope reads its project's queues; a person sees the
queues of projects where they are a data scientist or admin, and the queues they review in.
Only a project's admins (people, never keys) create and change queues; statistics are for the
project's admins and data scientists (and ``data`` keys).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.api.caller import DATA, MANAGE, PEOPLE, Caller, Needs, caller_of
from feedback.api.schema import ERROR_HEADERS, errors_for
from feedback.errors import FieldError, InvalidInput, NotFound

from ..models import Queue
from ..payloads.queues import QueueWriteSerializer, queue_input
from ..selectors import queue_stats
from ..selectors.queues import queues_visible
from ..services.queues import queue_create, queue_update

ReadsQueues = Needs.of(DATA)
IsPerson = Needs.of(PEOPLE)
QUEUE_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The queue's id.")


def visible_queues(caller: Caller):
    """Queues of the projects the caller reads, and (a person) the queues they review in."""
    return queues_visible(
        project_ids=caller.project_ids(DATA), reviewer=caller.user if caller.is_person else None
    )


def get_queue(caller: Caller, pk: int) -> Queue:
    queue = visible_queues(caller).filter(pk=pk).first()
    if queue is None:
        raise NotFound(FieldError("id", "not_found", f"No queue {pk} of yours."))
    return queue


# --- serializers -----------------------------------------------------------------------------


class QueueSerializer(serializers.ModelSerializer):
    """A queue's configuration (API.md, "Queues and labeling")."""

    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    gold_set = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    reviewers = serializers.SerializerMethodField()
    sampling = serializers.SerializerMethodField()

    class Meta:
        model = Queue
        fields = [
            "id",
            "name",
            "project",
            "instructions",
            "label_choices",
            "overlap",
            "lease_seconds",
            "show_segments",
            "consensus",
            "active",
            "gold_set",
            "gold_rate",
            "notify_every",
            "reviewers",
            "sampling",
            "created_at",
        ]

    def get_reviewers(self, queue: Queue) -> list[str]:
        return sorted(user.get_username() for user in queue.reviewers.all())

    def get_sampling(self, queue: Queue) -> dict:
        return {
            "source": queue.source,
            "filter": queue.filter,
            "strategy": queue.strategy,
            "size": queue.size,
            "rate": queue.rate,
            "strata": queue.strata,
            "allocation": queue.allocation,
            "min_per_stratum": queue.min_per_stratum,
            "seed": queue.seed,
            "schedule_minutes": queue.schedule_minutes,
        }


class ReviewerStatsSerializer(serializers.Serializer):
    """One reviewer's figures in a queue. Production labels only, but for the gold figures."""

    username = serializers.CharField()
    labels = serializers.IntegerField()
    median_seconds = serializers.FloatField(allow_null=True)
    agreement_with_consensus = serializers.FloatField(
        allow_null=True,
        help_text="Share of the reviewer's decided items where their verdict is the consensus, "
        "over items another label (or an adjudication) also decided; null when there is no "
        "such item (no overlap).",
    )
    gold_checks = serializers.IntegerField(help_text="Hidden gold checks answered.")
    gold_correct = serializers.IntegerField(help_text="Of those, answered as expected.")
    gold_accuracy = serializers.FloatField(
        allow_null=True, help_text="gold_correct / gold_checks; null before the first check."
    )


class QueueStatsSerializer(serializers.Serializer):
    queue = serializers.IntegerField()
    items = serializers.DictField(child=serializers.IntegerField())
    labels = serializers.IntegerField(help_text="Production labels (gold answers aside).")
    gold_checks = serializers.IntegerField(help_text="Hidden gold checks answered.")
    agreement = serializers.DictField(child=serializers.FloatField(allow_null=True))
    reviewers = ReviewerStatsSerializer(many=True)


# --- views -----------------------------------------------------------------------------------


class QueueListView(generics.ListAPIView):
    serializer_class = QueueSerializer
    pagination_class = None

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Queue.objects.none()
        return visible_queues(caller_of(self.request)).order_by("project__slug", "name")

    def get_permissions(self):
        return [IsPerson()] if self.request.method == "POST" else [ReadsQueues()]

    @extend_schema(
        operation_id="queues_list",
        summary="Queues the caller sees",
        description="A project API key with the `data` scope (its project's queues), or a "
        "person (the queues of projects where they are a data scientist or admin, and the "
        "queues they review in). An `ingest`-only key: 403.",
        parameters=ERROR_HEADERS,
        responses={200: QueueSerializer(many=True), **errors_for(401, 403, 429)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="queues_create",
        summary="Create a queue",
        description="A project admin (a person, not a key). 404 for a project they do not "
        "administer.",
        request=QueueWriteSerializer,
        parameters=ERROR_HEADERS,
        responses={201: QueueSerializer, **errors_for(400, 401, 403, 404, 429)},
    )
    def post(self, request: Request) -> Response:
        data = queue_input(request.data)
        project = caller_of(request).project(MANAGE, slug=data.pop("project"))
        queue = queue_create(project=project, data=data)
        return Response(QueueSerializer(queue).data, status=status.HTTP_201_CREATED)


class QueueDetailView(APIView):
    def get_permissions(self):
        return [IsPerson()] if self.request.method == "PATCH" else [ReadsQueues()]

    @extend_schema(
        operation_id="queues_retrieve",
        summary="A queue's configuration",
        parameters=[QUEUE_ID, *ERROR_HEADERS],
        responses={200: QueueSerializer, **errors_for(401, 403, 404, 429)},
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(QueueSerializer(get_queue(caller_of(request), pk)).data)

    @extend_schema(
        operation_id="queues_partial_update",
        summary="Change a queue",
        description="A project admin. The fields given replace the stored ones; `project` "
        "cannot change.",
        request=QueueWriteSerializer,
        parameters=[QUEUE_ID, *ERROR_HEADERS],
        responses={200: QueueSerializer, **errors_for(400, 401, 403, 404, 429)},
    )
    def patch(self, request: Request, pk: int) -> Response:
        caller = caller_of(request)
        queue = get_queue(caller, pk)
        caller.require(MANAGE, project_id=queue.project_id)
        data = queue_input(request.data, partial=True)
        if "project" in data:
            raise InvalidInput.one(
                "project", "read_only", "A queue cannot move to another project."
            )
        queue = queue_update(queue=queue, data=data)
        return Response(QueueSerializer(queue).data)


class QueueStatsView(APIView):
    permission_classes = [ReadsQueues]

    @extend_schema(
        operation_id="queues_stats",
        summary="A queue's progress, agreement and reviewers' figures",
        description="The project's admins and data scientists, or a `data` key: 403 for a "
        "reviewer of the queue.",
        parameters=[QUEUE_ID, *ERROR_HEADERS],
        responses={200: QueueStatsSerializer, **errors_for(401, 403, 404, 429)},
    )
    def get(self, request: Request, pk: int) -> Response:
        caller = caller_of(request)
        queue = get_queue(caller, pk)
        # Per-reviewer gold accuracy, and production label counts that a gold answer leaves
        # unchanged, would tell a reviewer which of their items were checks: the figures are for
        # the project's admins and data scientists (and data keys). Reviewers have their own
        # figures in the workspace.
        caller.require(DATA, project_id=queue.project_id)
        return Response(queue_stats(queue=queue))

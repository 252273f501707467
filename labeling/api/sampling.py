"""Sampling over REST: ask for a sampling run of a queue (admins), and follow it."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.api.caller import MANAGE, caller_of
from feedback.api.schema import ERROR_HEADERS, errors_for

from ..models import SamplingRun
from ..services.sampling import sampling_run_request
from .queues import IsPerson, ReadsQueues, get_queue, visible_queues


class SamplingRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = SamplingRun
        fields = [
            "id",
            "queue",
            "status",
            "seed",
            "policy",
            "population",
            "sampled",
            "error",
            "trigger",
            "created_at",
            "started_at",
            "finished_at",
        ]


class QueueSampleView(APIView):
    permission_classes = [IsPerson]

    @extend_schema(
        operation_id="queues_sample",
        summary="Draw a sample into the queue now",
        description="A project admin. A worker runs it: poll `GET /sampling-runs/{run}`.",
        request=None,
        parameters=[
            OpenApiParameter("id", int, OpenApiParameter.PATH, description="The queue's id."),
            *ERROR_HEADERS,
        ],
        responses={
            202: OpenApiResponse(description='{"run": <id>}'),
            **errors_for(401, 403, 404, 429),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        caller = caller_of(request)
        queue = get_queue(caller, pk)
        caller.require(MANAGE, project_id=queue.project_id)
        run = sampling_run_request(queue=queue, actor=request.user)
        return Response({"run": run.pk}, status=status.HTTP_202_ACCEPTED)


class SamplingRunView(generics.RetrieveAPIView):
    serializer_class = SamplingRunSerializer
    permission_classes = [ReadsQueues]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return SamplingRun.objects.none()
        return SamplingRun.objects.filter(queue__in=visible_queues(caller_of(self.request)))

    @extend_schema(
        operation_id="sampling_runs_retrieve",
        summary="A sampling run",
        description="Anyone who sees its queue. An `ingest`-only key: 403; another project's "
        "run: 404.",
        parameters=[
            OpenApiParameter("id", int, OpenApiParameter.PATH, description="The run's id."),
            *ERROR_HEADERS,
        ],
        responses={200: SamplingRunSerializer, **errors_for(401, 403, 404, 429)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

"""The reviewer flow over REST: claim the next item, label it, or release it. People only.

A queue the caller sees but does not review in is 403; one they do not see, 404.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.api.caller import Caller, caller_of
from feedback.api.schema import ERROR_HEADERS, errors_for
from feedback.api.serializers import AnyJSONField, CorrectionField
from feedback.errors import FieldError, NotFound

from ..models import Label, Queue, QueueItem
from ..payloads.labels import LabelInSerializer, label_input
from ..selectors import can_review, claim_payload
from ..services.claims import item_release, queue_claim_next
from ..services.labels import item_label_submit
from .queues import IsPerson, visible_queues

QUEUE_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The queue's id.")
ITEM_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The item's id.")


class ClaimSerializer(serializers.Serializer):
    item = serializers.IntegerField()
    queue = serializers.IntegerField()
    lease_expires_at = serializers.DateTimeField()
    instructions = serializers.CharField()
    prediction = AnyJSONField()
    feedback = serializers.ListField(child=AnyJSONField())
    label_choices = serializers.ListField(child=serializers.CharField())
    categories = serializers.ListField(child=serializers.CharField())


class LabelSerializer(serializers.ModelSerializer):
    reviewer = serializers.CharField(source="reviewer.username", read_only=True)
    correction = CorrectionField()

    class Meta:
        model = Label
        fields = [
            "id",
            "item",
            "reviewer",
            "verdict",
            "categories",
            "true_label",
            "correction",
            "notes",
            "seconds_spent",
            "created_at",
            "updated_at",
        ]


def reviewable_queue(caller: Caller, pk: int) -> Queue:
    """The queue, if the caller reviews in it: 403 when they only see it, 404 otherwise."""
    queue = Queue.objects.select_related("project").filter(pk=pk).first()
    if queue is not None and can_review(queue=queue, user=caller.user):
        return queue
    if queue is not None and visible_queues(caller).filter(pk=pk).exists():
        raise PermissionDenied("You are not a reviewer of this queue.")
    raise NotFound(FieldError("id", "not_found", f"No queue {pk} of yours."))


def reviewable_item(caller: Caller, pk: int) -> QueueItem:
    """The item, if the caller reviews its queue: 403 when they only see the queue, else 404.

    Refusals speak of the item only: the queue's id is not the caller's to learn.
    """
    item = QueueItem.objects.select_related("queue", "queue__project").filter(pk=pk).first()
    if item is not None and can_review(queue=item.queue, user=caller.user):
        return item
    if item is not None and visible_queues(caller).filter(pk=item.queue_id).exists():
        raise PermissionDenied("You are not a reviewer of this item's queue.")
    raise NotFound(FieldError("id", "not_found", f"No item {pk} of yours."))


class ClaimView(APIView):
    permission_classes = [IsPerson]

    @extend_schema(
        operation_id="queues_claim",
        summary="Claim the next item to label",
        description="A reviewer of the queue. The item is leased to the caller until "
        "`lease_expires_at`; 204 when nothing is left for them.",
        request=None,
        parameters=[QUEUE_ID, *ERROR_HEADERS],
        responses={
            200: ClaimSerializer,
            204: OpenApiResponse(description="Nothing left."),
            **errors_for(401, 403, 404, 429),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        queue = reviewable_queue(caller_of(request), pk)
        lease = queue_claim_next(queue=queue, reviewer=request.user)
        if lease is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        item = QueueItem.objects.select_related("queue", "prediction", "gold_item").get(
            pk=lease.item_id
        )
        return Response(claim_payload(item=item, lease_expires_at=lease.expires_at))


class LabelCreateView(APIView):
    permission_classes = [IsPerson]

    @extend_schema(
        operation_id="items_label",
        summary="Label a claimed item",
        description="Needs the caller's live lease on the item (409 otherwise, and for a "
        "second label). A verdict contradicting the true label is 400 `contradicts_verdict` "
        "unless `confirm_contradiction` is true.",
        request=LabelInSerializer,
        parameters=[ITEM_ID, *ERROR_HEADERS],
        responses={201: LabelSerializer, **errors_for(400, 401, 403, 404, 409, 429)},
    )
    def post(self, request: Request, pk: int) -> Response:
        item = reviewable_item(caller_of(request), pk)
        label = item_label_submit(
            item_id=item.pk, reviewer=request.user, answer=label_input(request.data)
        )
        return Response(LabelSerializer(label).data, status=status.HTTP_201_CREATED)


class ReleaseView(APIView):
    permission_classes = [IsPerson]

    @extend_schema(
        operation_id="items_release",
        summary="Give a claimed item back",
        request=None,
        parameters=[ITEM_ID, *ERROR_HEADERS],
        responses={
            200: OpenApiResponse(description='{"released": true}'),
            **errors_for(401, 403, 404, 409, 429),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        item = reviewable_item(caller_of(request), pk)
        item_release(item=item, reviewer=request.user)
        return Response({"released": True})

"""Webhook endpoints and their deliveries over REST: project admins only. Thin views."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback.api.auth import key_context
from feedback.api.schema import errors_for
from feedback.errors import FieldError, InvalidInput, NotFound
from feedback.models import Membership

from ..models import Webhook, WebhookDelivery
from ..selectors import (
    deliveries_of,
    deliveries_visible_to,
    projects_administered,
    webhooks_visible_to,
)
from ..services.dispatch import delivery_redeliver
from ..services.endpoints import (
    webhook_create,
    webhook_delete,
    webhook_rotate_secret,
    webhook_test_send,
    webhook_update,
)
from .serializers import (
    DeliverySerializer,
    WebhookInSerializer,
    WebhookSerializer,
    WebhookWithSecretSerializer,
)

DELIVERIES_DEFAULT, DELIVERIES_MAX = 100, 1000
ID = OpenApiParameter("id", int, OpenApiParameter.PATH)


class IsProjectAdmin(BasePermission):
    """A person (token or session, never an API key) who is an admin of some project; which
    project's objects they reach is decided by the queries (others': 404).

    Kept self-contained on purpose (``projects_for_user`` with the admin role) so it can move
    to a shared caller object later."""

    message = "Webhooks are managed by the project's admins (a person, not an API key)."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated) or key_context(request) is not None:
            return False
        return user.is_superuser or Membership.objects.filter(
            user=user, role=Membership.Role.ADMIN
        ).exists()


def _webhook(request: Request, pk: int) -> Webhook:
    webhook = webhooks_visible_to(user=request.user).filter(pk=pk).first()
    if webhook is None:
        raise NotFound(
            FieldError("id", "not_found", f"No webhook {pk} in a project you administer.")
        )
    return webhook


def _body(request: Request) -> dict:
    if not isinstance(request.data, dict):
        raise InvalidInput.one(None, "invalid_type", "Expected a JSON object.")
    unknown = sorted(set(request.data) - set(WebhookInSerializer().fields))
    if unknown:
        raise InvalidInput([FieldError(name, "unknown_field", "Not a webhook field.")
                            for name in unknown])
    return dict(request.data)


class WebhookListView(APIView):
    permission_classes = [IsProjectAdmin]

    @extend_schema(
        operation_id="webhooks_list",
        summary="The webhook endpoints of the projects you administer",
        responses={200: WebhookSerializer(many=True), **errors_for(401, 403, 429)},
    )
    def get(self, request: Request) -> Response:
        return Response(WebhookSerializer(webhooks_visible_to(user=request.user), many=True).data)

    @extend_schema(
        operation_id="webhooks_create",
        summary="Add an endpoint (the response shows its secret, once)",
        request=WebhookInSerializer,
        responses={201: WebhookWithSecretSerializer, **errors_for(400, 401, 403, 404, 429)},
    )
    def post(self, request: Request) -> Response:
        data = _body(request)
        slug = data.pop("project", None)
        if not isinstance(slug, str) or not slug:
            raise InvalidInput.one("project", "required", "The project's slug.")
        project = projects_administered(user=request.user).filter(slug=slug).first()
        if project is None:
            raise NotFound(FieldError("project", "not_found",
                                      f"No project {slug!r} that you administer."))
        webhook = webhook_create(project=project, data=data, actor=request.user)
        return Response(WebhookWithSecretSerializer(webhook).data, status=status.HTTP_201_CREATED)


class WebhookDetailView(APIView):
    permission_classes = [IsProjectAdmin]

    @extend_schema(operation_id="webhooks_retrieve", parameters=[ID],
                   responses={200: WebhookSerializer, **errors_for(401, 403, 404, 429)})
    def get(self, request: Request, pk: int) -> Response:
        return Response(WebhookSerializer(_webhook(request, pk)).data)

    @extend_schema(
        operation_id="webhooks_partial_update",
        summary="Change an endpoint (active: true reactivates a disabled one)",
        parameters=[ID],
        request=WebhookInSerializer(partial=True),
        responses={200: WebhookSerializer, **errors_for(400, 401, 403, 404, 429)},
    )
    def patch(self, request: Request, pk: int) -> Response:
        webhook = _webhook(request, pk)
        data = _body(request)
        if "project" in data:
            raise InvalidInput.one("project", "read_only", "An endpoint stays in its project.")
        return Response(WebhookSerializer(webhook_update(webhook=webhook, data=data)).data)

    @extend_schema(operation_id="webhooks_destroy", parameters=[ID],
                   responses={204: None, **errors_for(401, 403, 404, 429)})
    def delete(self, request: Request, pk: int) -> Response:
        webhook_delete(webhook=_webhook(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecretView(APIView):
    permission_classes = [IsProjectAdmin]

    @extend_schema(
        operation_id="webhooks_rotate_secret",
        summary="Replace the signing secret (shown in this response only)",
        parameters=[ID], request=None,
        responses={200: WebhookWithSecretSerializer, **errors_for(401, 403, 404, 429)},
    )
    def post(self, request: Request, pk: int) -> Response:
        webhook = webhook_rotate_secret(webhook=_webhook(request, pk))
        return Response(WebhookWithSecretSerializer(webhook).data)


class WebhookTestView(APIView):
    permission_classes = [IsProjectAdmin]

    @extend_schema(
        operation_id="webhooks_test",
        summary="Send a webhook.test event now",
        description="Makes the first attempt in the request (at most the webhook timeout) and "
        "returns the delivery: `succeeded`, or `retrying` with `last_error` / "
        "`last_response_status` saying what went wrong.",
        parameters=[ID], request=None,
        responses={200: DeliverySerializer, **errors_for(401, 403, 404, 429)},
    )
    def post(self, request: Request, pk: int) -> Response:
        delivery = webhook_test_send(webhook=_webhook(request, pk), actor=request.user)
        return Response(DeliverySerializer(delivery).data)


class WebhookDeliveriesView(APIView):
    permission_classes = [IsProjectAdmin]

    @extend_schema(
        operation_id="webhooks_deliveries",
        summary="An endpoint's deliveries, newest first, with their attempt logs",
        parameters=[
            ID,
            OpenApiParameter("status", str, enum=WebhookDelivery.Status.values),
            OpenApiParameter("limit", int, description=f"1 to {DELIVERIES_MAX}, default "
                             f"{DELIVERIES_DEFAULT}."),
        ],
        responses={200: DeliverySerializer(many=True), **errors_for(400, 401, 403, 404, 429)},
    )
    def get(self, request: Request, pk: int) -> Response:
        webhook = _webhook(request, pk)
        rows = deliveries_of(webhook=webhook)
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in WebhookDelivery.Status.values:
                raise InvalidInput.one("status", "invalid_choice",
                                       f"One of {', '.join(WebhookDelivery.Status.values)}.")
            rows = rows.filter(status=wanted)
        raw = request.query_params.get("limit", str(DELIVERIES_DEFAULT))
        if not raw.isdigit() or not 1 <= int(raw) <= DELIVERIES_MAX:
            raise InvalidInput.one("limit", "invalid", f"A whole number, 1 to {DELIVERIES_MAX}.")
        return Response(DeliverySerializer(rows[: int(raw)], many=True).data)


class DeliveryRedeliverView(APIView):
    permission_classes = [IsProjectAdmin]

    @extend_schema(
        operation_id="webhook_deliveries_redeliver",
        summary="Send a delivery again (same webhook-id), whatever its status",
        parameters=[ID], request=None,
        responses={202: DeliverySerializer, **errors_for(401, 403, 404, 409, 429)},
    )
    def post(self, request: Request, pk: int) -> Response:
        delivery = deliveries_visible_to(user=request.user).filter(pk=pk).first()
        if delivery is None:
            raise NotFound(FieldError("id", "not_found", f"No delivery {pk} of yours."))
        delivery = delivery_redeliver(delivery=delivery)
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

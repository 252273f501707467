from __future__ import annotations

from rest_framework import serializers

from feedback.services.events import EVENT_TYPES

from ..models import Webhook, WebhookDelivery

EVENT_CHOICES = ["*", *EVENT_TYPES]


class WebhookInSerializer(serializers.Serializer):
    """What a client sends (documentation; the service validates and names each field)."""

    project = serializers.SlugField(help_text="The project's slug (on create; cannot change).")
    url = serializers.URLField(max_length=2000, help_text="https://… (no private addresses).")
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_CHOICES),
        help_text='Event types, or ["*"] for every event.',
    )
    format = serializers.ChoiceField(choices=Webhook.Format.choices, required=False,
                                     default="standard")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    active = serializers.BooleanField(required=False, default=True)


class WebhookSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    events = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = Webhook
        fields = [
            "id", "project", "url", "events", "format", "description", "active",
            "disabled_at", "disabled_reason", "created_at", "updated_at", "secret_rotated_at",
        ]
        read_only_fields = fields


class WebhookWithSecretSerializer(WebhookSerializer):
    secret = serializers.CharField(
        read_only=True, help_text="whsec_…: shown in this response only, never again."
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class AttemptSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    status = serializers.IntegerField(allow_null=True, help_text="HTTP status, null: none.")
    duration_ms = serializers.FloatField()
    error = serializers.CharField(allow_blank=True)


class DeliverySerializer(serializers.ModelSerializer):
    event_id = serializers.CharField(source="event.uid", read_only=True,
                                     help_text="The webhook-id header of every attempt.")
    event_type = serializers.CharField(source="event.type", read_only=True)
    attempt_log = AttemptSerializer(source="log", many=True, read_only=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id", "webhook", "event_id", "event_type", "attempts", "status",
            "last_response_status", "last_error", "next_attempt_at", "delivered_at",
            "created_at", "attempt_log",
        ]
        read_only_fields = fields

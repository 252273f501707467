"""Webhook endpoints of a project and the deliveries of outbox events to them."""

from __future__ import annotations

import base64
import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from feedback.models import OutboxEvent, Project

SECRET_PREFIX = "whsec_"


def new_webhook_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes (the Standard Webhooks secret format)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class Webhook(models.Model):
    """An endpoint of a project, subscribed to event types (``["*"]``: all)."""

    class Format(models.TextChoices):
        STANDARD = "standard", "Standard Webhooks JSON"
        SLACK = "slack", "Slack-compatible"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    format = models.CharField(max_length=10, choices=Format.choices, default=Format.STANDARD)
    description = models.TextField(blank=True)
    active = models.BooleanField(default=True)
    # Kept in clear: every delivery is signed with it. Shown once (create, rotate), never again.
    secret = models.CharField(max_length=100, default=new_webhook_secret, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )
    secret_rotated_at = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    # First failed attempt since the last success; failing for a day disables the endpoint.
    failing_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project_id", "id"]

    def __str__(self) -> str:
        return f"{self.url} ({self.project})"

    def subscribed_to(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events


class WebhookDelivery(models.Model):
    """One event for one endpoint: attempts until a 2xx, a 410, or the retries run out."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RETRYING = "retrying", "Retrying"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(OutboxEvent, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    # Set while an attempt is in flight (the claim): a duplicate task finds it taken.
    locked_until = models.DateTimeField(null=True, blank=True)
    # One entry per attempt: {"at", "status", "duration_ms", "error"} (the last 50).
    log = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["webhook", "event"], name="delivery_once_per_event")
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status__in=["pending", "retrying"]),
                name="delivery_due",
            ),
        ]

    def __str__(self) -> str:
        return f"delivery #{self.pk} ({self.status})"


class EventCursor(models.Model):
    """How far a sweep has read a source of events for a project (``dispute.opened``)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    type = models.CharField(max_length=64)
    position = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "type"], name="event_cursor_unique")
        ]

    def __str__(self) -> str:
        return f"{self.project_id} {self.type} @ {self.position}"

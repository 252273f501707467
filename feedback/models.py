"""Intake models: projects, their keys and taxonomy, model outputs and what users said of them.

Business rules live in ``feedback/services``; models carry data, choices and the database
constraints that back the rules (one external_id per project, one idempotency key per project).
"""

from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from .fields import CategorySlugsField


def new_project_secret() -> str:
    return secrets.token_hex(32)


class Project(models.Model):
    """One AI product or workflow. Its ``secret`` pseudonymises end-user ids (HMAC)."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    secret = models.CharField(max_length=64, default=new_project_secret, editable=False)
    scrub_pii = models.BooleanField(
        default=True, help_text="Replace emails, phones, cards and IPs in comments and corrections."
    )
    # Browser feedback tokens (feedback/services/feedback_tokens.py). The secret signs tokens
    # (HMAC-SHA256): the server must read it back to verify one, so it is stored as it is, like
    # ``secret`` above (a hash could not verify an HMAC). It is shown once, when made or
    # rotated (manage.py rotate_token_secret, the admin's action); blank: no tokens yet.
    token_secret = models.CharField(max_length=64, blank=True, editable=False)
    # The secret before the last rotation, accepted until ``token_secret_previous_until`` when
    # the rotation asked for a grace period (null: rotated without one, old tokens refused).
    token_secret_previous = models.CharField(max_length=64, blank=True, editable=False)
    token_secret_previous_until = models.DateTimeField(null=True, blank=True, editable=False)
    token_secret_rotated_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Origins (scheme://host[:port]) whose pages may call the token endpoints (CORS).
    allowed_origins = models.JSONField(
        default=list,
        blank=True,
        help_text="Origins whose pages embed the feedback widget, e.g. https://app.example.com "
        "(CORS on the token-authenticated endpoints only).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects", blank=True
    )

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    """A person's role in a project. The role decides what they may do there."""

    class Role(models.TextChoices):
        REVIEWER = "reviewer", "Reviewer"
        DATA_SCIENTIST = "data_scientist", "Data scientist"
        ADMIN = "admin", "Project admin"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.REVIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


class PersonalToken(models.Model):
    """A person's API token (``Authorization: Token …``): as with project keys, only the sha256
    of the token and its first characters are stored. The token itself is shown once, by
    ``manage.py drf_create_token``. One per person; replacing it makes a new one."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="personal_token"
    )
    prefix = models.CharField(
        max_length=16, help_text="The token's first characters, to recognise it."
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "personal API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"


class ApiKey(models.Model):
    """A project API key. Only the sha256 of the key and its first characters are stored."""

    class Scope(models.TextChoices):
        INGEST = "ingest", "ingest"
        DATA = "data", "data"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(
        max_length=16, help_text="The key's first characters, to recognise it."
    )
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.project.slug}: {','.join(self.scopes)})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class FeedbackCategory(models.Model):
    """One entry of a project's "what was wrong" taxonomy.

    The slug is immutable once created (``category_save`` refuses a change, the admin shows it
    read-only): feedback stores the slugs themselves (``Feedback.categories``), and apps send
    them. Name, description, active and position stay editable.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="categories")
    slug = models.SlugField(max_length=64)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    active = models.BooleanField(default=True)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["project", "position", "slug"]
        verbose_name_plural = "feedback categories"
        constraints = [
            models.UniqueConstraint(fields=["project", "slug"], name="category_unique_slug")
        ]

    def __str__(self) -> str:
        return self.slug


class Prediction(models.Model):
    """One model output, identified by the app's ``external_id`` (unique per project)."""

    # No index of its own: every index below starts with project. A lone (project) index also
    # tempted PostgreSQL's generic plan for the single-feedback INSERT (prepared) to scan a
    # project's predictions instead of probing (project, external_id).
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="predictions", db_index=False
    )
    external_id = models.CharField(max_length=255)
    model = models.CharField(max_length=200, blank=True)
    model_version = models.CharField(max_length=100, blank=True)
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    label = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001  null: not a classifier
    confidence = models.FloatField(null=True, blank=True)
    segment = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    # sha256 of the canonical content, so a re-post is compared without re-reading the JSON.
    content_hash = models.CharField(max_length=64, editable=False)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"], name="prediction_unique_external_id"
            ),
            models.CheckConstraint(
                condition=Q(confidence__isnull=True)
                | (Q(confidence__gte=0) & Q(confidence__lte=1)),
                name="prediction_confidence_0_1",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "model_version"], name="prediction_model_version"),
            models.Index(fields=["project", "occurred_at"], name="prediction_occurred_at"),
        ]

    def __str__(self) -> str:
        return self.external_id


class Feedback(models.Model):
    """What an end user said of one prediction: a rating, a report or a formal dispute."""

    class Kind(models.TextChoices):
        RATING = "rating", "Rating"
        REPORT = "report", "Report"
        DISPUTE = "dispute", "Dispute"

    class Origin(models.TextChoices):
        KEY = "key", "API key"  # the app's server (or a person, or a seed)
        TOKEN = "token", "Feedback token"  # the end user's browser

    class DisputeStatus(models.TextChoices):
        OPEN = "open", "Open"
        IN_REVIEW = "in_review", "In review"
        UPHELD = "upheld", "Upheld"
        REJECTED = "rejected", "Rejected"

    # No index of its own: every index below starts with project (intake pays for each index
    # on every row; bench profile).
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="feedback", db_index=False
    )
    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="feedback")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    rating = models.SmallIntegerField(null=True, blank=True)
    # Sorted slugs of the project's taxonomy, on the row: link rows tripled the rows intake
    # writes per item (bench: COPY of rows + links ~2x slower). Filter with the
    # ``contains_any`` lookup; on PostgreSQL a GIN index (jsonb_path_ops, migration 0003)
    # serves it.
    categories = CategorySlugsField(default=list, blank=True)
    comment = models.TextField(blank=True)
    correction = models.JSONField(null=True, blank=True)
    end_user = models.CharField(
        max_length=64, blank=True, help_text="HMAC-SHA256 of the app's end-user id."
    )
    segment = models.JSONField(default=dict, blank=True)
    # null (not ""): the unique constraint must ignore feedback sent without a key
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    request_hash = models.CharField(max_length=64, blank=True, editable=False)
    # Dispute lifecycle; null for ratings and reports.
    status = models.CharField(  # noqa: DJ001  null: not a dispute
        max_length=10, choices=DisputeStatus.choices, null=True, blank=True
    )
    resolution_note = models.TextField(blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # Indexed only where set (feedback_resolved_by below): new feedback never is, so intake
    # adds no index entry for it.
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    # Who sent it. Token feedback is one end user speaking for themselves: one rating per
    # (prediction, end user), updated in place when they change their mind, and one dispute.
    origin = models.CharField(
        max_length=8, choices=Origin.choices, default=Origin.KEY, db_default=Origin.KEY
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # When the row last changed in place (a token rating changed by its end user); null for
    # rows never changed, so intake's inserts leave it (and its partial index) alone. The
    # rollup step recounts the hours of rows revised since its watermark.
    revised_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "feedback"
        constraints = [
            models.UniqueConstraint(
                fields=["project", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="feedback_unique_idempotency_key",
            ),
            models.CheckConstraint(
                condition=(Q(kind="dispute") & Q(status__isnull=False))
                | (~Q(kind="dispute") & Q(status__isnull=True)),
                name="feedback_status_only_for_disputes",
            ),
            models.CheckConstraint(
                condition=Q(rating__isnull=True) | Q(rating__in=[1, -1]),
                name="feedback_rating_plus_minus_one",
            ),
            # Browser feedback: one rating (updated in place) and one dispute per end user and
            # prediction. Feedback from keys is the app's to deduplicate (idempotency keys).
            models.UniqueConstraint(
                fields=["prediction", "end_user"],
                condition=Q(origin="token", kind="rating"),
                name="feedback_token_one_rating",
            ),
            models.UniqueConstraint(
                fields=["prediction", "end_user"],
                condition=Q(origin="token", kind="dispute"),
                name="feedback_token_one_dispute",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "kind", "status"], name="feedback_kind_status"),
            models.Index(fields=["project", "created_at"], name="feedback_created_at"),
            models.Index(
                fields=["resolved_by"],
                condition=Q(resolved_by__isnull=False),
                name="feedback_resolved_by",
            ),
            models.Index(
                fields=["revised_at"],
                condition=Q(revised_at__isnull=False),
                name="feedback_revised_at",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"


class DisputeEvent(models.Model):
    """One transition of a dispute's lifecycle: who moved it, from where to where, why."""

    feedback = models.ForeignKey(Feedback, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=10, choices=Feedback.DisputeStatus.choices)
    to_status = models.CharField(max_length=10, choices=Feedback.DisputeStatus.choices)
    note = models.TextField(blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.feedback_id}: {self.from_status} → {self.to_status}"


def new_event_uid() -> str:
    return f"evt_{uuid.uuid4().hex}"


class OutboxEvent(models.Model):
    """Something Redress tells the outside world, written in the transaction of the change it
    reports (so a rolled-back change sends nothing). The ``webhooks`` app fans each row out to
    the project's subscribed endpoints; ``uid`` is the ``webhook-id`` receivers deduplicate on.
    """

    uid = models.CharField(max_length=40, unique=True, default=new_event_uid, editable=False)
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="outbox_events", db_index=False
    )
    type = models.CharField(max_length=64)
    data = models.JSONField(default=dict)
    # Makes an event once-only when set (e.g. "dispute.opened:42", emitted by a sweep).
    dedupe_key = models.CharField(max_length=128, null=True, blank=True, unique=True)
    # Addressed to one endpoint only (a test send), not to the project's subscribers.
    only_webhook_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Set once deliveries exist for every endpoint subscribed at that time; the sweep fans out
    # rows still null (their task was lost with the broker).
    fanned_out_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["project", "created_at"], name="outbox_project_created"),
            models.Index(
                fields=["created_at"],
                condition=Q(fanned_out_at__isnull=True),
                name="outbox_not_fanned_out",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.uid}"

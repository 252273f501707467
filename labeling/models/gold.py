"""Gold sets: small, private, versioned evaluation sets, frozen for good once published.

A version is a draft until it is published; publishing records a sha256 over its canonical
content and from then on neither the model layer (``labeling/services/goldsets.py``) nor, on
PostgreSQL, a trigger lets anything change its items. Items are frozen copies: lineage to the
prediction, queue item and labels they came from is kept by value, so editing or deleting a
source never touches a published item.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from feedback.models import Project

from .queues import Label


class GoldSet(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="gold_sets")
    slug = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project", "slug"]
        constraints = [
            models.UniqueConstraint(fields=["project", "slug"], name="goldset_unique_slug"),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.slug}"


class GoldSetVersion(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"

    gold_set = models.ForeignKey(GoldSet, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    parent = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="children",
        help_text="The published version this draft was copied from.",
    )
    item_count = models.PositiveIntegerField(default=0)
    checksum = models.CharField(max_length=64, blank=True)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["gold_set", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["gold_set", "number"], name="goldversion_unique_number"
            ),
            # One draft at a time: a new draft is always a copy of the latest published version.
            models.UniqueConstraint(
                fields=["gold_set"], condition=Q(status="draft"), name="goldversion_one_draft"
            ),
            models.CheckConstraint(
                condition=Q(status="draft") | (Q(published_at__isnull=False) & ~Q(checksum="")),
                name="goldversion_published_has_checksum",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.gold_set} v{self.number} ({self.status})"


class GoldItem(models.Model):
    version = models.ForeignKey(GoldSetVersion, on_delete=models.CASCADE, related_name="items")
    key = models.CharField(max_length=255)
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    expected_verdict = models.CharField(max_length=10, choices=Label.Verdict.choices, blank=True)
    expected_label = models.CharField(max_length=200, blank=True)
    expected_categories = models.JSONField(default=list, blank=True)
    segment = models.JSONField(default=dict, blank=True)
    # Lineage, by value (see the module docstring).
    source_prediction_id = models.BigIntegerField(null=True, blank=True)
    source_external_id = models.CharField(max_length=255, blank=True)
    source_model_version = models.CharField(max_length=100, blank=True)
    source_item_id = models.BigIntegerField(null=True, blank=True)
    source_label_ids = models.JSONField(default=list, blank=True)
    source_agreement = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["version", "key"]
        constraints = [
            models.UniqueConstraint(fields=["version", "key"], name="golditem_unique_key"),
        ]

    def __str__(self) -> str:
        return f"{self.key} in {self.version}"

"""Exports: labeled batches and gold-set snapshots as files, built by a Celery task.

The row is created ``pending`` by a service, claimed ``running`` by the task with a conditional
update, and only marked ``done`` after the file is complete in Django storage with its sha256;
a worker that dies half-way leaves ``running`` (picked up again by the recovery sweep) or
``failed``, never a half file marked done.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from feedback.models import Project

from .jobs import BackgroundJob


class Export(BackgroundJob):
    class Format(models.TextChoices):
        JSONL = "jsonl", "JSON lines"
        CSV = "csv", "CSV"
        PARQUET = "parquet", "Parquet"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="exports")
    queue = models.ForeignKey(
        "labeling.Queue", null=True, blank=True, on_delete=models.SET_NULL, related_name="exports"
    )
    gold_version = models.ForeignKey(
        "labeling.GoldSetVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="exports",
        help_text="Set for a gold-set snapshot export.",
    )
    format = models.CharField(max_length=10, choices=Format.choices)
    # The request as accepted (filter, include_labels, split, exclude_gold_from_train).
    spec = models.JSONField(default=dict, blank=True)
    rows = models.PositiveBigIntegerField(default=0)
    rows_per_split = models.JSONField(default=dict, blank=True)
    checksum = models.CharField(max_length=64, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    manifest = models.JSONField(default=dict, blank=True)
    file = models.FileField(upload_to="exports/", max_length=500, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta(BackgroundJob.Meta):
        indexes = [models.Index(fields=["status", "created_at"], name="export_status_created")]
        constraints = [
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=1), name="export_progress_0_1"
            ),
            models.CheckConstraint(
                condition=~Q(status="done") | ~Q(checksum=""), name="export_done_has_checksum"
            ),
        ]

    def __str__(self) -> str:
        return f"export {self.pk} ({self.format}, {self.status})"

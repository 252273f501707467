"""Audits: segment-level error and fairness figures over labeled items, stored with inputs.

``params`` keeps what was asked (segments, intersectional, positive_label, reference, min_n,
tolerance, confidence, weighted) and ``result`` what was found (overall and per segment), so two
audits — say of two model versions — can be put side by side later.
"""

from __future__ import annotations

from django.db import models

from feedback.models import Project

from .jobs import BackgroundJob


class Audit(BackgroundJob):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="audits")
    # The source as requested, plus typed links for the admin and for queries.
    source = models.JSONField(default=dict)
    queue = models.ForeignKey(
        "labeling.Queue", null=True, blank=True, on_delete=models.SET_NULL, related_name="audits"
    )
    export = models.ForeignKey(
        "labeling.Export", null=True, blank=True, on_delete=models.SET_NULL, related_name="audits"
    )
    gold_version = models.ForeignKey(
        "labeling.GoldSetVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audits",
    )
    model_version = models.CharField(max_length=100, blank=True)
    params = models.JSONField(default=dict)
    result = models.JSONField(null=True, blank=True)
    # Claims and final writes are keyed on it: a run handed back by ``audits_recover`` can
    # never be overwritten by the attempt it replaced.
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta(BackgroundJob.Meta):
        indexes = [models.Index(fields=["status", "created_at"], name="audit_status_created")]

    def __str__(self) -> str:
        return f"audit {self.pk} ({self.status})"

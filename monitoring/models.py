"""Monitoring: hourly rollups of what users and reviewers said, and alert rules over them.

Rollups are counts per project x model_version x hour x (segment key, value); the project-wide
row has ``segment_key == ""``. Every count is bucketed by the hour of the *prediction*
(``occurred_at``): feedback about last week's prediction, a dispute resolved a month later, a
review completed tomorrow all count in the prediction's hour, so a rate's numerator and
denominator describe the same predictions (see ``monitoring/rollups.py``).

This app reads ``feedback`` and ``labeling``; neither imports it.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from feedback.models import Project


class MonitoringSettings(models.Model):
    """Which segment keys of a project's predictions get rollups of their own."""

    project = models.OneToOneField(
        Project, on_delete=models.CASCADE, related_name="monitoring_settings"
    )
    monitored_segment_keys = models.JSONField(
        default=list,
        blank=True,
        help_text='Segment keys of predictions to monitor value by value, e.g. ["locale"].',
    )

    class Meta:
        verbose_name = "monitoring settings"
        verbose_name_plural = "monitoring settings"

    def __str__(self) -> str:
        return f"monitoring of {self.project}"


class RollupState(models.Model):
    """The watermarks of the incremental rollup (one row). Advanced in the same transaction as
    the rollup rows it accounts for."""

    prediction_id = models.BigIntegerField(default=0)
    feedback_id = models.BigIntegerField(default=0)
    dispute_event_id = models.BigIntegerField(default=0)
    # Reviews change in place (labels edited, items completed): a time watermark.
    reviews_until = models.DateTimeField(null=True, blank=True)
    # Token ratings change in place (``Feedback.revised_at``): a time watermark too.
    revisions_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"rollup watermarks at {self.updated_at}"


class MetricRollup(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    model_version = models.CharField(max_length=100, blank=True)
    hour = models.DateTimeField()
    segment_key = models.CharField(max_length=64, blank=True)
    segment_value = models.CharField(max_length=200, blank=True)
    predictions = models.PositiveIntegerField(default=0)
    ratings_positive = models.PositiveIntegerField(default=0)
    ratings_negative = models.PositiveIntegerField(default=0)
    reports = models.PositiveIntegerField(default=0)
    disputes = models.PositiveIntegerField(default=0)
    disputes_upheld = models.PositiveIntegerField(default=0)
    disputes_rejected = models.PositiveIntegerField(default=0)
    reviews_correct = models.PositiveIntegerField(default=0)
    reviews_incorrect = models.PositiveIntegerField(default=0)
    reviews_unsure = models.PositiveIntegerField(default=0)
    # Sums of 1/pi and 1/pi^2 (the latter for Kish's effective n of a weighted rate).
    weight_correct = models.FloatField(default=0)
    weight_incorrect = models.FloatField(default=0)
    weight2_correct = models.FloatField(default=0)
    weight2_incorrect = models.FloatField(default=0)

    COUNTS = (
        "predictions",
        "ratings_positive",
        "ratings_negative",
        "reports",
        "disputes",
        "disputes_upheld",
        "disputes_rejected",
        "reviews_correct",
        "reviews_incorrect",
        "reviews_unsure",
        "weight_correct",
        "weight_incorrect",
        "weight2_correct",
        "weight2_incorrect",
    )

    class Meta:
        # One index serves every read, so the planner has nothing to choose wrongly without
        # statistics (autovacuum may be off: no ANALYZE): a window (a series, an alert rule)
        # is one range of it, whichever versions it reads (the version is checked inside the
        # index); the "latest" version is its newest hour, read backwards.
        constraints = [
            models.UniqueConstraint(
                fields=["project", "segment_key", "segment_value", "hour", "model_version"],
                name="metric_rollup_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.project_id} {self.model_version} {self.hour:%Y-%m-%d %H}h"


class CategoryRollup(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    model_version = models.CharField(max_length=100, blank=True)
    hour = models.DateTimeField()
    segment_key = models.CharField(max_length=64, blank=True)
    segment_value = models.CharField(max_length=200, blank=True)
    category = models.CharField(max_length=64)
    feedback = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "project",
                    "category",
                    "segment_key",
                    "segment_value",
                    "hour",
                    "model_version",
                ],
                name="category_rollup_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.category} {self.hour:%Y-%m-%d %H}h"


class AlertRule(models.Model):
    class State(models.TextChoices):
        OK = "ok", "OK"
        FIRING = "firing", "Firing"
        RESOLVED = "resolved", "Resolved"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=200)
    metric = models.CharField(max_length=100)
    filter = models.JSONField(default=dict, blank=True)
    window_minutes = models.PositiveIntegerField(default=60)
    condition = models.JSONField()
    min_volume = models.PositiveIntegerField(default=100)
    cooldown_minutes = models.PositiveIntegerField(default=60)
    notify_emails = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.OK)
    state_since = models.DateTimeField(null=True, blank=True)
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    last_result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "name", "id"]
        indexes = [models.Index(fields=["active"], condition=Q(active=True), name="alert_active")]

    def __str__(self) -> str:
        return self.name


class AlertEvent(models.Model):
    """One change of a rule's state. One per rule, window and state: evaluating the same window
    twice (two beats, a beat and a click) records it once."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    state = models.CharField(max_length=10, choices=AlertRule.State.choices)
    value = models.FloatField(null=True)
    ci_low = models.FloatField(null=True)
    ci_high = models.FloatField(null=True)
    volume = models.FloatField(default=0)
    baseline_value = models.FloatField(null=True)
    p_value = models.FloatField(null=True)
    model_version = models.CharField(max_length=100, blank=True)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "window_start", "window_end", "state"], name="alert_event_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.rule_id} {self.state} {self.window_end:%Y-%m-%d %H:%M}"

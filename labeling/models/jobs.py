"""What every background job row shares: a status lifecycle, progress, the error of a failed
attempt, who asked, and when it was requested, started and finished.

A service creates the row ``pending``; a task claims it ``running`` with a conditional update
(so a duplicate delivery does nothing) and marks it ``done`` or ``failed`` in one final update.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class BackgroundJob(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-id"]


class UnsentTask(models.Model):
    """A task message the broker refused (an outage): ``unsent_tasks_send`` sends it again once
    the broker is back (see ``labeling.enqueue``). Its job row stays ``pending`` meanwhile."""

    task = models.CharField(max_length=100)
    args = models.JSONField(default=list)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.task}{tuple(self.args)!r}"

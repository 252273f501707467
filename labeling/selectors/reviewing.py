"""Reads for a reviewer at work: their progress in a queue and their recent labels."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, QuerySet
from django.utils import timezone

from ..models import Label, Queue, QueueItem

RECENT_LABELS = 20


def reviewer_progress(*, queue: Queue, user: AbstractBaseUser) -> dict[str, Any]:
    """What is left for this person in the queue, and how many labels they gave it today.

    ``left`` counts open production items the person has not labeled. With hidden gold checks
    on, an exact count would stand still after a check is answered and so tell the reviewer it
    was one: the figure is then an estimate that includes the expected checks, rounded to tens
    (``left_approx`` says so), and "fewer than 10" near the end.
    """
    left = (
        QueueItem.objects.filter(queue=queue, status=QueueItem.Status.OPEN, gold_item__isnull=True)
        .exclude(labels__reviewer=user)
        .count()
    )
    approx = queue.gold_rate > 0
    if approx:
        estimate = left / (1 - queue.gold_rate)
        left = int(round(estimate / 10) * 10) if estimate >= 10 else 0
    start_of_day = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    today = Label.objects.filter(
        reviewer=user, item__queue=queue, created_at__gte=start_of_day
    ).count()
    return {"left": left, "left_approx": approx, "done_today": today}


def recent_labels(*, queue: Queue, user: AbstractBaseUser, limit: int = RECENT_LABELS) -> QuerySet:
    """The person's latest labels in the queue, newest first, with their edit counts."""
    return (
        Label.objects.filter(reviewer=user, item__queue=queue)
        .select_related("item")
        .annotate(edits=Count("revisions"))
        .order_by("-created_at", "-id")[:limit]
    )


def last_label(*, queue: Queue, user: AbstractBaseUser) -> Label | None:
    """The label the person submitted last in the queue (what "undo" reopens)."""
    return (
        Label.objects.filter(reviewer=user, item__queue=queue)
        .order_by("-created_at", "-id")
        .first()
    )

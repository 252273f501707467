"""Fixtures for labeling: a queue with items and reviewers assigned to it."""

from __future__ import annotations

import pytest
from django.utils import timezone

from feedback.models import Membership, Prediction
from feedback.services.projects import membership_grant
from labeling.models import Queue, QueueItem


@pytest.fixture
def make_reviewer(project):
    def _make(name: str, queue: Queue | None = None, role=Membership.Role.REVIEWER):
        membership = membership_grant(
            project=project, username=name, role=role, password="pw-123456"
        )
        if queue is not None:
            queue.reviewers.add(membership.user)
        return membership.user

    return _make


@pytest.fixture
def make_items(project):
    def _make(queue: Queue, count: int, *, priority: int = 0, prefix: str = "p") -> list[QueueItem]:
        now = timezone.now()
        predictions = Prediction.objects.bulk_create(
            Prediction(
                project=project,
                external_id=f"{prefix}-{queue.pk}-{i}",
                output={"reply": f"answer {i}"},
                input={"message": f"question {i}"},
                label="refund",
                confidence=0.7,
                segment={"locale": "de-DE"},
                occurred_at=now,
                content_hash="x",
            )
            for i in range(count)
        )
        return QueueItem.objects.bulk_create(
            QueueItem(queue=queue, prediction=p, inclusion_probability=0.5, priority=priority)
            for p in predictions
        )

    return _make


@pytest.fixture
def queue(project):
    return Queue.objects.create(
        project=project,
        name="review",
        overlap=2,
        lease_seconds=600,
        instructions="Is the answer right?",
    )

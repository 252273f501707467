"""Read queries of the labeling app: who may do what, claim payloads, queue statistics."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet

from feedback.models import Feedback, Membership
from feedback.selectors import active_categories, projects_for_user

from ..agreement import krippendorff_alpha_nominal, mean_pairwise_kappa, percent_agreement
from ..models import Label, Queue, QueueItem

MANAGE_ROLES = [Membership.Role.ADMIN]
READ_ROLES = [Membership.Role.ADMIN, Membership.Role.DATA_SCIENTIST]


def queues_visible_to(*, user: AbstractBaseUser) -> QuerySet[Queue]:
    """Queues a person may see: every queue of projects they read or manage, and the queues
    they review in."""
    readable = projects_for_user(user=user, roles=READ_ROLES)
    return (
        Queue.objects.filter(
            Q(project__in=readable) | Q(reviewers=user) | Q(reviewer_group__in=user.groups.all())
        )
        .distinct()
        .select_related("project", "reviewer_group")
        .prefetch_related("reviewers")
    )


def queues_for_reviewer(*, user: AbstractBaseUser) -> QuerySet[Queue]:
    """Queues a person labels in, with the number of open items."""
    return (
        Queue.objects.filter(
            Q(reviewers=user) | Q(reviewer_group__in=user.groups.all()), active=True
        )
        .distinct()
        .select_related("project")
        .annotate(
            open_items=Count("items", filter=Q(items__status=QueueItem.Status.OPEN), distinct=True)
        )
        .order_by("project__slug", "name")
    )


def can_review(*, queue: Queue, user: AbstractBaseUser) -> bool:
    if not user.is_authenticated:
        return False
    return queue.reviewers.filter(pk=user.pk).exists() or (
        queue.reviewer_group_id is not None
        and user.groups.filter(pk=queue.reviewer_group_id).exists()
    )


def can_manage(*, queue: Queue, user: AbstractBaseUser) -> bool:
    return projects_for_user(user=user, roles=MANAGE_ROLES).filter(pk=queue.project_id).exists()


def claim_payload(*, item: QueueItem, lease_expires_at) -> dict[str, Any]:
    """What a reviewer sees of an item. Segments only when the queue allows (blind review)."""
    queue, prediction = item.queue, item.prediction
    shown = {
        "external_id": prediction.external_id,
        "input": prediction.input,
        "output": prediction.output,
        "label": prediction.label,
        "confidence": prediction.confidence,
        "model_version": prediction.model_version,
    }
    if queue.show_segments:
        shown["segment"] = prediction.segment
    feedback = [
        {
            "kind": f.kind,
            "rating": f.rating,
            "status": f.status,
            "categories": [c.slug for c in f.categories.all()],
            "comment": f.comment,
            "correction": f.correction,
            "created_at": f.created_at,
        }
        for f in Feedback.objects.filter(prediction=prediction)
        .prefetch_related("categories")
        .order_by("id")
    ]
    return {
        "item": item.pk,
        "queue": queue.pk,
        "lease_expires_at": lease_expires_at,
        "instructions": queue.instructions,
        "prediction": shown,
        "feedback": feedback,
        "label_choices": queue.label_choices,
        "categories": list(active_categories(project_id=queue.project_id)),
    }


def queue_stats(*, queue: Queue) -> dict[str, Any]:
    """Items by status, labels, agreement on verdicts, and per-reviewer figures."""
    by_status = dict(
        queue.items.order_by()
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    labels = list(
        Label.objects.filter(item__queue=queue).values_list(
            "item_id",
            "reviewer_id",
            "reviewer__username",
            "verdict",
            "seconds_spent",
            "item__consensus",
        )
    )
    triples = [(item, reviewer, verdict) for item, reviewer, _, verdict, _, _ in labels]
    per_reviewer: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"labels": 0, "seconds": [], "agree": 0, "decided": 0}
    )
    for _, _, username, verdict, seconds, consensus in labels:
        figures = per_reviewer[username]
        figures["labels"] += 1
        if seconds is not None:
            figures["seconds"].append(seconds)
        if consensus and consensus.get("verdict"):
            figures["decided"] += 1
            figures["agree"] += verdict == consensus["verdict"]
    return {
        "queue": queue.pk,
        "items": {status: by_status.get(status, 0) for status in QueueItem.Status.values}
        | {"total": sum(by_status.values())},
        "labels": len(labels),
        "agreement": {
            "krippendorff_alpha": krippendorff_alpha_nominal(triples),
            "cohen_kappa": mean_pairwise_kappa(triples),
            "percent_agreement": percent_agreement(triples),
        },
        "reviewers": [
            {
                "username": username,
                "labels": figures["labels"],
                "median_seconds": statistics.median(figures["seconds"])
                if figures["seconds"]
                else None,
                "agreement_with_consensus": (
                    figures["agree"] / figures["decided"] if figures["decided"] else None
                ),
            }
            for username, figures in sorted(per_reviewer.items())
        ],
    }

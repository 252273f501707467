"""Read queries of the labeling app: who may do what, claim payloads, queue statistics."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Q, QuerySet

from feedback.models import Feedback, Membership, Prediction
from feedback.selectors import active_categories, projects_for_user

from ..agreement import krippendorff_alpha_nominal, mean_pairwise_kappa, percent_agreement
from ..models import Label, Queue, QueueItem

MANAGE_ROLES = [Membership.Role.ADMIN]
READ_ROLES = [Membership.Role.ADMIN, Membership.Role.DATA_SCIENTIST]


def reviews_in(user: AbstractBaseUser) -> Q:
    """Queues the person reviews in: named among its reviewers or in its reviewer group, and a
    current member of its project (any role). A revoked membership ends the reviewing at once,
    though the queue still lists them (``feedback`` cannot reach labeling's queues; the list
    is where an admin sees whom a re-granted member would review for again)."""
    named = Q(reviewers=user) | Q(reviewer_group__in=user.groups.all())
    if user.is_superuser:
        return named
    return named & Q(project_id__in=Membership.objects.filter(user=user).values("project_id"))


def queues_visible(
    *, project_ids: Any, reviewer: AbstractBaseUser | None = None
) -> QuerySet[Queue]:
    """Queues of these projects, and (for a person) the queues they review in."""
    where = Q(project_id__in=project_ids)
    if reviewer is not None:
        where |= reviews_in(reviewer)
    return (
        Queue.objects.filter(where)
        .distinct()
        .select_related("project", "reviewer_group")
        .prefetch_related("reviewers")
    )


def queues_visible_to(*, user: AbstractBaseUser) -> QuerySet[Queue]:
    """Queues a person may see: every queue of projects they read or manage, and the queues
    they review in."""
    return queues_visible(
        project_ids=projects_for_user(user=user, roles=READ_ROLES).values("pk"), reviewer=user
    )


def segment_reviewer_projects(user: AbstractBaseUser) -> QuerySet:
    """Ids of projects where the person reviews a queue that shows segments: there, blind review
    is off and they may read the project's feedback (``feedback.api.caller.FEEDBACK_READ``)."""
    return Queue.objects.filter(show_segments=True).filter(reviews_in(user)).values("project_id")


def queues_for_reviewer(*, user: AbstractBaseUser) -> QuerySet[Queue]:
    """Queues a person labels in, with the number of open items."""
    return (
        Queue.objects.filter(reviews_in(user), active=True)
        .distinct()
        .select_related("project")
        .annotate(
            # Production items only: gold checks stay open for good, and one appearing when
            # first served would show as a new open item.
            open_items=Count(
                "items",
                filter=Q(items__status=QueueItem.Status.OPEN, items__gold_item__isnull=True),
                distinct=True,
            )
        )
        .order_by("project__slug", "name")
    )


def can_review(*, queue: Queue, user: AbstractBaseUser) -> bool:
    if not user.is_authenticated:
        return False
    return Queue.objects.filter(reviews_in(user), pk=queue.pk).exists()


def can_manage(*, queue: Queue, user: AbstractBaseUser) -> bool:
    return projects_for_user(user=user, roles=MANAGE_ROLES).filter(pk=queue.project_id).exists()


def can_read(*, queue: Queue, user: AbstractBaseUser) -> bool:
    """May the person read the project's data (admins and data scientists, not reviewers)?"""
    return projects_for_user(user=user, roles=READ_ROLES).filter(pk=queue.project_id).exists()


# A gold check shows its source's disputes as still under review: "upheld" or "rejected" is the
# outcome of the review that made it gold, i.e. the expected answer.
RESOLVED_DISPUTE = {Feedback.DisputeStatus.UPHELD, Feedback.DisputeStatus.REJECTED}


def claim_payload(*, item: QueueItem, lease_expires_at) -> dict[str, Any]:
    """What a reviewer sees of an item. Segments only when the queue allows (blind review).

    A hidden gold check has the same keys and types as a production item, and nothing that
    says gold: the gold item's frozen input and output, shown as the prediction it was
    promoted from when that still exists (its external id, predicted label, confidence, model
    version and the users' feedback, as a production item of it would show them); otherwise
    the lineage the gold item keeps by value, with no label, confidence or feedback. A gold
    item made by hand, with no source, shows its key as the external id: give such items keys
    in the project's external-id format.
    """
    queue = item.queue
    if item.gold_item_id is None:
        prediction = item.prediction
        shown = {
            "external_id": prediction.external_id,
            "input": prediction.input,
            "output": prediction.output,
            "label": prediction.label,
            "confidence": prediction.confidence,
            "model_version": prediction.model_version,
        }
        segment = prediction.segment
    else:
        gold = item.gold_item
        prediction = (
            Prediction.objects.filter(
                pk=gold.source_prediction_id, project_id=queue.project_id
            ).first()
            if gold.source_prediction_id is not None
            else None
        )
        shown = {
            "external_id": prediction.external_id
            if prediction is not None
            else gold.source_external_id or gold.key,
            "input": gold.input,
            "output": gold.output,
            "label": prediction.label if prediction is not None else None,
            "confidence": prediction.confidence if prediction is not None else None,
            "model_version": prediction.model_version
            if prediction is not None
            else gold.source_model_version,
        }
        segment = gold.segment
    if queue.show_segments:
        shown["segment"] = segment
    feedback = [
        {
            "kind": f.kind,
            "rating": f.rating,
            "status": Feedback.DisputeStatus.IN_REVIEW
            if item.gold_item_id is not None and f.status in RESOLVED_DISPUTE
            else f.status,
            "categories": list(f.categories or []),
            "comment": f.comment,
            "correction": f.correction,
            "created_at": f.created_at,
        }
        for f in (
            Feedback.objects.filter(prediction=prediction).order_by("id")
            if prediction is not None
            else []
        )
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
    """Items by status, labels, agreement on verdicts, and per-reviewer figures.

    Production items and labels only, but for each reviewer's gold figures: hidden gold checks
    answered, answered as expected, and their share (``gold_accuracy``, None before the first).
    For the project's admins and data scientists: a reviewer must not see these (the API and
    the admin dashboard check).
    """
    by_status = dict(
        queue.items.filter(gold_item__isnull=True)
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
        .values_list("status", "n")
    )
    rows = list(
        Label.objects.filter(item__queue=queue).values_list(
            "item_id",
            "reviewer_id",
            "reviewer__username",
            "verdict",
            "seconds_spent",
            "item__consensus",
            "item__gold_item_id",
            "gold_correct",
        )
    )
    per_reviewer: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"labels": 0, "seconds": [], "agree": 0, "decided": 0, "gold": 0, "gold_ok": 0}
    )
    labels = []
    for row in rows:
        gold_item, gold_correct = row[6], row[7]
        if gold_item is None:
            labels.append(row[:6])
        elif gold_correct is not None:  # None: nothing in the gold item this queue could score
            figures = per_reviewer[row[2]]
            figures["gold"] += 1
            figures["gold_ok"] += gold_correct
    triples = [(item, reviewer, verdict) for item, reviewer, _, verdict, _, _ in labels]
    for _, _, username, verdict, seconds, consensus in labels:
        figures = per_reviewer[username]
        figures["labels"] += 1
        if seconds is not None:
            figures["seconds"].append(seconds)
        # Only where someone else had a say: over an item whose only label is this reviewer's
        # own, "agreement" would be 100 % by construction (shown as "no overlap" instead).
        if consensus and consensus.get("verdict") and _overlapped(consensus):
            figures["decided"] += 1
            figures["agree"] += verdict == consensus["verdict"]
    return {
        "queue": queue.pk,
        "items": {status: by_status.get(status, 0) for status in QueueItem.Status.values}
        | {"total": sum(by_status.values())},
        "labels": len(labels),
        "gold_checks": sum(figures["gold"] for figures in per_reviewer.values()),
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
                "gold_checks": figures["gold"],
                "gold_correct": figures["gold_ok"],
                "gold_accuracy": figures["gold_ok"] / figures["gold"] if figures["gold"] else None,
            }
            for username, figures in sorted(per_reviewer.items())
        ],
    }


def _overlapped(consensus: dict[str, Any]) -> bool:
    """Did the consensus weigh more than one person's view (two labels, or an adjudicator)?"""
    return consensus.get("method") == "adjudicated" or (consensus.get("n_labels") or 0) >= 2

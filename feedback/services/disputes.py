"""The dispute lifecycle: ``open → in_review → upheld | rejected``.

A project admin may also resolve an open dispute directly (from the triage admin). Every move is
recorded as a ``DisputeEvent`` with its actor; resolved disputes are final.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from ..errors import Conflict, InvalidInput
from ..models import DisputeEvent, Feedback, Prediction
from .events import event_emit

Status = Feedback.DisputeStatus
TRANSITIONS: dict[str, set[str]] = {
    Status.OPEN: {Status.IN_REVIEW, Status.UPHELD, Status.REJECTED},
    Status.IN_REVIEW: {Status.UPHELD, Status.REJECTED},
    Status.UPHELD: set(),
    Status.REJECTED: set(),
}
RESOLVED = {Status.UPHELD, Status.REJECTED}


@transaction.atomic
def dispute_transition(
    *,
    dispute_id: int,
    to_status: str,
    note: str = "",
    actor: AbstractBaseUser | None = None,
) -> Feedback:
    """Move a dispute to ``to_status``; refuses moves the lifecycle does not allow (409)."""
    # FOR UPDATE: two admins resolving at once must not both succeed.
    dispute = Feedback.objects.select_for_update().filter(pk=dispute_id).first()
    if dispute is None or dispute.kind != Feedback.Kind.DISPUTE:
        raise InvalidInput.one("id", "not_a_dispute", f"Feedback {dispute_id} is not a dispute.")
    if to_status not in TRANSITIONS.get(dispute.status, set()):
        raise Conflict.one(
            "status", "illegal_transition",
            f"A dispute that is {dispute.status} cannot become {to_status}.",
        )
    if to_status in RESOLVED and not note.strip():
        raise InvalidInput.one(
            "resolution_note", "required", "Say why: the app shows this note to its user."
        )
    actor = actor if actor is not None and actor.is_authenticated else None
    DisputeEvent.objects.create(
        feedback=dispute, from_status=dispute.status, to_status=to_status, note=note, actor=actor
    )
    dispute.status = to_status
    fields = ["status"]
    if to_status in RESOLVED:
        dispute.resolution_note = note
        dispute.resolved_at = timezone.now()
        dispute.resolved_by = actor
        fields += ["resolution_note", "resolved_at", "resolved_by"]
    dispute.save(update_fields=fields)
    if to_status in RESOLVED:
        # In this transaction: a resolution that rolls back tells no one.
        event_emit(project_id=dispute.project_id, type="dispute.resolved",
                   data=dispute_event_data(dispute))
    return dispute


def dispute_event_data(dispute: Feedback, *, external_id: str | None = None) -> dict:
    """The ``data`` of ``dispute.opened`` / ``dispute.resolved`` (API.md, Webhooks)."""
    if external_id is None:
        external_id = (
            Prediction.objects.filter(pk=dispute.prediction_id)
            .values_list("external_id", flat=True)
            .first()
        )
    return {
        "id": dispute.pk,
        "prediction": external_id,
        "status": dispute.status,
        "resolution_note": dispute.resolution_note,
        "resolved_at": dispute.resolved_at,
    }


def dispute_resolve(
    *, dispute_id: int, upheld: bool, note: str, actor: AbstractBaseUser | None = None
) -> Feedback:
    """Resolve a dispute: upheld (the user was right) or rejected (the output stands)."""
    return dispute_transition(
        dispute_id=dispute_id,
        to_status=Status.UPHELD if upheld else Status.REJECTED,
        note=note,
        actor=actor,
    )


def disputes_mark_in_review(*, dispute_ids, note: str = "") -> int:
    """Move open disputes to ``in_review`` in bulk (they were queued for review); others are
    left as they are. Returns how many moved. Runs inside the caller's transaction."""
    with transaction.atomic():
        ids = list(
            Feedback.objects.select_for_update()
            .filter(pk__in=list(dispute_ids), kind=Feedback.Kind.DISPUTE, status=Status.OPEN)
            .order_by("pk")  # lock in primary-key order: no deadlock with another batch
            .values_list("pk", flat=True)
        )
        if not ids:
            return 0
        DisputeEvent.objects.bulk_create(
            DisputeEvent(feedback_id=pk, from_status=Status.OPEN, to_status=Status.IN_REVIEW,
                         note=note)
            for pk in ids
        )
        return Feedback.objects.filter(pk__in=ids).update(status=Status.IN_REVIEW)


def disputes_resolve_for_prediction(
    *, prediction_id: int, upheld: bool, note: str, actor: AbstractBaseUser | None = None
) -> int:
    """Resolve every unresolved dispute on a prediction (its review is complete)."""
    ids = list(
        Feedback.objects.filter(
            prediction_id=prediction_id, kind=Feedback.Kind.DISPUTE,
            status__in=[Status.OPEN, Status.IN_REVIEW],
        ).order_by("pk").values_list("pk", flat=True)
    )
    for pk in ids:
        dispute_resolve(dispute_id=pk, upheld=upheld, note=note, actor=actor)
    return len(ids)

"""Labels: submitting under a live lease, editing with history, consensus and adjudication.

When an item has ``overlap`` labels its consensus is computed: a majority of the decided
verdicts (correct / incorrect; ``unsure`` votes count toward agreement but cannot win), and of
``true_label`` when the queue has label choices. A tie, or no decided vote, sends the item to
adjudication by a project admin. A completed item resolves the disputes on its prediction:
upheld when the consensus says the output was incorrect, rejected when correct.

A hidden gold check (an item with ``gold_item`` set, see ``labeling/services/claims.py``) takes
labels the same way, under the same rules, but never as a production label: its label records
``gold_correct`` (``gold_answer_correct``), the item's ``labels_count`` stays 0, it never
completes, never gets a consensus, never goes to adjudication and resolves no dispute.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from feedback.errors import Conflict, FieldError, Forbidden, InvalidInput, NotFound
from feedback.models import Prediction
from feedback.selectors import active_categories
from feedback.services.disputes import disputes_resolve_for_prediction

from ..consensus import dawid_skene, majority_vote
from ..enqueue import enqueue_after_commit
from ..models import Assignment, GoldItem, Label, LabelRevision, QueueItem
from ..payloads.labels import CONFIRM_FIELD, LabelInput

Verdict = Label.Verdict
LABEL_FIELDS = ("verdict", "categories", "true_label", "correction", "notes", "seconds_spent")
# CONFIRM_FIELD ("confirm_contradiction"): accepted with a label but not stored, the caller's
# "yes, I mean this contradiction".
CONTRADICTION_CODE = "contradicts_verdict"


def clean_label(answer: LabelInput, *, item: QueueItem, categories: set[str]) -> dict[str, Any]:
    """The label's model fields, once what depends on the item holds: the categories are the
    project's (``categories``), the true label one of the queue's choices (required for a
    correct or incorrect verdict when it has some), no contradiction unless confirmed. The rest
    was checked by ``label_input``. Refuses naming the field."""
    errors: list[FieldError] = [
        FieldError(
            f"categories[{position}]",
            "unknown_category",
            f"{slug!r} is not an active category; valid: {', '.join(sorted(categories))}.",
        )
        for position, slug in enumerate(answer.categories)
        if slug not in categories
    ]
    choices = item.queue.label_choices or []
    verdict, true_label = answer.verdict, answer.true_label
    if not true_label:
        if choices and verdict in (Verdict.CORRECT, Verdict.INCORRECT):
            errors.append(
                FieldError(
                    "true_label", "required", f"This queue asks for a label: {', '.join(choices)}."
                )
            )
    elif not choices:
        errors.append(FieldError("true_label", "not_allowed", "This queue has no label choices."))
    elif true_label not in choices:
        errors.append(
            FieldError(
                "true_label",
                "invalid_choice",
                f"{true_label!r} is not one of {', '.join(choices)}.",
            )
        )
    if errors:
        raise InvalidInput(errors)
    if not answer.confirm_contradiction:
        _refuse_contradiction(item=item, verdict=verdict, true_label=true_label)
    return {
        "verdict": verdict,
        "categories": list(dict.fromkeys(answer.categories)),
        "true_label": true_label,
        "correction": answer.correction,
        "notes": answer.notes,
        "seconds_spent": answer.seconds_spent,
    }


def contradiction(*, verdict: str, true_label: str, predicted: str | None) -> str | None:
    """Why a verdict and a true label contradict each other, or None when they agree.

    "correct" says the prediction was right, so the true label is the predicted one; "incorrect"
    says it was wrong, so the true label is another. Checked only when the predicted label is a
    choice the reviewer could have picked (a label outside the choices can never be matched).
    """
    if not true_label or not predicted:
        return None
    if verdict == Verdict.CORRECT and true_label != predicted:
        return (
            f"You marked the output correct but chose {true_label!r} as the true label, while "
            f"the model predicted {predicted!r}. If the prediction is right, the true label is "
            f"{predicted!r}; if it is not, the verdict is incorrect."
        )
    if verdict == Verdict.INCORRECT and true_label == predicted:
        return (
            f"You marked the output incorrect but chose the predicted label {predicted!r} as the "
            "true label. Pick the label it should have been, or mark it correct (or unsure)."
        )
    return None


def _refuse_contradiction(*, item: QueueItem, verdict: str, true_label: str) -> None:
    choices = item.queue.label_choices or []
    if not true_label or not choices:
        return
    predicted = predicted_label_of(item)
    why = contradiction(
        verdict=verdict,
        true_label=true_label,
        predicted=predicted if predicted in choices else None,
    )
    if why is not None:
        raise InvalidInput.one(
            "true_label", CONTRADICTION_CODE, f"{why} Send {CONFIRM_FIELD}: true to keep it anyway."
        )


def predicted_label_of(item: QueueItem) -> str | None:
    """The predicted label the reviewer was shown: a gold check shows its source prediction's
    (``claim_payload``), so the rule treats both alike and cannot tell one from the other."""
    if item.gold_item_id is None:
        return item.prediction.label
    return (
        Prediction.objects.filter(
            pk=GoldItem.objects.filter(pk=item.gold_item_id).values("source_prediction_id")[:1],
            project_id=item.queue.project_id,
        )
        .values_list("label", flat=True)
        .first()
    )


def gold_answer_correct(
    *, gold: GoldItem, verdict: str, true_label: str, label_choices: list[str]
) -> bool | None:
    """Does an answer match a gold item's expectation? None when nothing can be scored.

    The verdict must equal the expected verdict; "unsure" is an answer like any other, so it
    scores as wrong unless "unsure" is what the gold item expects (gold items are promoted from
    clear consensus: not knowing is a miss). When the queue offers the expected label among its
    label choices, the true label must equal it as well (a label the queue does not offer could
    never be matched, so it is not checked). Categories are not scored: they are a multi-select
    of what was wrong, where a partial overlap is the norm and production consensus only pools
    them, so an exact-set rule would mostly measure noise; they are stored with the label.
    An expectation left blank is not checked (the claim serves only items with something to
    check, so None is for a gold item whose expectation is blank for this queue).
    """
    checks: list[bool] = []
    if gold.expected_verdict:
        checks.append(verdict == gold.expected_verdict)
    if gold.expected_label and gold.expected_label in label_choices:
        checks.append(true_label == gold.expected_label)
    return all(checks) if checks else None


def _gold_correct(item: QueueItem, clean: dict[str, Any]) -> bool | None:
    if item.gold_item_id is None:
        return None  # a production label: never scored against gold
    return gold_answer_correct(
        gold=GoldItem.objects.get(pk=item.gold_item_id),
        verdict=clean["verdict"],
        true_label=clean["true_label"],
        label_choices=item.queue.label_choices or [],
    )


def item_label_submit(
    *,
    item_id: int,
    reviewer: AbstractBaseUser,
    answer: LabelInput,
    categories: set[str] | None = None,
) -> Label:
    """Store a reviewer's label (``answer``: checked by ``label_input``). Needs a live lease
    (409 otherwise); one label per reviewer.
    ``categories``: the slugs a label may name; by default the project's active categories."""
    now = timezone.now()
    with transaction.atomic():
        # Lock the item: labels_count and completion must see every concurrent submission.
        # Only the item (of=self): a plain FOR UPDATE would lock the joined queue row too and
        # serialise every label of the queue behind one row (seen in the claims bench).
        item = (
            QueueItem.objects.select_for_update(of=("self",), no_key=True)
            .select_related("queue", "prediction")
            .filter(pk=item_id)
            .first()
        )
        if item is None:
            raise NotFound.one("item", "not_found", f"No item {item_id}.")
        if categories is None:
            categories = set(active_categories(project_id=item.queue.project_id))
        clean = clean_label(answer, item=item, categories=categories)
        if Label.objects.filter(item=item, reviewer=reviewer).exists():
            raise Conflict.one("item", "already_labeled", "You labeled this item already.")
        lease = Assignment.objects.filter(
            item=item, reviewer=reviewer, status=Assignment.Status.ACTIVE, expires_at__gt=now
        ).first()
        if lease is None:
            raise Conflict.one(
                "item", "no_lease", "You hold no live lease on this item: claim it again."
            )
        label = Label.objects.create(
            item=item, reviewer=reviewer, gold_correct=_gold_correct(item, clean), **clean
        )
        lease.status, lease.closed_at = Assignment.Status.SUBMITTED, now
        lease.save(update_fields=["status", "closed_at"])
        if item.gold_item_id is not None:
            # A gold check's answer is scored, not counted: the item stays open for the next
            # reviewer and never reaches consensus, adjudication or an export.
            return label
        QueueItem.objects.filter(pk=item.pk).update(labels_count=F("labels_count") + 1)
        item.labels_count += 1
        if item.labels_count >= item.queue.overlap and item.status == QueueItem.Status.OPEN:
            item_consensus_update(item=item)
        return label


def label_update(
    *,
    label: Label,
    actor: AbstractBaseUser,
    answer: LabelInput,
    categories: set[str] | None = None,
) -> Label:
    """Edit a label, keeping what it said before as a revision; consensus follows the edit."""
    with transaction.atomic():
        item = (
            QueueItem.objects.select_for_update(of=("self",), no_key=True)
            .select_related("queue", "prediction")
            .get(pk=label.item_id)
        )
        if categories is None:
            categories = set(active_categories(project_id=item.queue.project_id))
        clean = clean_label(answer, item=item, categories=categories)
        LabelRevision.objects.create(
            label=label,
            changed_by=actor,
            content={name: getattr(label, name) for name in LABEL_FIELDS},
        )
        for name, value in clean.items():
            setattr(label, name, value)
        label.gold_correct = _gold_correct(item, clean)  # an edited answer is scored again
        label.save()
        if item.gold_item_id is None and item.status != QueueItem.Status.OPEN:
            item_consensus_update(item=item)
        return label


def label_edit_own(*, label_id: int, reviewer: AbstractBaseUser, answer: LabelInput) -> Label:
    """A reviewer changes one of their own labels (the workspace's undo and "edit" pages).

    The old answer is kept as a ``LabelRevision`` (``label_update``). Someone else's label, or
    one in a queue the person no longer reviews, is 404 (nothing is revealed); an item a project
    admin has adjudicated is settled, so its labels no longer change (409).
    """
    from ..selectors import can_review  # selectors import models only; late import keeps it so

    label = (
        Label.objects.select_related("item__queue").filter(pk=label_id, reviewer=reviewer).first()
    )
    if label is None or not can_review(queue=label.item.queue, user=reviewer):
        raise NotFound.one("label", "not_found", f"No label {label_id} of yours.")
    if (label.item.consensus or {}).get("method") == "adjudicated":
        raise Conflict.one(
            "label",
            "adjudicated",
            "A project admin has adjudicated this item; its labels no longer change.",
        )
    categories = set(active_categories(project_id=label.item.queue.project_id))
    # Categories chosen before one was retired stay valid on the label they are on.
    categories |= set(label.categories)
    return label_update(label=label, actor=reviewer, answer=answer, categories=categories)


def consensus_of(labels: list[Label], *, with_true_label: bool) -> dict[str, Any]:
    verdicts = [label.verdict for label in labels]
    decided = [v for v in verdicts if v != Verdict.UNSURE]
    winner, _, tie = majority_vote(decided) if decided else (None, 0.0, False)
    agreement = verdicts.count(winner) / len(verdicts) if winner else 0.0
    result: dict[str, Any] = {
        "method": "majority",
        "verdict": winner,
        "agreement": round(agreement, 6),
        "n_labels": len(labels),
        "tie": bool(tie or not decided),
        "categories": sorted(
            {c for label in labels if label.verdict == winner for c in label.categories}
        ),
    }
    if with_true_label:
        true_labels = [label.true_label for label in labels if label.true_label]
        label_winner, _, label_tie = majority_vote(true_labels) if true_labels else (None, 0, True)
        result["true_label"] = label_winner
        result["tie"] = result["tie"] or bool(label_tie)
    return result


def item_consensus_update(*, item: QueueItem) -> QueueItem:
    """Compute a full item's consensus: complete it, or send it to adjudication on a tie."""
    if item.gold_item_id is not None:  # a gold check has no consensus; its answers are scored
        return item
    labels = list(item.labels.all())
    consensus = consensus_of(labels, with_true_label=bool(item.queue.label_choices))
    item.consensus = consensus
    if consensus["tie"]:
        item.status, item.completed_at = QueueItem.Status.ADJUDICATION, None
    else:
        item.status, item.completed_at = QueueItem.Status.COMPLETE, timezone.now()
    item.save(update_fields=["consensus", "status", "completed_at"])
    if item.status == QueueItem.Status.COMPLETE:
        _resolve_disputes(item)
    if item.queue.consensus == item.queue.Consensus.DAWID_SKENE:
        enqueue_after_commit(
            "queue_consensus_task", item.queue_id, when=partial(_refit_request, item.queue_id)
        )
    return item


# A refit request older than this is taken as lost (its process died before sending it):
# the next completion sends it again.
REFIT_REQUEST_LOST_SECONDS = 600


def _refit_request(queue_id: int) -> bool:
    """Whether this completion sends the queue's refit: only the first since the last refit
    started does; the later ones are read by that refit. Runs after the commit, in a statement
    of its own, so reviewers completing items never wait on the queue row."""
    from ..models import Queue

    now = timezone.now()
    lost = now - timezone.timedelta(seconds=REFIT_REQUEST_LOST_SECONDS)
    return bool(
        Queue.objects.filter(
            Q(consensus_refit_requested_at__isnull=True) | Q(consensus_refit_requested_at__lt=lost),
            pk=queue_id,
        ).update(consensus_refit_requested_at=now)
    )


DAWID_SKENE_CONFIDENT = 0.6  # below this posterior, a Dawid-Skene item still goes to a person


def queue_consensus_recompute(*, queue_id: int) -> int:
    """Refit Dawid-Skene over a queue's labels and update the consensus of its full items.

    Verdicts (or true labels, when the queue has label choices) of every reviewer weigh by
    that reviewer's estimated confusion matrix, so a tie between a reliable and an unreliable
    reviewer is no longer a tie. Adjudicated items are left alone; disputes resolve when an item
    first completes and stay resolved. Returns the number of items updated.
    """
    from ..models import Queue

    # Cleared before the labels are read: a completion committed after this sends a refit of
    # its own, one committed before is in this one.
    Queue.objects.filter(pk=queue_id).update(consensus_refit_requested_at=None)
    queue = Queue.objects.get(pk=queue_id)
    use_labels = bool(queue.label_choices)
    rows = list(
        # Gold checks stay open, so the status alone keeps them out; the explicit filter says
        # so and holds whatever their status: gold answers must never weigh a reviewer here.
        Label.objects.filter(item__queue=queue, item__gold_item__isnull=True)
        .exclude(item__status=QueueItem.Status.OPEN)
        .values_list("item_id", "reviewer_id", "verdict", "true_label")
    )
    ratings = []
    for item_id, reviewer_id, verdict, true_label in rows:
        value = true_label if use_labels else verdict
        if value and value != Verdict.UNSURE:  # unsure and blank answers carry no class
            ratings.append((item_id, reviewer_id, value))
    if not ratings:
        return 0
    # Sparse panels (overlap < number of reviewers) converge slowly: allow more EM rounds.
    fit = dawid_skene(ratings, classes=queue.label_choices or None, max_iter=500)
    updated = 0
    with transaction.atomic():
        items = (
            QueueItem.objects.select_for_update()
            .filter(pk__in=list(fit.labels), gold_item__isnull=True)
            .exclude(status=QueueItem.Status.OPEN)
            .order_by("pk")
        )
        for item in items:
            if (item.consensus or {}).get("method") == "adjudicated":
                continue
            winner = fit.labels[item.pk]
            confidence = max(fit.distribution(item.pk).values())
            consensus = {
                **(item.consensus or {}),
                "method": "dawid_skene",
                "posterior": round(confidence, 6),
                "tie": confidence < DAWID_SKENE_CONFIDENT,
            }
            if use_labels:
                consensus["true_label"] = winner
            else:
                consensus["verdict"] = winner
            was_complete = item.status == QueueItem.Status.COMPLETE
            item.consensus = consensus
            if consensus["tie"]:
                item.status, item.completed_at = QueueItem.Status.ADJUDICATION, None
            else:
                item.status = QueueItem.Status.COMPLETE
                item.completed_at = item.completed_at or timezone.now()
            item.save(update_fields=["consensus", "status", "completed_at"])
            if item.status == QueueItem.Status.COMPLETE and not was_complete:
                _resolve_disputes(item)
            updated += 1
    return updated


def item_adjudicate(
    *,
    item: QueueItem,
    actor: AbstractBaseUser,
    verdict: str,
    true_label: str = "",
    note: str = "",
) -> QueueItem:
    """A project admin settles an item waiting for adjudication."""
    if verdict not in (Verdict.CORRECT, Verdict.INCORRECT):
        raise InvalidInput.one("verdict", "invalid_choice", "correct or incorrect.")
    choices = item.queue.label_choices or []
    if choices and true_label not in choices:
        raise InvalidInput.one("true_label", "invalid_choice", f"One of {', '.join(choices)}.")
    from ..selectors import can_manage  # selectors import models only; late import keeps it so

    if not can_manage(queue=item.queue, user=actor):
        raise Forbidden.one("item", "forbidden", "Only the project's admins adjudicate.")
    with transaction.atomic():
        item = (
            QueueItem.objects.select_for_update(of=("self",), no_key=True)
            .select_related("queue")
            .get(pk=item.pk)
        )
        if item.status != QueueItem.Status.ADJUDICATION:
            raise Conflict.one("item", "not_waiting", "This item is not waiting for adjudication.")
        item.consensus = {
            **(item.consensus or {}),
            "method": "adjudicated",
            "verdict": verdict,
            "true_label": true_label or None,
            "tie": False,
            "adjudicated_by": actor.get_username(),
            "note": note,
        }
        item.status, item.completed_at = QueueItem.Status.COMPLETE, timezone.now()
        item.save(update_fields=["consensus", "status", "completed_at"])
        _resolve_disputes(item, actor=actor)
        return item


def _resolve_disputes(item: QueueItem, actor: AbstractBaseUser | None = None) -> None:
    consensus = item.consensus or {}
    verdict = consensus.get("verdict")
    if verdict not in (Verdict.CORRECT, Verdict.INCORRECT):
        return
    upheld = verdict == Verdict.INCORRECT
    share = consensus.get("agreement")
    how = (
        "after adjudication"
        if consensus.get("method") == "adjudicated"
        else f"by {consensus.get('n_labels')} reviewer(s), agreement {share:.0%}"
    )
    outcome = (
        "incorrect — your dispute is upheld" if upheld else "correct — your dispute is rejected"
    )
    note = f"Reviewed {how}: the output was found {outcome}."
    disputes_resolve_for_prediction(
        prediction_id=item.prediction_id, upheld=upheld, note=note, actor=actor
    )

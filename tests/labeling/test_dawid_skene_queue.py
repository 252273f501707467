"""A Dawid-Skene queue: reliable reviewers outweigh an unreliable one, and ties resolve."""

from __future__ import annotations

import numpy as np
import pytest

from labeling.models import Assignment, Label, QueueItem
from labeling.payloads.labels import label_input
from labeling.services.labels import item_label_submit, queue_consensus_recompute

pytestmark = pytest.mark.django_db


def label_all(queue, items, reviewers, answers):
    """answers[r][i]: reviewer r's verdict on item i (None: no label)."""
    from django.utils import timezone

    for r, reviewer in enumerate(reviewers):
        for i, item in enumerate(items):
            if answers[r][i] is None:
                continue
            Assignment.objects.create(
                item=item,
                reviewer=reviewer,
                leased_at=timezone.now(),
                expires_at=timezone.now() + timezone.timedelta(minutes=5),
            )
            item_label_submit(
                item_id=item.pk,
                reviewer=reviewer,
                answer=label_input({"verdict": answers[r][i]}),
                categories=set(),
            )


def test_dawid_skene_settles_what_majority_calls_a_tie(
    queue, make_items, make_reviewer, django_capture_on_commit_callbacks
):
    queue.consensus = "dawid_skene"
    queue.overlap = 2
    queue.save()
    items = make_items(queue, 60)
    good, bad = make_reviewer("good", queue), make_reviewer("bad", queue)
    third = make_reviewer("third", queue)
    rng = np.random.default_rng(0)
    truth = rng.choice(["correct", "incorrect"], size=60)
    flip = {"correct": "incorrect", "incorrect": "correct"}
    good_answers = list(truth[:50]) + [None] * 10
    third_answers = [truth[i] if rng.random() < 0.95 else flip[truth[i]] for i in range(50)] + [
        None
    ] * 10
    # "bad" answers at random; on the last 10 items only good and bad label, and disagree.
    bad_answers = [str(rng.choice(["correct", "incorrect"])) for _ in range(50)] + [
        flip[truth[i]] for i in range(50, 60)
    ]
    good_answers[50:] = list(truth[50:])
    third_answers = [a if i < 50 else None for i, a in enumerate(third_answers)]
    for i in range(50):  # overlap 2: keep two labels per item among the three reviewers
        if i % 2:
            bad_answers[i] = None
        else:
            third_answers[i] = None

    with django_capture_on_commit_callbacks(execute=False):
        label_all(queue, items, [good, bad, third], [good_answers, bad_answers, third_answers])
    assert QueueItem.objects.filter(status="adjudication").count() >= 10  # majority ties

    updated = queue_consensus_recompute(queue_id=queue.pk)

    assert updated == 60
    last = QueueItem.objects.filter(pk__in=[i.pk for i in items[50:]])
    assert set(last.values_list("status", flat=True)) == {"complete"}
    for item in last:
        assert item.consensus["method"] == "dawid_skene"
        assert item.consensus["verdict"] == truth[[i.pk for i in items].index(item.pk)]
    assert Label.objects.count() == 120

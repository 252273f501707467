"""32 threads as 8 reviewers claim and label 500 items with overlap 2 on PostgreSQL.

Each thread has its own database connection and runs the real services, so the guarantees
under test are PostgreSQL's: SKIP LOCKED row locks, the per-reviewer advisory lock, and the
unique constraints. Afterwards: no item has more than 2 labels, no reviewer labeled an item
twice, no slot was leased to two reviewers at once, and every item is complete.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict

import pytest
from django.db import connection

from feedback.errors import Conflict
from labeling.models import Assignment, Label, QueueItem
from labeling.payloads.labels import label_input
from labeling.services.claims import queue_claim_next
from labeling.services.labels import item_label_submit

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

REVIEWERS, THREADS_PER_REVIEWER, ITEMS, OVERLAP = 8, 4, 500, 2


def test_32_threads_as_8_reviewers_label_everything_exactly_once(queue, make_items, make_reviewer):
    queue.overlap = OVERLAP
    queue.save()
    make_items(queue, ITEMS)
    reviewers = [make_reviewer(f"r{i}", queue) for i in range(REVIEWERS)]
    outcomes: Counter[str] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(REVIEWERS * THREADS_PER_REVIEWER)

    def work(reviewer):
        try:
            start.wait()
            while True:
                lease = queue_claim_next(queue=queue, reviewer=reviewer)
                if lease is None:
                    return
                try:
                    item_label_submit(
                        item_id=lease.item_id,
                        reviewer=reviewer,
                        answer=label_input({"verdict": "correct"}),
                        categories=set(),
                    )
                    outcome = "labeled"
                except Conflict as refused:  # a sibling thread of this reviewer was first
                    outcome = refused.errors[0].code
                with lock:
                    outcomes[outcome] += 1
        except BaseException as exc:  # surfaced below: a thread must not fail silently
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=work, args=(reviewer,))
        for reviewer in reviewers
        for _ in range(THREADS_PER_REVIEWER)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert not errors, errors[:3]
    assert outcomes["labeled"] == ITEMS * OVERLAP
    assert set(outcomes) <= {"labeled", "already_labeled", "no_lease"}
    per_item = Counter(Label.objects.values_list("item_id", flat=True))
    assert len(per_item) == ITEMS and set(per_item.values()) == {OVERLAP}
    pairs = Label.objects.values_list("item_id", "reviewer_id")
    assert len(set(pairs)) == pairs.count()
    assert set(QueueItem.objects.values_list("status", flat=True)) == {"complete"}
    # No slot leased twice: at any instant an item had at most OVERLAP live leases, and a
    # reviewer at most one.
    leases = defaultdict(list)
    for item_id, reviewer_id, start_at, end_at in Assignment.objects.values_list(
        "item_id", "reviewer_id", "leased_at", "closed_at"
    ):
        leases[item_id].append((start_at, end_at, reviewer_id))
    for intervals in leases.values():
        events = sorted(
            [(s, 1, r) for s, _, r in intervals] + [(e, -1, r) for _, e, r in intervals],
            key=lambda event: (event[0], event[1]),
        )
        live, holders = 0, Counter()
        for _, delta, reviewer_id in events:
            live += delta
            holders[reviewer_id] += delta
            assert live <= OVERLAP
            assert holders[reviewer_id] <= 1

"""Claims right after a large draw, with planner statistics older than the draw.

Statistics are taken before the draw (as autovacuum would have left them) and never refreshed:
PostgreSQL then believes the new queue holds a handful of items. The claim must still walk the
``item_claim_order`` index from the top and stop at the first free item, reading a few buffers,
not the whole queue. The measure is buffers, not time: the block reads of the current
transaction, as PostgreSQL counts them per relation (``pg_stat_get_xact_blocks_fetched``),
around the real ``queue_claim_next``.
"""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.utils import timezone

from labeling.models import Label, Queue, QueueItem
from labeling.services.claims import CLAIM_TRANSACTION_SQL, NEXT_ITEM_SQL, queue_claim_next

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

DRAWN = 30_000
# A walk that stops at the first item reads a few index and heap pages per reviewer (about a
# dozen); the plan that runs the filters for every drawn item and sorts reads hundreds.
BUFFER_BOUND = 60

BLOCKS_FETCHED_SQL = """
SELECT COALESCE(SUM(pg_stat_get_xact_blocks_fetched(c.oid)), 0) FROM pg_class c
WHERE c.relname LIKE 'labeling%%' AND c.relkind IN ('r', 'i')
"""


def _insert_items(queue, count: int) -> None:
    """``count`` predictions and their queue items, by SQL (a draw's INSERT … SELECT)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO feedback_prediction (project_id, external_id, model, model_version,
              input, output, label, confidence, segment, occurred_at, created_at, content_hash)
            SELECT %s, 'q' || %s || '-' || n, 'bot', 'v1', '{}', '{}', NULL, 0.5, '{}', now(),
              now(), 'x'
            FROM generate_series(1, %s) n
            """,
            [queue.project_id, queue.pk, count],
        )
        cursor.execute(
            """
            INSERT INTO labeling_queueitem (queue_id, prediction_id, gold_item_id, feedback_id,
              run_id, inclusion_probability, stratum, priority, status, labels_count, created_at)
            SELECT %s, p.id, NULL, NULL, NULL, 1.0, '', 0, 'open', 0, now()
            FROM feedback_prediction p
            WHERE p.project_id = %s AND p.external_id LIKE 'q' || %s || '-%%'
            ORDER BY p.id
            """,
            [queue.pk, queue.project_id, queue.pk],
        )


def _draw_with_stale_statistics(queue, count: int) -> None:
    """Statistics taken while another queue held a few thousand items (as autovacuum would
    have left them), then the draw of ``count`` items into ``queue``, never analyzed. (With
    statistics of an empty table the old plan was a coin toss; with these it sorted the draw.)"""
    _insert_items(Queue.objects.create(project=queue.project, name="earlier"), 2_000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labeling_queueitem, labeling_assignment, labeling_label")
    _insert_items(queue, count)


def _blocks_fetched() -> int:
    with connection.cursor() as cursor:
        cursor.execute(BLOCKS_FETCHED_SQL)
        return int(cursor.fetchone()[0])


def test_claims_after_a_large_draw_read_few_buffers_with_stale_statistics(
    queue, project, make_reviewer
):
    # given: a drawn queue PostgreSQL has no statistics for, and a reviewer past its first item
    alice, bob, carol = (make_reviewer(name, queue) for name in ("alice", "bob", "carol"))
    _draw_with_stale_statistics(queue, DRAWN)
    first = QueueItem.objects.filter(queue=queue).order_by("id").first()
    Label.objects.create(item=first, reviewer=carol, verdict="correct", seconds_spent=1)
    QueueItem.objects.filter(pk=first.pk).update(labels_count=1)

    # when: three reviewers claim, one after the other
    fetched, leased = [], []
    for reviewer in (alice, bob, carol):
        before = _blocks_fetched()
        lease = queue_claim_next(queue=queue, reviewer=reviewer)
        fetched.append(_blocks_fetched() - before)
        leased.append(lease.item_id)

    # then: the first items in queue order (the first has one slot left, alice takes it; bob
    # and carol share the second), each claim reading a few buffers
    ordered = list(
        QueueItem.objects.filter(queue=queue).order_by("id").values_list("id", flat=True)
    )
    assert leased == [ordered[0], ordered[1], ordered[1]]
    assert all(n < BUFFER_BOUND for n in fetched), fetched
    # and the claim's planner settings end with it, even inside an outer transaction (this one)
    with connection.cursor() as cursor:
        cursor.execute("SHOW enable_sort")
        assert cursor.fetchone() == ("on",)


def test_the_claim_plan_walks_the_claim_index_without_a_sort(queue, project, make_reviewer):
    # given
    alice = make_reviewer("alice", queue)
    _draw_with_stale_statistics(queue, DRAWN)
    now = timezone.now()
    params = {
        "queue": queue.pk,
        "reviewer": alice.pk,
        "now": now,
        "skip_since": now,
        "overlap": 2,
        "passed": [],
    }

    # when: the candidate query under the claim transaction's settings
    with connection.cursor() as cursor:
        cursor.execute(CLAIM_TRANSACTION_SQL, [1])
        cursor.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "
            + NEXT_ITEM_SQL
            + " FOR NO KEY UPDATE OF qi SKIP LOCKED",
            params,
        )
        (raw,) = cursor.fetchone()
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]

    # then: an index scan of item_claim_order that stopped after one row, no sort, few buffers
    nodes, stack = [], [plan]
    while stack:
        node = stack.pop()
        nodes.append(node)
        stack.extend(node.get("Plans", []))
    assert not [n for n in nodes if n["Node Type"] == "Sort"], plan
    scans = [n for n in nodes if n.get("Relation Name") == "labeling_queueitem"]
    assert [(n["Node Type"], n["Index Name"]) for n in scans] == [
        ("Index Scan", "item_claim_order")
    ]
    assert scans[0]["Actual Rows"] == 1
    assert plan["Shared Hit Blocks"] + plan["Shared Read Blocks"] < BUFFER_BOUND, plan

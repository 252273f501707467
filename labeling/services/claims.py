"""Claiming the next item, releasing it, and letting leases lapse.

An item needs ``overlap`` labels from distinct reviewers. Each open slot can be leased to one
reviewer for ``lease_seconds``; a lease lapses by time alone (``expires_at``), so a reviewer who
walks away never blocks an item for longer than that, and no sweep is needed for correctness.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from feedback.errors import Conflict

from ..models import Assignment, Queue, QueueItem

# Priority, then age; never an item this reviewer labeled, holds, or skipped within the lease
# window; never more live leases than open slots. SKIP LOCKED lets concurrent reviewers pass
# over an item another claim is deciding about instead of queueing behind it.
NEXT_ITEM_SQL = """
SELECT qi.id FROM labeling_queueitem qi
WHERE qi.queue_id = %(queue)s AND qi.status = 'open'
  AND NOT EXISTS (
    SELECT 1 FROM labeling_label l WHERE l.item_id = qi.id AND l.reviewer_id = %(reviewer)s)
  AND NOT EXISTS (
    SELECT 1 FROM labeling_assignment r
    WHERE r.item_id = qi.id AND r.reviewer_id = %(reviewer)s
      AND (r.status = 'active' OR (r.status = 'released' AND r.closed_at > %(skip_since)s)))
  AND qi.labels_count + (
    SELECT COUNT(*) FROM labeling_assignment a
    WHERE a.item_id = qi.id AND a.status = 'active' AND a.expires_at > %(now)s) < %(overlap)s
  AND NOT (qi.id = ANY(CAST(%(passed)s AS bigint[])))
ORDER BY qi.priority DESC, qi.created_at, qi.id
LIMIT 1
"""


LIVE_LEASE_SQL = """
SELECT a.id, a.item_id, a.leased_at, a.expires_at FROM labeling_assignment a
JOIN labeling_queueitem qi ON qi.id = a.item_id
WHERE qi.queue_id = %(queue)s AND a.reviewer_id = %(reviewer)s
  AND a.status = 'active' AND a.expires_at > %(now)s
LIMIT 1
"""

# Lease the locked candidate only if its slot is still free. A new statement, so under READ
# COMMITTED it sees every claim committed before the row lock was granted; the candidate query
# cannot (its subqueries read the snapshot taken when it started, and a competing claim only
# inserts a lease without touching the item row, so PostgreSQL does not re-check it on lock).
LEASE_IF_FREE_SQL = """
INSERT INTO labeling_assignment (item_id, reviewer_id, status, leased_at, expires_at, closed_at)
SELECT qi.id, %(reviewer)s, 'active', %(now)s, %(expires)s, NULL
FROM labeling_queueitem qi
WHERE qi.id = %(item)s AND qi.status = 'open'
  AND qi.labels_count + (
    SELECT COUNT(*) FROM labeling_assignment a
    WHERE a.item_id = qi.id AND a.status = 'active' AND a.expires_at > %(now)s) < %(overlap)s
  AND NOT EXISTS (
    SELECT 1 FROM labeling_label l WHERE l.item_id = qi.id AND l.reviewer_id = %(reviewer)s)
RETURNING id
"""
MAX_CANDIDATES = 50


def _lease(pk: int, item_id: int, reviewer: AbstractBaseUser, leased_at, expires_at) -> Assignment:
    return Assignment(
        pk=pk,
        item_id=item_id,
        reviewer=reviewer,
        status=Assignment.Status.ACTIVE,
        leased_at=leased_at,
        expires_at=expires_at,
    )


def queue_claim_next(*, queue: Queue, reviewer: AbstractBaseUser) -> Assignment | None:
    """Lease the next item of ``queue`` to ``reviewer``, or return None when nothing is left.

    A reviewer who still holds a live lease in the queue gets the same item back. Raw SQL, a
    handful of statements in one short transaction: this is the hottest path of a reviewer's day
    (the ORM cost three times the statements' own time in the claims bench).
    """
    now = timezone.now()
    postgres = connection.vendor == "postgresql"
    params = {
        "queue": queue.pk,
        "reviewer": reviewer.pk,
        "now": now,
        "expires": now + timedelta(seconds=queue.lease_seconds),
        "overlap": queue.overlap,
        "skip_since": now - timedelta(seconds=queue.lease_seconds),
        "passed": [],
    }
    candidate_sql = NEXT_ITEM_SQL + (" FOR NO KEY UPDATE OF qi SKIP LOCKED" if postgres else "")
    if not postgres:  # no arrays in SQLite; writers are serialised there, nothing is passed over
        candidate_sql = candidate_sql.replace(
            "AND NOT (qi.id = ANY(CAST(%(passed)s AS bigint[])))", ""
        )
    # The row lock needs the transaction: two reviewers must never share a slot.
    with transaction.atomic(), connection.cursor() as cursor:
        if postgres:
            # A lease is ephemeral: if a crash loses one just committed, its reviewer claims
            # again, so the claim need not wait for the WAL flush (labels always do). And one
            # claim at a time per reviewer and queue (two tabs, a double click), or both could
            # pass the "already holds a lease" check; a collision of two keys only serialises
            # two claims more than needed. SQLite's IMMEDIATE transactions serialise writers.
            cursor.execute(
                "SELECT set_config('synchronous_commit', 'off', true), pg_advisory_xact_lock(%s)",
                [(queue.pk * 1_000_003 + reviewer.pk) % 2**63],
            )
        cursor.execute(LIVE_LEASE_SQL, params)
        held = cursor.fetchone()
        if held is not None:
            return _lease(held[0], held[1], reviewer, held[2], held[3])
        for _ in range(MAX_CANDIDATES):
            cursor.execute(candidate_sql, params)
            row = cursor.fetchone()
            if row is None:
                return None
            cursor.execute(LEASE_IF_FREE_SQL, {**params, "item": row[0]})
            leased = cursor.fetchone()
            if leased is not None:
                return _lease(leased[0], row[0], reviewer, now, params["expires"])
            if not postgres:
                return None  # cannot happen with serialised writers; never loop on it
            params["passed"] = [*params["passed"], row[0]]  # filled meanwhile: look further
    return None


def item_release(*, item: QueueItem, reviewer: AbstractBaseUser) -> Assignment:
    """Give a lease back: the slot returns to the pool; the reviewer skips the item for a while."""
    now = timezone.now()
    with transaction.atomic():
        lease = (
            Assignment.objects.select_for_update()
            .filter(
                item=item, reviewer=reviewer, status=Assignment.Status.ACTIVE, expires_at__gt=now
            )
            .first()
        )
        if lease is None:
            raise Conflict.one("item", "no_lease", "You hold no live lease on this item.")
        lease.status, lease.closed_at = Assignment.Status.RELEASED, now
        lease.save(update_fields=["status", "closed_at"])
        return lease


def leases_expire() -> int:
    """Mark lapsed leases expired. Cosmetic (claims compare ``expires_at`` themselves), but it
    keeps the live-lease indexes small and the admin truthful."""
    return Assignment.objects.filter(
        status=Assignment.Status.ACTIVE, expires_at__lte=timezone.now()
    ).update(status=Assignment.Status.EXPIRED, closed_at=timezone.now())

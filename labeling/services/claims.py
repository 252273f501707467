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

# Run after the row lock is held, as a new statement: under READ COMMITTED it sees every claim
# committed before the lock was granted. The candidate query cannot: its subqueries read the
# snapshot taken when it started, and a competing claim only inserts a lease (it does not touch
# the item row), so PostgreSQL does not re-check it when the lock is finally granted.
SLOT_STILL_FREE_SQL = """
SELECT qi.labels_count + (
    SELECT COUNT(*) FROM labeling_assignment a
    WHERE a.item_id = qi.id AND a.status = 'active' AND a.expires_at > %(now)s) < %(overlap)s
  AND NOT EXISTS (
    SELECT 1 FROM labeling_label l WHERE l.item_id = qi.id AND l.reviewer_id = %(reviewer)s)
  AND qi.status = 'open'
FROM labeling_queueitem qi WHERE qi.id = %(item)s
"""
MAX_CANDIDATES = 50


def live_lease(*, queue: Queue, reviewer: AbstractBaseUser, now=None) -> Assignment | None:
    now = now or timezone.now()
    return (
        Assignment.objects.select_related("item")
        .filter(
            item__queue=queue,
            reviewer=reviewer,
            status=Assignment.Status.ACTIVE,
            expires_at__gt=now,
        )
        .first()
    )


def queue_claim_next(*, queue: Queue, reviewer: AbstractBaseUser) -> Assignment | None:
    """Lease the next item of ``queue`` to ``reviewer``, or return None when nothing is left.

    A reviewer who still holds a live lease in the queue gets the same item back.
    """
    now = timezone.now()
    # FOR UPDATE needs the transaction: two reviewers must never share a slot. The item row lock
    # is held until commit, so the slot count checked above cannot change under us.
    with transaction.atomic():
        if connection.vendor == "postgresql":
            _ephemeral_commit()
            # One claim at a time per reviewer and queue (two browser tabs, a double click):
            # otherwise both could pass the "already holds a lease" check and lease two items.
            # SQLite's IMMEDIATE transactions serialise every writer already.
            with connection.cursor() as cursor:
                # A collision of two keys only serialises two claims more than needed.
                key = (queue.pk * 1_000_003 + reviewer.pk) % 2**63
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
        held = live_lease(queue=queue, reviewer=reviewer, now=now)
        if held is not None:
            return held
        item_id = _lock_free_slot(queue=queue, reviewer=reviewer, now=now)
        if item_id is None:
            return None
        # A lapsed lease of this reviewer on this item would block the partial unique index.
        Assignment.objects.filter(
            item_id=item_id, reviewer=reviewer, status=Assignment.Status.ACTIVE
        ).update(status=Assignment.Status.EXPIRED, closed_at=now)
        return Assignment.objects.create(
            item_id=item_id,
            reviewer=reviewer,
            leased_at=now,
            expires_at=now + timedelta(seconds=queue.lease_seconds),
        )


def _lock_free_slot(*, queue: Queue, reviewer: AbstractBaseUser, now) -> int | None:
    """Lock the next item with a free slot for ``reviewer`` and return its id."""
    postgres = connection.vendor == "postgresql"
    sql = NEXT_ITEM_SQL + (" FOR NO KEY UPDATE OF qi SKIP LOCKED" if postgres else "")
    if not postgres:  # no arrays in SQLite; writers are serialised there, nothing is passed over
        sql = sql.replace("AND NOT (qi.id = ANY(CAST(%(passed)s AS bigint[])))", "")
    params = {
        "queue": queue.pk,
        "reviewer": reviewer.pk,
        "now": now,
        "overlap": queue.overlap,
        "skip_since": now - timedelta(seconds=queue.lease_seconds),
        "passed": [],
    }
    with connection.cursor() as cursor:
        for _ in range(MAX_CANDIDATES):
            cursor.execute(sql, params)
            row = cursor.fetchone()
            if row is None:
                return None
            if not postgres:
                return row[0]
            cursor.execute(SLOT_STILL_FREE_SQL, {**params, "item": row[0]})
            if cursor.fetchone()[0]:
                return row[0]
            params["passed"] = [*params["passed"], row[0]]  # filled meanwhile: look further
    return None


def _ephemeral_commit() -> None:
    """Don't wait for the WAL flush at commit. A lease is ephemeral: if a crash loses one just
    committed, its reviewer simply claims again (and gets an item), so the claim need not pay
    for durability. Labels never use this."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")


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

"""Claiming the next item, releasing it, and letting leases lapse.

An item needs ``overlap`` labels from distinct reviewers. Each open slot can be leased to one
reviewer for ``lease_seconds``; a lease lapses by time alone (``expires_at``), so a reviewer who
walks away never blocks an item for longer than that, and no sweep is needed for correctness.

Hidden gold checks. A queue with a ``gold_set`` and ``gold_rate`` > 0 serves, at that rate, an
item of the gold set's latest published version instead of a production item:

* Whether a claim is a gold check is decided by ``u(seed, "gold:<reviewer>:<n>") < gold_rate``
  (``labeling.randomness.uniform``), n being the number of leases this reviewer has taken in
  the queue so far and the seed the queue's sampling seed (its id when it has none). The draws
  are independent uniforms, so the share of gold checks is Binomial(claims, gold_rate), and a
  fixed seed gives the same sequence of decisions for the same reviewer every time. A reviewer
  who claims again while holding a lease gets it back without a draw (n counts leases taken).
* The gold item is the first, in an order of its own per reviewer (a hash of seed, reviewer and
  key), whose key this reviewer has never been served in any queue: gold items are deduplicated
  by key across versions, so a new version never serves a reviewer an item they saw in an older
  one, and a skipped check is never served again either. Nor is a check promoted from a
  prediction the reviewer was served as production work: they would recognise it, and their own
  label helped make it gold. Only items the queue can score are served (an expected verdict, or
  an expected label when the queue has label choices).
* Its QueueItem (``gold_item`` set, no prediction) is made on first use, by
  ``INSERT … ON CONFLICT DO NOTHING`` on the (queue, gold_item) unique constraint, so reviewers
  claiming the same check at once share one row. It is leased like any item, without the slot
  limit: any number of reviewers may answer one gold check, one at a time each.
* A gold check is served only among production work: when this reviewer has no production
  item left, the claim returns nothing whatever the draw says (else a reviewer told "nothing
  left" would still get items, and know them for checks). When the draw says gold but no unseen
  gold item is left, the claim serves a production item.
* The production path never sees gold checks (``qi.gold_item_id IS NULL``, which also lets
  PostgreSQL use the partial ``item_claim_order`` index) and costs nothing more when a queue has
  no gold set: the gold path runs only when a queue has one and a positive rate.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.utils import timezone

from feedback.errors import Conflict

from ..models import Assignment, Queue, QueueItem
from ..randomness import SQLITE_FUNCTION, uniform

# Priority, then age; never an item this reviewer labeled, holds, or skipped within the lease
# window; never more live leases than open slots. SKIP LOCKED lets concurrent reviewers pass
# over an item another claim is deciding about instead of queueing behind it.
#
# The plan must not depend on fresh statistics. Right after a large draw, statistics older than
# the draw say the queue has a handful of items, and PostgreSQL then found them through another
# index, ran every filter for all of them and sorted (the whole queue, per claim). Two things
# keep it on the walk down the partial ``item_claim_order`` index, stopping at the first item
# that passes: the claim's transaction turns ``enable_sort`` off (queue_claim_next), so the order
# can only come from that index, the one index that has it; and the per-reviewer tests are
# correlated subqueries fenced with ``OFFSET 0`` (not turned into joins), each an index probe
# for the row at hand, whatever the planner believes about the tables' sizes. SQLite has no
# OFFSET without LIMIT and needs neither: {fence} is empty there.
NEXT_ITEM_SQL_TEMPLATE = """
SELECT qi.id FROM labeling_queueitem qi
WHERE qi.queue_id = %(queue)s AND qi.status = 'open' AND qi.gold_item_id IS NULL
  AND NOT EXISTS (
    SELECT 1 FROM labeling_label l WHERE l.item_id = qi.id AND l.reviewer_id = %(reviewer)s{fence})
  AND NOT EXISTS (
    SELECT 1 FROM labeling_assignment r
    WHERE r.item_id = qi.id AND r.reviewer_id = %(reviewer)s
      AND (r.status = 'active' OR (r.status = 'released' AND r.closed_at > %(skip_since)s)){fence})
  AND qi.labels_count + (
    SELECT COUNT(*) FROM labeling_assignment a
    WHERE a.item_id = qi.id AND a.status = 'active' AND a.expires_at > %(now)s) < %(overlap)s
  AND NOT (qi.id = ANY(CAST(%(passed)s AS bigint[])))
ORDER BY qi.priority DESC, qi.created_at, qi.id
LIMIT 1
"""
NEXT_ITEM_SQL = NEXT_ITEM_SQL_TEMPLATE.format(fence=" OFFSET 0")  # PostgreSQL's
NEXT_ITEM_SQL_SQLITE = NEXT_ITEM_SQL_TEMPLATE.format(fence="").replace(
    "AND NOT (qi.id = ANY(CAST(%(passed)s AS bigint[])))", ""
)  # no arrays in SQLite; writers are serialised there, nothing is passed over


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

# The first statement of a claim on PostgreSQL (queue_claim_next says why each part).
CLAIM_TRANSACTION_SQL = (
    "SELECT current_setting('enable_sort'), set_config('synchronous_commit', 'off', true),"
    " set_config('enable_sort', 'off', true), pg_advisory_xact_lock(%s)"
)

# --- hidden gold checks (see the module docstring) ---

# Has this reviewer any production item left? The candidate query without lock or exclusions.
ANY_ITEM_LEFT_SQL = {
    "postgresql": NEXT_ITEM_SQL.replace("AND NOT (qi.id = ANY(CAST(%(passed)s AS bigint[])))", ""),
    "sqlite": NEXT_ITEM_SQL_SQLITE,
}

# How many leases this reviewer has taken in the queue: the n of the draw (gold_draw).
LEASES_TAKEN_SQL = """
SELECT COUNT(*) FROM labeling_assignment a
JOIN labeling_queueitem qi ON qi.id = a.item_id
WHERE a.reviewer_id = %(reviewer)s AND qi.queue_id = %(queue)s
"""

# The next gold item for this reviewer: from the latest published version, scorable by this
# queue, with a key the reviewer was never served (in any version, in any queue), not promoted
# from a prediction the reviewer was served as production work (they would know it again, and
# their own label helped make it gold), first in the reviewer's own order. {order} is
# u(salt, key) in each database's dialect, the same numbers. The keys seen are a NOT IN over an
# uncorrelated subquery (key is NOT NULL), so it runs once (a hashed subplan); as NOT EXISTS,
# PostgreSQL re-read the reviewer's leases for every gold item (docs/performance.md). The
# source test stays correlated: two index probes per gold item.
NEXT_GOLD_SQL = """
SELECT gi.id FROM labeling_golditem gi
WHERE gi.version_id = (
    SELECT v.id FROM labeling_goldsetversion v
    WHERE v.gold_set_id = %(gold_set)s AND v.status = 'published'
    ORDER BY v.number DESC LIMIT 1)
  AND (gi.expected_verdict <> '' OR (%(with_labels)s AND gi.expected_label <> ''))
  AND gi.key NOT IN (
    SELECT sg.key FROM labeling_assignment a
    JOIN labeling_queueitem sq ON sq.id = a.item_id
    JOIN labeling_golditem sg ON sg.id = sq.gold_item_id
    JOIN labeling_goldsetversion sv ON sv.id = sg.version_id
    WHERE a.reviewer_id = %(reviewer)s AND sv.gold_set_id = %(gold_set)s)
  AND NOT EXISTS (
    SELECT 1 FROM labeling_queueitem pq
    JOIN labeling_assignment pa ON pa.item_id = pq.id AND pa.reviewer_id = %(reviewer)s
    WHERE pq.prediction_id = gi.source_prediction_id)
ORDER BY {order}, gi.id
LIMIT 1
"""
GOLD_ORDER = {
    "postgresql": "('x' || substr(md5(%(salt)s || ':' || gi.key), 1, 8))::bit(32)::bigint",
    "sqlite": f"{SQLITE_FUNCTION}(%(salt)s, gi.key)",
}

# Race-safe get-or-create of the check's QueueItem: a concurrent claim that inserted the same
# (queue, gold_item) makes this one wait for it, then do nothing; the SELECT that follows is a
# new statement and sees the committed row. Priority mirrors the queue's production items (a
# disputes queue serves everything at dispute priority, and the workspace shows it).
GOLD_ITEM_INSERT_SQL = """
INSERT INTO labeling_queueitem (queue_id, prediction_id, gold_item_id, feedback_id, run_id,
  inclusion_probability, stratum, priority, status, labels_count, created_at)
VALUES (%(queue)s, NULL, %(gold_item)s, NULL, NULL, 1.0, '', %(priority)s, 'open', 0, %(now)s)
ON CONFLICT (queue_id, gold_item_id) DO NOTHING
"""
GOLD_ITEM_SQL = """
SELECT id FROM labeling_queueitem WHERE queue_id = %(queue)s AND gold_item_id = %(gold_item)s
"""

# No slot limit on a gold check: it never completes, and every reviewer may answer it once.
GOLD_LEASE_SQL = """
INSERT INTO labeling_assignment (item_id, reviewer_id, status, leased_at, expires_at, closed_at)
VALUES (%(item)s, %(reviewer)s, 'active', %(now)s, %(expires)s, NULL)
RETURNING id
"""


def _lease(pk: int, item_id: int, reviewer: AbstractBaseUser, leased_at, expires_at) -> Assignment:
    return Assignment(
        pk=pk,
        item_id=item_id,
        reviewer=reviewer,
        status=Assignment.Status.ACTIVE,
        leased_at=leased_at,
        expires_at=expires_at,
    )


def gold_draw(*, queue: Queue, reviewer_id: int, n: int) -> bool:
    """Is the reviewer's n-th claim (0-based) in the queue a gold check? Pure and deterministic.

    ``u(seed, "gold:<reviewer>:<n>")``: ``uniform`` hashes its arguments as text, so a composite
    "row" is as good as an id; the seed is the queue's sampling seed, else its id.
    """
    if queue.gold_set_id is None or not queue.gold_rate > 0:
        return False
    seed = queue.seed if queue.seed is not None else queue.pk
    return uniform(seed, f"gold:{reviewer_id}:{n}") < queue.gold_rate  # type: ignore[arg-type]


def queue_claim_next(*, queue: Queue, reviewer: AbstractBaseUser) -> Assignment | None:
    """Lease the next item of ``queue`` to ``reviewer``, or return None when nothing is left.

    A reviewer who still holds a live lease in the queue gets the same item back. Raw SQL, a
    handful of statements in one short transaction: this is the hottest path of a reviewer's day
    (the ORM cost three times the statements' own time in the claims bench). With hidden gold
    checks on, some claims lease a gold check instead (module docstring).
    """
    now = timezone.now()
    postgres = connection.vendor == "postgresql"
    params: dict[str, Any] = {
        "queue": queue.pk,
        "reviewer": reviewer.pk,
        "now": now,
        "expires": now + timedelta(seconds=queue.lease_seconds),
        "overlap": queue.overlap,
        "skip_since": now - timedelta(seconds=queue.lease_seconds),
    }
    # Items found filled meanwhile, passed over by the next candidate query (PostgreSQL only:
    # a list is no SQLite parameter, and DEBUG's query log fails on one even when unused).
    if postgres:
        params["passed"] = []
    candidate_sql = (
        NEXT_ITEM_SQL + " FOR NO KEY UPDATE OF qi SKIP LOCKED" if postgres else NEXT_ITEM_SQL_SQLITE
    )
    nested = connection.in_atomic_block
    sort_setting = "on"
    # The row lock needs the transaction: two reviewers must never share a slot.
    with transaction.atomic(), connection.cursor() as cursor:
        if postgres:
            # A lease is ephemeral: if a crash loses one just committed, its reviewer claims
            # again, so the claim need not wait for the WAL flush (labels always do). And one
            # claim at a time per reviewer and queue (two tabs, a double click), or both could
            # pass the "already holds a lease" check; a collision of two keys only serialises
            # two claims more than needed. SQLite's IMMEDIATE transactions serialise writers.
            # No sorts in this transaction: the candidate query must walk the claim index in
            # order whatever the statistics say (NEXT_ITEM_SQL). Only the gold query, which
            # has to sort, turns them back on for itself (_lease_gold).
            cursor.execute(CLAIM_TRANSACTION_SQL, [(queue.pk * 1_000_003 + reviewer.pk) % 2**63])
            sort_setting = cursor.fetchone()[0]
        lease = _claim_in_transaction(
            cursor, queue=queue, reviewer=reviewer, params=params, candidate_sql=candidate_sql
        )
        if postgres and nested:
            # Inside an outer transaction (a caller's atomic block, a test) the claim's settings
            # would outlive it: give the outer transaction its planner back. (On an error the
            # savepoint's rollback undoes them.)
            cursor.execute("SELECT set_config('enable_sort', %s, true)", [sort_setting])
        return lease


def _claim_in_transaction(
    cursor, *, queue: Queue, reviewer: AbstractBaseUser, params: dict, candidate_sql: str
) -> Assignment | None:
    """queue_claim_next's statements, inside its transaction (and, on PostgreSQL, its lock)."""
    postgres = connection.vendor == "postgresql"
    now = params["now"]
    cursor.execute(LIVE_LEASE_SQL, params)
    held = cursor.fetchone()
    if held is not None:
        return _lease(held[0], held[1], reviewer, held[2], held[3])
    if queue.gold_set_id is not None and queue.gold_rate > 0:
        cursor.execute(LEASES_TAKEN_SQL, params)
        (taken,) = cursor.fetchone()
        if gold_draw(queue=queue, reviewer_id=reviewer.pk, n=taken):
            # Gold only among production work: the plain SELECT (no lock) is enough to tell
            # whether this reviewer has anything left; a race only errs toward serving.
            cursor.execute(ANY_ITEM_LEFT_SQL[connection.vendor], params)
            if cursor.fetchone() is None:
                return None
            lease = _lease_gold(cursor, queue=queue, reviewer=reviewer, params=params)
            if lease is not None:
                return lease
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


def _lease_gold(
    cursor, *, queue: Queue, reviewer: AbstractBaseUser, params: dict
) -> Assignment | None:
    """Lease this reviewer's next unseen gold item, making its QueueItem if needed; None when
    the gold set has no published version or nothing unseen is left."""
    seed = queue.seed if queue.seed is not None else queue.pk
    postgres = connection.vendor == "postgresql"
    if postgres:
        # This query has to sort, and with sorts disabled every plan of it carries the same
        # huge penalty, which leaves the planner choosing among them blind.
        cursor.execute("SET LOCAL enable_sort = on")
    cursor.execute(
        NEXT_GOLD_SQL.format(order=GOLD_ORDER[connection.vendor]),
        {
            "gold_set": queue.gold_set_id,
            "reviewer": reviewer.pk,
            "salt": f"{seed}:{reviewer.pk}",
            "with_labels": bool(queue.label_choices),
        },
    )
    row = cursor.fetchone()
    if postgres:
        cursor.execute("SET LOCAL enable_sort = off")  # back to the claim's setting
    if row is None:
        return None
    gold = {
        "queue": queue.pk,
        "gold_item": row[0],
        "now": params["now"],
        "priority": (
            QueueItem.PRIORITY_DISPUTE
            if queue.source == Queue.Source.DISPUTES
            else QueueItem.PRIORITY_DEFAULT
        ),
    }
    cursor.execute(GOLD_ITEM_INSERT_SQL, gold)
    cursor.execute(GOLD_ITEM_SQL, gold)
    (item_id,) = cursor.fetchone()
    cursor.execute(GOLD_LEASE_SQL, {**params, "item": item_id})
    (lease_id,) = cursor.fetchone()
    return _lease(lease_id, item_id, reviewer, params["now"], params["expires"])


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

"""Read queries of the labeling app, one module per part (queues, gold sets, exports, audits).

The names most callers need are re-exported here.
"""

from .queues import (
    MANAGE_ROLES,
    READ_ROLES,
    can_manage,
    can_read,
    can_review,
    claim_payload,
    queue_stats,
    queues_for_reviewer,
    queues_visible_to,
)

__all__ = [
    "MANAGE_ROLES",
    "READ_ROLES",
    "can_manage",
    "can_read",
    "can_review",
    "claim_payload",
    "queue_stats",
    "queues_for_reviewer",
    "queues_visible_to",
]

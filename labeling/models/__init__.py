"""Labeling models, one module per part of the review-and-data side.

- ``queues``: Queue, SamplingRun, QueueItem, Assignment, Label, LabelRevision
- ``gold``: GoldSet, GoldSetVersion, GoldItem, GoldPurge (the record of a purge)
- ``exports``: Export
- ``audits``: Audit
- ``jobs``: UnsentTask (task messages a broker outage refused)
"""

from .audits import Audit
from .exports import Export
from .gold import GoldItem, GoldPurge, GoldSet, GoldSetVersion
from .jobs import UnsentTask
from .queues import Assignment, Label, LabelRevision, Queue, QueueItem, SamplingRun

__all__ = [
    "Assignment",
    "Audit",
    "Export",
    "GoldItem",
    "GoldPurge",
    "GoldSet",
    "GoldSetVersion",
    "Label",
    "LabelRevision",
    "Queue",
    "QueueItem",
    "SamplingRun",
    "UnsentTask",
]

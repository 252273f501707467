"""Read queries for exports: which items an export holds, the gold sets it touches, and who
may see it. The rows themselves (columns, the portable and the COPY statements) are the row
format's, in ``labeling.exports.rows``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.utils.dateparse import parse_datetime

from feedback.models import Project
from feedback.selectors import projects_for_user

from ..models import Export, GoldItem, GoldSetVersion, QueueItem
from ..splits import SplitSpec, group_key_of
from .queues import READ_ROLES


def as_datetime(value: Any) -> dt.datetime | None:
    """A filter bound as given (a datetime) or as stored in an export's spec (ISO text)."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return parse_datetime(str(value))


def export_items(
    *, project: Project, queue: Any = None, filter: dict | None = None
) -> QuerySet[QueueItem]:
    """The completed production items an export with this filter would contain.

    Hidden gold checks (items with ``gold_item``) are never part of an export. ``filter`` takes
    ``model_version``, ``completed_after`` (inclusive), ``completed_before`` (exclusive) as
    datetimes or ISO strings, and ``segment`` (``{key: value}``, all must match). ``queue`` is a
    Queue, a queue id, or None for every queue of the project.
    """
    spec = filter or {}
    items = QueueItem.objects.filter(
        queue__project=project,
        status=QueueItem.Status.COMPLETE,
        gold_item__isnull=True,
        prediction__isnull=False,
    )
    if queue is not None:
        items = items.filter(queue=queue)
    if spec.get("model_version") is not None:
        items = items.filter(prediction__model_version=spec["model_version"])
    if spec.get("completed_after") is not None:
        items = items.filter(completed_at__gte=as_datetime(spec["completed_after"]))
    if spec.get("completed_before") is not None:
        items = items.filter(completed_at__lt=as_datetime(spec["completed_before"]))
    for key, value in sorted((spec.get("segment") or {}).items()):
        # Per-key equality rather than JSON containment: SQLite has no ``contains`` on JSON.
        items = items.filter(**{f"prediction__segment__{key}": value})
    return items.select_related("prediction", "queue")


def gold_source_predictions(*, project: Project) -> QuerySet[GoldItem]:
    """Items of the project's published gold-set versions that came from a prediction."""
    return GoldItem.objects.filter(
        version__gold_set__project=project,
        version__status=GoldSetVersion.Status.PUBLISHED,
        source_prediction_id__isnull=False,
    )


def gold_group_keys(*, project: Project, spec: SplitSpec) -> list[str]:
    """Group keys (under ``spec.key``) of the predictions behind published gold items.

    Gold sets are small (hundreds to thousands of items), so the keys travel as a list.
    """
    from feedback.models import Prediction

    predictions = Prediction.objects.filter(
        pk__in=gold_source_predictions(project=project).values("source_prediction_id")
    ).values_list("external_id", "segment")
    keys = {
        group_key_of(spec, external_id=external_id, segment=segment)
        for external_id, segment in predictions
    }
    return sorted(keys)


def gold_versions_touched(*, items: QuerySet[QueueItem], project: Project) -> list[dict]:
    """Published gold-set versions holding an item whose source prediction is in ``items``."""
    versions = (
        gold_source_predictions(project=project)
        .filter(source_prediction_id__in=items.values("prediction_id"))
        .values_list("version__gold_set__slug", "version__number", "version__checksum")
        .distinct()
        .order_by("version__gold_set__slug", "version__number")
    )
    return [
        {"gold_set": slug, "version": number, "checksum": checksum}
        for slug, number, checksum in versions
    ]


# --- visibility ------------------------------------------------------------------------------


def exports_visible_to(*, user: AbstractBaseUser) -> QuerySet[Export]:
    """Exports of the projects where the person is a data scientist or an admin."""
    projects = projects_for_user(user=user, roles=READ_ROLES)
    return Export.objects.filter(project__in=projects).select_related(
        "project", "queue", "gold_version", "requested_by"
    )


def exports_of_project(*, project_id: int) -> QuerySet[Export]:
    return Export.objects.filter(project_id=project_id).select_related(
        "project", "queue", "gold_version", "requested_by"
    )


def goldset_version_for_export(
    *, project_ids: QuerySet | list[int], slug: str, number: int, project_slug: str | None = None
) -> GoldSetVersion | None:
    versions = GoldSetVersion.objects.filter(
        gold_set__project__in=project_ids, gold_set__slug=slug, number=number
    ).select_related("gold_set", "gold_set__project")
    if project_slug:
        versions = versions.filter(gold_set__project__slug=project_slug)
    return versions.order_by("gold_set__project__slug").first()


def gold_items_for_export(*, version: GoldSetVersion) -> QuerySet[GoldItem]:
    return GoldItem.objects.filter(version=version).order_by("key")


__all__ = [
    "export_items",
    "exports_of_project",
    "exports_visible_to",
    "gold_group_keys",
    "gold_items_for_export",
    "gold_source_predictions",
    "gold_versions_touched",
    "goldset_version_for_export",
]

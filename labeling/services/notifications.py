"""Webhook events of the labeling side, written to the outbox (``feedback.services.events``).

Each ``*_emit`` is called inside the transaction that marks the job done or the version
published, so the event exists exactly when the change does. ``labels_ready_emit_due`` runs
from beat: it reads completed items per queue from the ``item_completed`` index, so nothing on
the labeling path waits for it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max
from django.urls import reverse
from django.utils import timezone

from feedback.services.events import event_emit

from ..models import Audit, Export, GoldSetVersion, Queue, QueueItem, SamplingRun


def export_finished_emit(*, export_id: int) -> None:
    export = Export.objects.filter(pk=export_id).first()
    if export is None or export.status not in (Export.Status.DONE, Export.Status.FAILED):
        return
    done = export.status == Export.Status.DONE
    event_emit(
        project_id=export.project_id,
        type="export.finished",
        data={
            "id": export.pk,
            "status": export.status,
            "format": export.format,
            "queue": export.queue_id,
            "rows": export.rows if done else None,
            "checksum": export.checksum if done else None,
            "download_url": settings.REDRESS_PUBLIC_URL + reverse("export-download",
                                                                  args=[export.pk])
            if done else None,
            "error": export.error if not done else "",
        },
    )


def goldset_published_emit(*, version: GoldSetVersion) -> None:
    gold_set = version.gold_set
    event_emit(
        project_id=gold_set.project_id,
        type="goldset.published",
        data={
            "slug": gold_set.slug,
            "version": version.number,
            "checksum": version.checksum,
            "item_count": version.item_count,
            "published_at": version.published_at,
        },
    )


def audit_finished_emit(*, audit_id: int) -> None:
    audit = Audit.objects.filter(pk=audit_id, status=Audit.Status.DONE).first()
    if audit is None:
        return
    result = audit.result or {}
    event_emit(
        project_id=audit.project_id,
        type="audit.finished",
        data={
            "id": audit.pk,
            "flagged": len(result.get("flagged") or []),
            "rows": (result.get("scope") or {}).get("rows"),
            "model_version": audit.model_version or None,
        },
    )


def sampling_run_finished_emit(*, run: SamplingRun) -> None:
    event_emit(
        project_id=run.queue.project_id,
        type="sampling_run.finished",
        data={
            "id": run.pk,
            "queue": run.queue_id,
            "status": run.status,
            "sampled": sum((run.sampled or {}).values()),
            "population": sum((run.population or {}).values()),
            "trigger": run.trigger,
        },
    )


def labels_ready_emit_due() -> int:
    """``labels.ready`` for every queue with ``notify_every`` items completed since its last
    one. One transaction per queue, the queue row locked: two beats never send it twice."""
    sent = 0
    for queue_id in Queue.objects.filter(notify_every__gt=0).values_list("pk", flat=True):
        with transaction.atomic():
            queue = Queue.objects.select_for_update().filter(pk=queue_id).first()
            if queue is None or queue.notify_every <= 0:
                continue
            completed = QueueItem.objects.filter(
                queue=queue, status=QueueItem.Status.COMPLETE, gold_item__isnull=True
            )
            if queue.labels_notified_at is not None:
                completed = completed.filter(completed_at__gt=queue.labels_notified_at)
            tally = completed.aggregate(n=Count("pk"), last=Max("completed_at"))
            if tally["n"] < queue.notify_every:
                continue
            event_emit(
                project_id=queue.project_id,
                type="labels.ready",
                data={
                    "queue": queue.pk,
                    "name": queue.name,
                    "completed": tally["n"],
                    "since": queue.labels_notified_at,
                    "until": tally["last"],
                    "notify_every": queue.notify_every,
                },
            )
            queue.labels_notified_at = tally["last"] or timezone.now()
            queue.save(update_fields=["labels_notified_at"])
            sent += 1
    return sent

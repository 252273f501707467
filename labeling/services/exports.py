"""Exports: labeled batches as JSONL / CSV / Parquet files. This module is the lifecycle; the
file itself is built by ``labeling.exports`` (the engine, the row format, the writers, storage
and the manifest).

Lifecycle (``Export.status``): ``export_create`` takes a request checked by
``labeling.exports.request.export_request`` and records it ``pending``, enqueueing the build
after commit. ``export_build`` (the Celery task's body) claims it with a conditional update
``pending → running`` (a duplicate delivery finds nothing to claim),
streams rows into a temporary file, moves the finished file into Django storage, and marks it
``done`` with its sha256, size, counts and manifest in one final conditional update. Any error
marks it ``failed`` with the error; nothing is ever ``done`` without its complete file. A worker
killed mid-way leaves ``running``: ``exports_recover`` hands such exports back (``pending``,
enqueued again) once they are older than the task's hard time limit, so no live build is ever
taken over, and gives up after ``MAX_ATTEMPTS``. A build the broker could not take (an outage)
is sent again by the unsent-task sweep (``labeling.enqueue``) once the broker is back.

The build is not one transaction (a file is written meanwhile): its reads share one
REPEATABLE READ snapshot on PostgreSQL, so counts, gold keys and rows agree with each other,
and its writes are single conditional statements keyed on the attempt number, so a stale
attempt can never overwrite a newer one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Callable

from django.contrib.auth.models import AbstractBaseUser
from django.db import OperationalError, connection, transaction
from django.db.models import F
from django.utils import timezone

from feedback.errors import Conflict, NotFound
from feedback.models import Project

from ..enqueue import enqueue_after_commit
from ..exports.engine import build_file
from ..exports.manifest import export_manifest, file_manifest
from ..exports.request import DEFAULT_SPLIT, ExportRequest
from ..exports.rows import ExportPlan, segment_keys_of
from ..exports.storage import export_file_delete, export_file_store
from ..models import Export, Queue
from ..selectors.exports import gold_group_keys
from ..splits import SplitSpec
from . import notifications

MAX_ATTEMPTS = 3


def _requester(actor: AbstractBaseUser | None, key_id: int | None) -> str:
    if key_id:
        return f"api-key:{key_id}"
    if actor is not None and actor.is_authenticated and actor.pk is not None:
        return actor.get_username()
    return "system"


@transaction.atomic
def export_create(
    *,
    project: Project,
    request: ExportRequest,
    actor: AbstractBaseUser | None = None,
    key_id: int | None = None,
) -> Export:
    """Record a pending export of the project's labeled items and enqueue its build.
    ``request``: checked by ``export_request``; the queue must be the project's (404)."""
    queue = None
    if request.queue_id is not None:
        queue = Queue.objects.filter(pk=request.queue_id, project=project).first()
        if queue is None:
            raise NotFound.one(
                "queue", "not_found", f"No queue {request.queue_id} in this project."
            )
    now = timezone.now()
    export = Export.objects.create(
        project=project,
        queue=queue,
        format=request.format,
        spec=request.spec,
        requested_by=actor if actor is not None and actor.pk is not None else None,
        manifest={"requested_by": _requester(actor, key_id), "requested_at": now.isoformat()},
    )
    enqueue_after_commit("export_build_task", export.pk)
    return export


@transaction.atomic
def export_retry(*, export: Export) -> Export:
    """Send a failed export back to the queue (a fresh set of attempts)."""
    if not Export.objects.filter(pk=export.pk, status=Export.Status.FAILED).update(
        status=Export.Status.PENDING, attempts=0, error="", progress=0.0
    ):
        raise Conflict.one("status", "not_failed", "Only a failed export can be retried.")
    enqueue_after_commit("export_build_task", export.pk)
    export.refresh_from_db()
    return export


# --- the build -------------------------------------------------------------------------------


def _plan(export: Export) -> ExportPlan:
    spec = export.spec or {}
    split = SplitSpec(**{**DEFAULT_SPLIT, **(spec.get("split") or {})})
    exclude_gold = spec.get("exclude_gold_from_train", True)
    plan = ExportPlan(
        project=export.project,
        queue_id=export.queue_id,
        filter=spec.get("filter") or {},
        include_labels=bool(spec.get("include_labels")),
        include_comments=bool(spec.get("include_comments")),
        split=split,
        gold_groups=gold_group_keys(project=export.project, spec=split) if exclude_gold else [],
    )
    keys = spec.get("segment_columns")
    # Unnamed: the project's keys, read in the build's snapshot (as the rows are).
    segment_keys = (
        tuple(keys)
        if keys is not None
        else segment_keys_of(project=export.project, filter=plan.filter)
    )
    return dataclasses.replace(plan, segment_keys=segment_keys)


def export_build(
    *,
    export_id: int,
    portable: bool | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Export | None:
    """Build a pending export (the Celery task's body). Idempotent: only a pending export is
    claimed, so a retry or a duplicate delivery does the job once.

    ``portable`` forces the ORM path (default: PostgreSQL COPY on PostgreSQL, ORM elsewhere);
    ``on_progress(rows, total)`` is called as rows are written (the command's progress bar).
    """
    claimed = Export.objects.filter(pk=export_id, status=Export.Status.PENDING).update(
        status=Export.Status.RUNNING,
        started_at=timezone.now(),
        finished_at=None,
        attempts=F("attempts") + 1,
        progress=0.0,
        error="",
    )
    export = (
        Export.objects.select_related("project", "queue", "requested_by")
        .filter(pk=export_id)
        .first()
    )
    if not claimed or export is None:  # done, failed, taken by another worker, or deleted
        return export
    attempt = export.attempts
    mine = Export.objects.filter(pk=export_id, status=Export.Status.RUNNING, attempts=attempt)
    result = None
    try:
        result = build_file(
            export,
            plan=lambda: _plan(export),
            portable=portable,
            on_progress=on_progress,
            manifest=lambda plan, rows, per_split, gold_versions: file_manifest(
                export=export,
                plan=plan,
                rows=rows,
                rows_per_split=per_split,
                gold_versions=gold_versions,
            ),
        )
        checksum, size = result.sha256, result.size
        name = export_file_store(export=export, path=result.path, checksum=checksum)
        manifest = {
            **(export.manifest or {}),
            **export_manifest(export=export, result=result),
            "sha256": checksum,
            "size_bytes": size,
            "file": name,
            "built_at": timezone.now().isoformat(),
            "attempt": attempt,
        }
        # The DONE update and its event in one transaction: no export.finished is lost between.
        with transaction.atomic():
            updated = mine.update(
                status=Export.Status.DONE,
                progress=1.0,
                rows=result.rows,
                rows_per_split=result.rows_per_split,
                checksum=checksum,
                size_bytes=size,
                manifest=manifest,
                file=name,
                finished_at=timezone.now(),
            )
            if updated:
                notifications.export_finished_emit(export_id=export_id)
        if not updated:
            # The recovery sweep took this export over meanwhile; the newer attempt owns it.
            export_file_delete(name=name)
    except OperationalError as exc:
        # Transient (a lost connection, a failover): give the attempt back for a retry.
        connection.close_if_unusable_or_obsolete()
        if attempt < MAX_ATTEMPTS:
            mine.update(status=Export.Status.PENDING, error=f"attempt {attempt}: {exc}")
            raise
        mine.update(status=Export.Status.FAILED, error=str(exc), finished_at=timezone.now())
    except Exception as exc:  # every other error is the export's outcome, not the task's
        mine.update(
            status=Export.Status.FAILED,
            error=f"{type(exc).__name__}: {exc}"[:5000],
            finished_at=timezone.now(),
        )
        notifications.export_finished_emit(export_id=export_id)
    finally:
        if result is not None and os.path.exists(result.path):
            os.unlink(result.path)
    export.refresh_from_db()
    return export


def exports_recover(*, stale_after_seconds: int) -> int:
    """Hand back exports whose worker died (``running`` past the time limit) or whose message
    was lost (``pending`` too long): they are enqueued again; after ``MAX_ATTEMPTS`` they fail.
    """
    cutoff = timezone.now() - dt.timedelta(seconds=stale_after_seconds)
    Export.objects.filter(
        status=Export.Status.RUNNING, started_at__lt=cutoff, attempts__gte=MAX_ATTEMPTS
    ).update(
        status=Export.Status.FAILED,
        error=f"The worker was lost {MAX_ATTEMPTS} times.",
        finished_at=timezone.now(),
    )
    stale_running = list(
        Export.objects.filter(status=Export.Status.RUNNING, started_at__lt=cutoff).values_list(
            "pk", "attempts"
        )
    )
    handed_back = [
        pk
        for pk, attempts in stale_running
        # Keyed on the attempt: a build that finishes meanwhile keeps its result.
        if Export.objects.filter(pk=pk, status=Export.Status.RUNNING, attempts=attempts).update(
            status=Export.Status.PENDING, error=f"attempt {attempts}: the worker was lost"
        )
    ]
    lost_messages = list(
        Export.objects.filter(status=Export.Status.PENDING, created_at__lt=cutoff)
        .exclude(pk__in=handed_back)
        .values_list("pk", flat=True)
    )
    for pk in [*handed_back, *lost_messages]:
        enqueue_after_commit("export_build_task", pk)
    return len(handed_back) + len(lost_messages)


__all__ = [
    "MAX_ATTEMPTS",
    "export_build",
    "export_create",
    "export_retry",
    "exports_recover",
]

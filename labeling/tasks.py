"""Thin Celery tasks: load by id, call a service. Each is idempotent (see the services)."""

from __future__ import annotations

from functools import partial

from celery import shared_task
from django.conf import settings
from django.db import OperationalError

from .services import audits, claims, labels, sampling

# A job recorded in a row (sampling run, export, audit): acknowledged once done, so a worker
# lost mid-job hands it back; retried when the database is briefly unreachable.
job_task = partial(
    shared_task, bind=True, autoretry_for=(OperationalError,), retry_backoff=True, acks_late=True
)


@job_task(max_retries=5)
def sampling_run_task(self, run_id: int) -> str:
    return sampling.sampling_run_execute(run_id=run_id).status


@shared_task
def queues_schedule_task() -> int:
    return len(sampling.queues_schedule_due())


@shared_task
def sampling_runs_recover_task() -> int:
    return sampling.sampling_runs_recover(
        stale_after_seconds=settings.REDRESS_SAMPLING_STALE_SECONDS
    )


@shared_task
def leases_expire_task() -> int:
    return claims.leases_expire()


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5)
def queue_consensus_task(queue_id: int) -> int:
    return labels.queue_consensus_recompute(queue_id=queue_id)


@job_task(max_retries=3)
def export_build_task(self, export_id: int) -> str:
    from .services.exports import export_build  # pyarrow loads only in workers that build

    export = export_build(export_id=export_id)
    return export.status if export is not None else "missing"


@shared_task
def exports_recover_task() -> int:
    from .services.exports import exports_recover

    return exports_recover(stale_after_seconds=settings.REDRESS_EXPORT_STALE_SECONDS)


@job_task(max_retries=5)
def audit_run_task(self, audit_id: int) -> str:
    return audits.audit_run(audit_id=audit_id).status


@shared_task
def audits_recover_task() -> int:
    return audits.audits_recover(stale_after_seconds=settings.REDRESS_AUDIT_STALE_SECONDS)


@shared_task
def unsent_tasks_send_task() -> int:
    """Send again what a broker outage refused (every minute: the beat only runs this once
    the broker takes messages again)."""
    from .enqueue import unsent_tasks_send

    return unsent_tasks_send()


@shared_task
def labels_ready_task() -> int:
    from .services.notifications import labels_ready_emit_due

    return labels_ready_emit_due()

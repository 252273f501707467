"""Enqueue a Celery task after the transaction commits, and never fail the caller for it.

Every job row (sampling run, export, audit, a Dawid-Skene refit request) is committed first and
its task sent afterwards (``transaction.on_commit``, ``robust=True``): a message can never name a
row that does not exist. If the broker is down the send fails *after* the commit; the request
must still answer as usual (202: the job is recorded), or the client's retry would record it
twice. So a refused send is logged and kept as an ``UnsentTask`` row, and the beat's
``unsent_tasks_send_task`` (every minute) sends those again once the broker is back; every task
is idempotent (a conditional claim), so a late or repeated message does the job once.

The slow recovery sweeps (``exports_recover``, ``sampling_runs_recover``, ``audits_recover``)
stay the net for what this cannot see: a process killed between the commit and the send, or a
message the broker lost after taking it.

This is the one place that imports ``labeling.tasks`` from below it (tasks import services).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

from .models import UnsentTask

log = logging.getLogger(__name__)

# Unsent tasks sent again per sweep, at most (oldest first); the rest wait for the next tick.
RESEND_BATCH = 1000
# A send runs in the request after its commit: a frozen broker must cost it about a second, not
# hang it (Redis sockets have no timeout by default). These apply to this connection only; the
# workers' long-lived connections keep the broker settings.
SEND_TIMEOUT_SECONDS = 0.5
SEND_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}


def enqueue_after_commit(
    task_name: str, *args: int, when: Callable[[], bool] | None = None
) -> None:
    """Send ``labeling.tasks.<task_name>(*args)`` once the current transaction commits (at
    once outside one). ``when``, if given, runs after the commit and decides whether to send."""

    def send() -> None:
        if when is None or when():
            enqueue_now(task_name, *args)

    # robust: whatever goes wrong here is logged, never raised into the committed request.
    transaction.on_commit(send, robust=True)


def enqueue_now(task_name: str, *args: int) -> bool:
    """Send the task now; on failure log it, keep it as an ``UnsentTask`` and return False."""
    from . import tasks  # tasks import services, services import this module

    task = getattr(tasks, task_name)
    try:
        with task.app.connection_for_write(
            transport_options={
                "socket_timeout": SEND_TIMEOUT_SECONDS,
                "socket_connect_timeout": SEND_TIMEOUT_SECONDS,
            },
            connect_timeout=SEND_TIMEOUT_SECONDS,
        ) as broker:
            task.apply_async(args=args, connection=broker, retry_policy=SEND_RETRY_POLICY)
    except Exception as exc:  # kombu's errors vary by transport: any refusal is an outage here
        log.warning(
            "enqueue failed: %s%r (%s: %s); kept for the unsent-task sweep",
            task_name,
            args,
            type(exc).__name__,
            exc,
        )
        try:
            UnsentTask.objects.create(task=task_name, args=list(args), error=str(exc)[:2000])
        except Exception:  # the database too: the slow recovery sweeps remain
            log.exception("could not keep the unsent task %s%r", task_name, args)
        return False
    return True


def unsent_tasks_send(*, limit: int = RESEND_BATCH) -> int:
    """Send the kept tasks again, oldest first; returns how many were sent. Each row is deleted
    before its send (two sweeps never send one twice); a send that fails again is kept anew."""
    sent = 0
    for row in UnsentTask.objects.order_by("pk")[:limit]:
        deleted, _ = UnsentTask.objects.filter(pk=row.pk).delete()
        if deleted and enqueue_now(row.task, *row.args):
            sent += 1
    return sent


__all__ = ["enqueue_after_commit", "enqueue_now", "unsent_tasks_send"]

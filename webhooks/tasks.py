"""Thin Celery tasks: load by id, call a service. Each is idempotent (see services.dispatch)."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from .services.dispatch import (
    COUNTDOWN_MAX_SECONDS,
    delivery_attempt,
    delivery_send,
    enqueue,
    event_fan_out_and_claim,
    relaxed_commits,
    webhooks_sweep,
)

# No time limit beyond the attempt's own socket timeouts is needed; these bound a stuck worker.
LIMITS = {"soft_time_limit": 120, "time_limit": 150}


def _after(delivery, delay: float | None) -> str:
    if delivery is None:
        return "skipped"
    if delay is not None and delay <= COUNTDOWN_MAX_SECONDS:
        # A soon retry waits on the broker; a later one is sent by the sweep when due.
        enqueue(webhook_deliver_task, delivery.pk, countdown=delay)
    return delivery.status


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5, **LIMITS)
def webhook_event_task(event_id: int) -> int:
    """Fan an event out; deliver a single delivery here, hand several to their own tasks (an
    endpoint that hangs must not hold up the others)."""
    with relaxed_commits():
        deliveries, claimed = event_fan_out_and_claim(event_id=event_id)
        if claimed is not None:
            _after(*delivery_send(delivery=claimed))
    if claimed is None:
        for pk in deliveries:
            enqueue(webhook_deliver_task, pk)
    return len(deliveries)


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5, **LIMITS)
def webhook_deliver_task(delivery_id: int) -> str:
    with relaxed_commits():
        return _after(*delivery_attempt(delivery_id=delivery_id))


@shared_task(**LIMITS)
def webhooks_sweep_task() -> dict[str, int]:
    with relaxed_commits():
        return webhooks_sweep(enqueue_delivery=lambda pk: enqueue(webhook_deliver_task, pk))

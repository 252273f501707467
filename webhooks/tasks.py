"""Thin Celery tasks: load by id, call a service. Each is idempotent (see services.dispatch)."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from .services.dispatch import (
    COUNTDOWN_MAX_SECONDS,
    deliveries_send_claimed,
    delivery_attempt,
    enqueue,
    events_fan_out,
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
def webhook_events_task(event_ids: list[int]) -> int:
    """Fan committed events out and make their first attempts (see
    ``deliveries_send_claimed``). Events fanned out already (a duplicate message, the sweep
    came first) are left to their own deliveries' tasks."""
    with relaxed_commits():
        claimed = events_fan_out(event_ids=list(event_ids), claim=True)
        for delivery, delay in deliveries_send_claimed(claimed):
            _after(delivery, delay)
    return len(claimed)


@shared_task(autoretry_for=(OperationalError,), retry_backoff=True, max_retries=5, **LIMITS)
def webhook_deliver_task(delivery_id: int) -> str:
    with relaxed_commits():
        return _after(*delivery_attempt(delivery_id=delivery_id))


@shared_task(**LIMITS)
def webhooks_sweep_task() -> dict[str, int]:
    with relaxed_commits():
        return webhooks_sweep(enqueue_delivery=lambda pk: enqueue(webhook_deliver_task, pk))

"""Getting outbox events to endpoints: fan-out, one delivery attempt, retries, the sweep.

An event committed by ``feedback.services.events.event_emit`` is fanned out by a task enqueued
after commit (``event_committed``); a lost task (broker outage, crash) is made up by the sweep
beat runs every minute, which also sends retries that are due. Every step is idempotent: one
delivery per (endpoint, event) by constraint, and an attempt is claimed with a conditional
UPDATE, so a duplicate task sends nothing twice at once.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from feedback.models import Feedback, Membership, OutboxEvent

from .. import payloads, transport
from ..models import EventCursor, Webhook, WebhookDelivery

log = logging.getLogger(__name__)
Status = WebhookDelivery.Status
OPEN = (Status.PENDING, Status.RETRYING)
LOG_ENTRIES = 50  # attempts kept in a delivery's log
# Retries sooner than this wait on the broker (a countdown); later ones are sent by the sweep.
COUNTDOWN_MAX_SECONDS = 60
SWEEP_GRACE_SECONDS = 30  # a due delivery younger than this still has its own task coming
SWEEP_BATCH = 1000
BATCH_SECONDS = 30  # a task's first attempts stop after this; what is left gets its own tasks
SAVE_EVERY = 25  # outcomes of a batch are saved this many at a time
DISPUTE_OVERLAP = timedelta(minutes=5)  # transactions commit late: re-read this far back


def retry_schedule() -> list[float]:
    return [float(s) for s in settings.REDRESS_WEBHOOK_RETRY_SECONDS]


def attempt_timeout() -> float:
    return float(settings.REDRESS_WEBHOOK_TIMEOUT)


@contextmanager
def relaxed_commits() -> Iterator[None]:
    """Delivery bookkeeping commits without waiting for the WAL flush (PostgreSQL
    ``synchronous_commit = off`` for this session, reset after).

    Safe here: the outbox event itself was committed durably by the change that emitted it. A
    database crash can lose only the last fraction of a second of bookkeeping: a fan-out (the
    sweep redoes it) or an attempt's outcome (the delivery is sent again, under the same
    ``webhook-id``, which receivers deduplicate on). What it saves is a disk flush per commit,
    two or three per delivery.
    """
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET synchronous_commit")


def enqueue(task, *args, countdown: float | None = None) -> bool:
    """Send a task now; False (logged) when the broker is unreachable: the sweep catches up."""
    try:
        if countdown:
            task.apply_async(args, countdown=countdown)
        else:
            task.delay(*args)
        return True
    except Exception:  # any broker error; the outbox row and the delivery row are the truth
        log.warning("webhooks: could not enqueue %s%r; the sweep will", task.name, args,
                    exc_info=True)
        return False


def enqueue_on_commit(task, *args) -> None:
    """Enqueue after the current transaction commits; a broker error never undoes it."""
    transaction.on_commit(partial(enqueue, task, *args), robust=True)


EVENTS_PER_TASK = 100  # a task fans out and sends this many events (two workers share 200)


def event_committed(event_pks: list[int]) -> None:
    """The listener of ``feedback.services.events``: the events a transaction committed go to
    workers in tasks of up to ``EVENTS_PER_TASK``."""
    from ..tasks import webhook_events_task  # tasks import services: import late

    for start in range(0, len(event_pks), EVENTS_PER_TASK):
        enqueue(webhook_events_task, event_pks[start : start + EVENTS_PER_TASK])


# --- Fan-out -----------------------------------------------------------------------------------


def event_fan_out(*, event_id: int) -> list[int]:
    """One delivery per endpoint of the event's project subscribed to its type (or the one
    endpoint a test send names). Idempotent. Returns the ids of its deliveries still open."""
    events_fan_out(event_ids=[event_id], claim=False)
    return list(
        WebhookDelivery.objects.filter(event_id=event_id, status__in=OPEN)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _lock_until(now):
    # The claim outlives the longest attempt (connect + read timeouts, with a margin); a
    # worker that dies mid-attempt leaves the delivery to the sweep once it has expired.
    return now + timedelta(seconds=3 * attempt_timeout() + 30)


def events_fan_out(*, event_ids: list[int], claim: bool) -> list[WebhookDelivery]:
    """Fan out those of ``event_ids`` not fanned out yet, in one transaction; with ``claim``
    the deliveries are created claimed for their first attempt (``locked_until``, attempt 1)
    and returned with ``webhook`` and ``event`` loaded, ready for ``delivery_send``."""
    with transaction.atomic():
        # FOR UPDATE in id order: two tasks fanning out the same events (a duplicate message,
        # the sweep) queue here without deadlock; the second finds them done.
        events = list(
            OutboxEvent.objects.select_for_update()
            .filter(pk__in=list(event_ids), fanned_out_at__isnull=True)
            .order_by("pk")
        )
        if not events:
            return []
        hooks_of: dict[int, list[Webhook]] = {}
        for hook in Webhook.objects.filter(
            project_id__in={e.project_id for e in events}, active=True
        ):
            hooks_of.setdefault(hook.project_id, []).append(hook)
        named = {
            hook.pk: hook
            for hook in Webhook.objects.filter(
                pk__in=[e.only_webhook_id for e in events if e.only_webhook_id is not None]
            )
        }
        now = timezone.now()
        made: list[WebhookDelivery] = []
        for event in events:
            if event.only_webhook_id is not None:
                hook = named.get(event.only_webhook_id)
                hooks = [hook] if hook is not None and hook.project_id == event.project_id else []
            else:
                hooks = [
                    h for h in hooks_of.get(event.project_id, []) if h.subscribed_to(event.type)
                ]
            made += [
                WebhookDelivery(
                    webhook=hook, event=event, next_attempt_at=now,
                    locked_until=_lock_until(now) if claim else None,
                    attempts=1 if claim else 0,
                )
                for hook in hooks
            ]
        WebhookDelivery.objects.bulk_create(made)
        OutboxEvent.objects.filter(pk__in=[e.pk for e in events]).update(fanned_out_at=now)
    return made if claim else []


def deliveries_send_claimed(
    deliveries: list[WebhookDelivery],
) -> list[tuple[WebhookDelivery, float | None]]:
    """First attempts of deliveries claimed by ``events_fan_out``, endpoint by endpoint over
    its kept-alive connection. An endpoint that gives no HTTP answer (timeout, refused) costs
    one attempt: its other deliveries here are handed back unattempted, due after the first
    retry delay, so a hanging endpoint never holds a worker for a whole batch."""
    results: list[tuple[WebhookDelivery, float | None]] = []
    by_webhook: dict[int, list[WebhookDelivery]] = {}
    for delivery in deliveries:
        by_webhook.setdefault(delivery.webhook_id, []).append(delivery)
    deadline = time.monotonic() + BATCH_SECONDS
    unsaved: list[WebhookDelivery] = []

    def save() -> None:
        # Safe to write without conditions: these rows are still claimed by this worker.
        _outcomes_save(unsaved)
        unsaved.clear()

    for batch in by_webhook.values():
        for position, delivery in enumerate(batch):
            if time.monotonic() > deadline:  # a slow endpoint: the rest go to tasks of their own
                rest = [d.pk for d in batch[position:]]
                WebhookDelivery.objects.filter(pk__in=rest).update(
                    locked_until=None, attempts=F("attempts") - 1
                )
                results += [(d, 0.0) for d in batch[position:]]
                break
            delivery, delay = delivery_send(delivery=delivery, write=False)
            unsaved.append(delivery)
            if len(unsaved) >= SAVE_EVERY:
                save()
            results.append((delivery, delay))
            if delivery.last_response_status is None and delivery.status == Status.RETRYING:
                save()
                rest = [d.pk for d in batch[position + 1:]]
                if rest:
                    WebhookDelivery.objects.filter(pk__in=rest).update(
                        locked_until=None,
                        attempts=F("attempts") - 1,
                        next_attempt_at=delivery.next_attempt_at,
                    )
                    results += [(d, delay) for d in batch[position + 1:]]
                break
    if unsaved:
        save()
    return results


def _outcomes_save(deliveries: list[WebhookDelivery]) -> None:
    """Save the outcomes of attempts (``OUTCOME_FIELDS``): on PostgreSQL one UPDATE from
    arrays (Django's ``bulk_update`` builds a CASE per field and row, slower than the rows'
    own UPDATEs); elsewhere row by row."""
    if not deliveries:
        return
    if connection.vendor != "postgresql":
        for d in deliveries:
            WebhookDelivery.objects.filter(pk=d.pk).update(
                **{name: getattr(d, name) for name in OUTCOME_FIELDS}
            )
        return
    table = WebhookDelivery._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {table} AS d SET locked_until = NULL, last_response_status = v.rs,
                last_error = v.err, log = v.log::jsonb, status = v.st, delivered_at = v.da,
                next_attempt_at = v.na
            FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::text[], %s::text[],
                        %s::timestamptz[], %s::timestamptz[]) AS v(id, rs, err, log, st, da, na)
            WHERE d.id = v.id""",
            [
                [d.pk for d in deliveries],
                [d.last_response_status for d in deliveries],
                [d.last_error for d in deliveries],
                [json.dumps(d.log) for d in deliveries],
                [d.status for d in deliveries],
                [d.delivered_at for d in deliveries],
                [d.next_attempt_at for d in deliveries],
            ],
        )


# --- One attempt -------------------------------------------------------------------------------


def _backoff(attempt: int, schedule: list[float]) -> float | None:
    """Seconds until the next try after failed attempt ``attempt`` (1-based), ±20% jitter so
    endpoints coming back are not hit by every retry at once; None: no tries left."""
    if attempt > len(schedule):
        return None
    return schedule[attempt - 1] * random.uniform(0.8, 1.2)


def delivery_attempt(
    *, delivery_id: int, force: bool = False
) -> tuple[WebhookDelivery | None, float | None]:
    """Make one attempt of an open delivery that is due (``force``: due or not).

    Returns the delivery (None when another worker holds it, it is not due, or it is done)
    and the seconds until its next try (None: none scheduled).
    """
    now = timezone.now()
    claim = WebhookDelivery.objects.filter(pk=delivery_id, status__in=OPEN).filter(
        Q(locked_until__isnull=True) | Q(locked_until__lt=now)
    )
    if not force:
        claim = claim.filter(next_attempt_at__lte=now)
    if not claim.update(locked_until=_lock_until(now), attempts=F("attempts") + 1):
        return None, None
    delivery = WebhookDelivery.objects.select_related("webhook", "event").get(pk=delivery_id)
    return delivery_send(delivery=delivery)


OUTCOME_FIELDS = ["locked_until", "last_response_status", "last_error", "log", "status",
                  "delivered_at", "next_attempt_at"]


def delivery_send(
    *, delivery: WebhookDelivery, write: bool = True
) -> tuple[WebhookDelivery, float | None]:
    """The attempt itself, on a delivery this worker has claimed (``locked_until`` set,
    ``attempts`` counting this one): send, record, schedule the next try or finish.

    ``write=False`` leaves the outcome on the object only, for the caller to save
    (``OUTCOME_FIELDS``) with others in one statement while it still holds the claim."""
    webhook, event = delivery.webhook, delivery.event
    timeout = attempt_timeout()
    started = time.monotonic()
    response_status: int | None = None
    error = ""
    if not webhook.active and event.type != "webhook.test":
        error = "endpoint disabled"
    else:
        content = payloads.body(webhook=webhook, event=event)
        signed = payloads.headers(
            secret=webhook.secret, msg_id=event.uid, timestamp=int(time.time()), body=content
        )
        try:
            response = transport.post(
                webhook.url, content, signed, timeout=timeout,
                allow_private=settings.REDRESS_WEBHOOK_ALLOW_PRIVATE,
            )
            response_status = response.status
            if not 200 <= response.status < 300:
                error = f"HTTP {response.status}: {response.snippet}".strip()
                if 300 <= response.status < 400:
                    error = f"HTTP {response.status}: redirects are not followed"
        except transport.TransportError as exc:
            error = f"{exc.code}: {exc.detail}"
    duration_ms = round((time.monotonic() - started) * 1000, 1)
    finished = timezone.now()
    entry = {"at": finished.isoformat(), "status": response_status,
             "duration_ms": duration_ms, "error": error[:500]}
    fields: dict[str, Any] = {
        "locked_until": None,
        "last_response_status": response_status,
        "last_error": error[:2000],
        "log": ([*delivery.log, entry])[-LOG_ENTRIES:],
        "delivered_at": None,
    }
    delay = None
    if not error:
        fields.update(status=Status.SUCCEEDED, delivered_at=finished, next_attempt_at=None)
    elif response_status == 410 or error == "endpoint disabled":
        fields.update(status=Status.FAILED, next_attempt_at=None)
    else:
        delay = _backoff(delivery.attempts, retry_schedule())
        if delay is None:
            fields.update(status=Status.FAILED, next_attempt_at=None)
        else:
            fields.update(status=Status.RETRYING,
                          next_attempt_at=finished + timedelta(seconds=delay))
    if write:
        WebhookDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(
            **fields
        )
    if event.type != "webhook.test":  # a test send says nothing of the endpoint's health
        _endpoint_health(webhook, ok=not error, gone=response_status == 410, now=finished)
    for name, value in fields.items():
        setattr(delivery, name, value)
    return delivery, delay


def _endpoint_health(webhook: Webhook, *, ok: bool, gone: bool, now) -> None:
    if ok:
        if webhook.failing_since is not None:
            Webhook.objects.filter(pk=webhook.pk).update(failing_since=None)
            webhook.failing_since = None
        return
    if gone:
        endpoint_disable(webhook=webhook, reason="The endpoint answered 410 Gone.")
        return
    if not webhook.active:
        return
    if webhook.failing_since is None:
        Webhook.objects.filter(pk=webhook.pk, failing_since__isnull=True).update(
            failing_since=now
        )
    since = webhook.failing_since = webhook.failing_since or now
    limit = timedelta(seconds=settings.REDRESS_WEBHOOK_DISABLE_AFTER_SECONDS)
    if now - since >= limit:
        endpoint_disable(
            webhook=webhook,
            reason=f"Every delivery failed since {since:%Y-%m-%d %H:%M} UTC.",
        )


def endpoint_disable(*, webhook: Webhook, reason: str, notify: bool = True) -> bool:
    """Deactivate an endpoint (once) and tell the project's admins by email."""
    now = timezone.now()
    if not Webhook.objects.filter(pk=webhook.pk, active=True).update(
        active=False, disabled_at=now, disabled_reason=reason[:300]
    ):
        return False
    webhook.active, webhook.disabled_at, webhook.disabled_reason = False, now, reason[:300]
    log.warning("webhook %s (%s) disabled: %s", webhook.pk, webhook.url, reason)
    if notify:
        recipients = list(
            Membership.objects.filter(project_id=webhook.project_id, role=Membership.Role.ADMIN)
            .exclude(user__email="")
            .values_list("user__email", flat=True)
        )
        if recipients:
            try:
                send_mail(
                    subject=f"[Redress] Webhook disabled: {webhook.url}",
                    message=(
                        f"The webhook endpoint {webhook.url} (id {webhook.pk}) was disabled.\n\n"
                        f"Why: {reason}\n\nFix the endpoint, then reactivate it in the admin or "
                        f"with PATCH /api/v1/webhooks/{webhook.pk} {{\"active\": true}}; failed "
                        "deliveries can be sent again with their Redeliver action."
                    ),
                    from_email=None,
                    recipient_list=recipients,
                )
            except Exception:  # a mail outage must not fail the delivery bookkeeping
                log.exception("webhooks: could not email the admins of project %s",
                              webhook.project_id)
    return True


def delivery_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again now (whatever its status), under the same ``webhook-id``."""
    from feedback.errors import Conflict

    from ..tasks import webhook_deliver_task

    if not delivery.webhook.active:
        raise Conflict.one("webhook", "disabled",
                           "The endpoint is disabled: reactivate it first.")
    with transaction.atomic():
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=Status.PENDING, next_attempt_at=timezone.now(), delivered_at=None
        )
        enqueue_on_commit(webhook_deliver_task, delivery.pk)
    delivery.refresh_from_db()
    return delivery


# --- The sweep -----------------------------------------------------------------------------------


def disputes_opened_emit(*, now=None, batch: int = 2000) -> int:
    """Emit ``dispute.opened`` for disputes not yet reported, in projects with an endpoint
    subscribed to it. Disputes are written by intake's fast INSERT/COPY paths, which know
    nothing of webhooks; this reads them after the fact, once each (dedupe key
    ``dispute.opened:<id>``), from a cursor per project re-read ``DISPUTE_OVERLAP`` back."""
    now = now or timezone.now()
    first_seen: dict[int, Any] = {}
    for hook in Webhook.objects.filter(active=True).only("project_id", "events", "created_at"):
        if hook.subscribed_to("dispute.opened"):
            seen = first_seen.get(hook.project_id)
            first_seen[hook.project_id] = min(seen, hook.created_at) if seen else hook.created_at
    emitted = 0
    for project_id, since in first_seen.items():
        cursor, _ = EventCursor.objects.get_or_create(
            project_id=project_id, type="dispute.opened", defaults={"position": since}
        )
        start = max(cursor.position - DISPUTE_OVERLAP, since)
        last = (start, 0)
        newest = cursor.position
        while True:
            rows = list(
                Feedback.objects.filter(project_id=project_id, kind=Feedback.Kind.DISPUTE)
                .filter(Q(created_at__gt=last[0]) | Q(created_at=last[0], pk__gt=last[1]))
                .order_by("created_at", "pk")
                .values("pk", "created_at", "prediction__external_id")[:batch]
            )
            if not rows:
                break
            keys = {f"dispute.opened:{row['pk']}": row for row in rows}
            known = set(
                OutboxEvent.objects.filter(dedupe_key__in=list(keys)).values_list(
                    "dedupe_key", flat=True
                )
            )
            fresh = [
                OutboxEvent(
                    project_id=project_id,
                    type="dispute.opened",
                    dedupe_key=key,
                    created_at=row["created_at"],
                    data={
                        "id": row["pk"],
                        "prediction": row["prediction__external_id"],
                        "status": Feedback.DisputeStatus.OPEN,
                        "resolution_note": "",
                        "resolved_at": None,
                    },
                )
                for key, row in keys.items()
                if key not in known
            ]
            # ignore_conflicts: a concurrent sweep may have written some of them meanwhile.
            OutboxEvent.objects.bulk_create(fresh, ignore_conflicts=True)
            emitted += len(fresh)
            last = (rows[-1]["created_at"], rows[-1]["pk"])
            newest = max(newest, last[0])
            if len(rows) < batch:
                break
        EventCursor.objects.filter(pk=cursor.pk, position__lt=newest).update(position=newest)
    return emitted


def webhooks_sweep(*, enqueue_delivery: Callable[[int], object], now=None) -> dict[str, int]:
    """The beat safety net: report new disputes, fan out events whose task was lost, hand due
    deliveries (retries, lost tasks, expired claims) to ``enqueue_delivery``, drop old events."""
    now = now or timezone.now()
    opened = disputes_opened_emit(now=now)
    # Events a task should have fanned out by now (younger ones still have theirs coming), and
    # the dispute.opened events just written, which have none.
    lost = list(
        OutboxEvent.objects.filter(fanned_out_at__isnull=True)
        .filter(
            Q(created_at__lte=now - timedelta(seconds=SWEEP_GRACE_SECONDS))
            | Q(type="dispute.opened")
        )
        .order_by("pk")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    events_fan_out(event_ids=lost, claim=False)
    for pk in (
        WebhookDelivery.objects.filter(event_id__in=lost, status__in=OPEN)
        .order_by("pk")
        .values_list("pk", flat=True)
    ):
        enqueue_delivery(pk)
    fanned = len(lost)
    due = list(
        WebhookDelivery.objects.filter(
            status__in=OPEN, next_attempt_at__lte=now - timedelta(seconds=SWEEP_GRACE_SECONDS)
        )
        .filter(Q(locked_until__isnull=True) | Q(locked_until__lt=now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    for pk in due:
        enqueue_delivery(pk)
    purged = 0
    days = settings.REDRESS_WEBHOOK_RETENTION_DAYS
    if days:
        old = OutboxEvent.objects.filter(created_at__lt=now - timedelta(days=days)).exclude(
            pk__in=WebhookDelivery.objects.filter(status__in=OPEN).values("event_id")
        )
        purged = old.filter(pk__in=list(old.values_list("pk", flat=True)[:SWEEP_BATCH])).delete()[0]
    return {"disputes_opened": opened, "fanned_out": fanned, "due": len(due), "purged": purged}

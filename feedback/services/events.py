"""The outbox: events Redress tells the outside world (delivered by the ``webhooks`` app).

``event_emit`` is called INSIDE the transaction of the change it reports, so the event exists
exactly when the change does. Once that transaction commits, the listeners registered with
``on_event_committed`` (the webhooks app registers its fan-out) are told the event's id; the
webhooks sweep picks up any event whose notification was lost (broker outage, crash).

This module sits at the bottom of the dependency graph: ``feedback`` and ``labeling`` both call
it, and it imports neither ``labeling`` nor ``webhooks``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction

from ..models import OutboxEvent

log = logging.getLogger(__name__)

# Every event type an endpoint may subscribe to ("*": all of them). ``webhook.test`` is sent
# only by a test send, to the one endpoint tested.
EVENT_TYPES: tuple[str, ...] = (
    "dispute.opened",
    "dispute.resolved",
    "alert.fired",
    "alert.resolved",
    "sampling_run.finished",
    "export.finished",
    "goldset.published",
    "audit.finished",
    "labels.ready",
)
TEST_EVENT = "webhook.test"

_listeners: list[Callable[[list[int]], None]] = []


def on_event_committed(listener: Callable[[list[int]], None]) -> None:
    """Register ``listener(event_pks)``, called once per committed transaction with the events
    it emitted (possibly including some a rolled-back savepoint removed: they no longer exist)."""
    if listener not in _listeners:
        _listeners.append(listener)


class _CommittedEvents:
    """The one on-commit callback of a transaction: tells the listeners every event it emitted
    at once, so a transaction emitting thousands enqueues a few tasks, not thousands."""

    def __init__(self) -> None:
        self.pks: list[int] = []

    def __call__(self) -> None:
        for listener in _listeners:
            listener(self.pks)


def _notify_after_commit(event_pk: int) -> None:
    connection = transaction.get_connection()
    if not connection.in_atomic_block:  # autocommit: the event is committed already
        try:
            for listener in _listeners:
                listener([event_pk])
        except Exception:  # as robust as after a commit: the sweep catches up
            log.exception("outbox: could not announce event %s", event_pk)
        return
    pending = next(
        (func for _, func, _ in connection.run_on_commit if isinstance(func, _CommittedEvents)),
        None,
    )
    if pending is None:
        pending = _CommittedEvents()
        # Registered for the outermost transaction (no savepoint ids), unlike on_commit()
        # inside a savepoint: a later rolled-back savepoint must not drop the events emitted
        # outside it. Robust: a broker outage must not fail the commit; the sweep catches up.
        connection.run_on_commit.append((set(), pending, True))
    pending.pks.append(event_pk)


def _plain_json(data: dict[str, Any]) -> dict[str, Any]:
    """Date-times and decimals as the JSON the receiver gets (ISO strings)."""
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def event_emit(
    *,
    project_id: int,
    type: str,
    data: dict[str, Any],
    dedupe_key: str | None = None,
    only_webhook_id: int | None = None,
) -> OutboxEvent | None:
    """Write an event to the outbox in the caller's transaction; delivered after commit.

    With ``dedupe_key`` the event is once-only: a second emit with the same key returns None.
    """
    if type not in EVENT_TYPES and type != TEST_EVENT:
        raise ValueError(f"unknown event type {type!r}")
    fields = dict(project_id=project_id, type=type, data=_plain_json(data),
                  dedupe_key=dedupe_key, only_webhook_id=only_webhook_id)
    if dedupe_key is None:
        event = OutboxEvent.objects.create(**fields)
    else:
        try:
            with transaction.atomic():  # a savepoint: the caller's transaction survives a dupe
                event = OutboxEvent.objects.create(**fields)
        except IntegrityError:
            return None
    _notify_after_commit(event.pk)
    return event

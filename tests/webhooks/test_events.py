"""Where events come from: the labeling hooks, labels.ready, dispute.opened read by the sweep,
and the way to the receiver through the Celery tasks and the sweep when the broker lost them."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import standardwebhooks
from django.db import transaction
from django.utils import timezone

from config.celery import app
from feedback.models import OutboxEvent, Prediction
from feedback.selectors import project_context
from feedback.services.events import event_emit
from feedback.services.intake import feedback_submit
from labeling.models import Audit, Export, Queue, QueueItem, SamplingRun
from labeling.payloads.gold import gold_item_input
from labeling.services import notifications
from labeling.services.goldsets import gold_item_add, goldset_create, goldset_version_publish
from labeling.services.sampling import policy_of, sampling_run_execute
from webhooks import tasks
from webhooks.models import WebhookDelivery
from webhooks.services.dispatch import delivery_attempt, disputes_opened_emit, webhooks_sweep

from .receiver import Receiver, sequence

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager():
    """Run tasks in-process (the broker is not under test here)."""
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def events(type: str) -> list[OutboxEvent]:
    return list(OutboxEvent.objects.filter(type=type).order_by("pk"))


def test_after_commit_the_task_delivers_and_retries_through_the_broker(
    project, make_webhook, settings, eager, django_capture_on_commit_callbacks
):
    settings.REDRESS_WEBHOOK_RETRY_SECONDS = [0, 0]
    with Receiver(sequence(500, 200)) as receiver:
        hook = make_webhook(receiver.url())
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            with transaction.atomic():
                event = event_emit(project_id=project.pk, type="goldset.published",
                                   data={"slug": "eval", "version": 1})
            assert receiver.requests == []  # nothing is sent before the commit
    assert len(callbacks) == 1
    assert [r.headers["webhook-id"] for r in receiver.requests] == [event.uid, event.uid]
    standardwebhooks.Webhook(hook.secret).verify(receiver.requests[1].body,
                                                 receiver.requests[1].headers)
    assert WebhookDelivery.objects.get().status == "succeeded"


def test_an_event_whose_task_was_lost_is_delivered_by_the_sweep(project, make_webhook):
    with Receiver() as receiver:
        make_webhook(receiver.url())
        with transaction.atomic():  # committed, but its on-commit task never ran (broker down)
            event = event_emit(project_id=project.pk, type="export.finished", data={"id": 1})
        sent: list[int] = []
        # At once, the sweep leaves it to the task that is on its way.
        assert webhooks_sweep(enqueue_delivery=sent.append)["fanned_out"] == 0
        later = timezone.now() + timedelta(minutes=1)
        result = webhooks_sweep(enqueue_delivery=lambda pk: sent.append(pk) or
                                delivery_attempt(delivery_id=pk), now=later)
        again = webhooks_sweep(enqueue_delivery=sent.append, now=later)

    assert result["fanned_out"] == 1 and len(sent) == 1
    assert again["fanned_out"] == 0 and len(sent) == 1  # delivered: nothing left to do
    assert [r.headers["webhook-id"] for r in receiver.requests] == [event.uid]


def test_the_sweep_sends_due_retries_and_expired_claims_only(project, make_webhook):
    hook = make_webhook("http://127.0.0.1:9/hook")
    now = timezone.now()
    event = OutboxEvent.objects.create(project=project, type="export.finished", fanned_out_at=now)
    other = OutboxEvent.objects.create(project=project, type="export.finished", fanned_out_at=now)
    third = OutboxEvent.objects.create(project=project, type="export.finished", fanned_out_at=now)
    due = WebhookDelivery.objects.create(webhook=hook, event=event, status="retrying",
                                         next_attempt_at=now - timedelta(minutes=2))
    WebhookDelivery.objects.create(webhook=hook, event=other, status="retrying",
                                   next_attempt_at=now + timedelta(minutes=5))
    WebhookDelivery.objects.create(webhook=hook, event=third, status="pending",
                                   next_attempt_at=now - timedelta(minutes=2),
                                   locked_until=now + timedelta(seconds=30))  # in flight
    sent: list[int] = []
    assert webhooks_sweep(enqueue_delivery=sent.append)["due"] == 1
    assert sent == [due.pk]


def test_dispute_opened_is_emitted_once_by_the_sweep(project, prediction_factory, receiver,
                                                     make_webhook):
    make_webhook(receiver.url(), events=["dispute.opened"])
    prediction_factory(project=project, external_id="chat-9")
    context = project_context(project=project)
    results = feedback_submit(context=context, items=[
        {"prediction": "chat-9", "kind": "dispute"},
        {"prediction": "chat-9", "kind": "rating", "rating": -1},
        {"prediction": "chat-9", "kind": "dispute", "comment": "wrong again"},
    ])
    disputes = [r.obj.pk for r in results if r.obj.kind == "dispute"]

    assert disputes_opened_emit() == 2
    assert disputes_opened_emit() == 0  # once only
    webhooks_sweep(enqueue_delivery=lambda pk: delivery_attempt(delivery_id=pk, force=True))
    assert disputes_opened_emit() == 0

    bodies = sorted((json.loads(r.body) for r in receiver.requests),
                    key=lambda b: b["data"]["id"])
    assert [b["type"] for b in bodies] == ["dispute.opened", "dispute.opened"]
    assert [b["data"]["id"] for b in bodies] == disputes
    assert bodies[0]["data"] == {"id": disputes[0], "prediction": "chat-9", "status": "open",
                                 "resolution_note": "", "resolved_at": None}


def test_dispute_opened_needs_a_subscriber_and_reads_a_late_commit(project, prediction_factory,
                                                                   make_webhook):
    prediction_factory(project=project, external_id="chat-1")
    context = project_context(project=project)
    feedback_submit(context=context, items=[{"prediction": "chat-1", "kind": "dispute"}])
    assert disputes_opened_emit() == 0  # nobody listens: nothing written
    hook = make_webhook("https://example.com/hook", events=["dispute.resolved"])
    assert disputes_opened_emit() == 0
    hook.events = ["*"]
    hook.created_at = timezone.now() - timedelta(hours=1)
    hook.save()
    assert disputes_opened_emit() == 1
    # A dispute whose transaction committed after the sweep read past its created_at.
    (late,) = feedback_submit(context=context, items=[{"prediction": "chat-1", "kind": "dispute"}])
    type(late.obj).objects.filter(pk=late.obj.pk).update(
        created_at=timezone.now() - timedelta(minutes=2)
    )
    assert disputes_opened_emit() == 1
    assert OutboxEvent.objects.filter(dedupe_key=f"dispute.opened:{late.obj.pk}").count() == 1


def test_goldset_publish_emits_in_its_transaction(project):
    gold_set = goldset_create(project=project, slug="eval", name="Eval")
    draft = gold_set.versions.get()
    gold_item_add(version=draft, item=gold_item_input({
        "key": "a", "input": {"q": 1}, "output": {"a": 2},
        "expected": {"verdict": "correct", "label": None, "categories": []},
    }))
    version = goldset_version_publish(version=draft)

    (event,) = events("goldset.published")
    assert event.project_id == project.pk
    assert event.data["slug"] == "eval" and event.data["version"] == 1
    assert event.data["checksum"] == version.checksum and event.data["item_count"] == 1


def test_a_finished_sampling_run_emits(project):
    queue = Queue.objects.create(project=project, name="q", overlap=1)
    Prediction.objects.create(project=project, external_id="s-1", occurred_at=timezone.now(),
                              content_hash="x")
    run = SamplingRun.objects.create(queue=queue, seed=1, policy=policy_of(queue))

    assert sampling_run_execute(run_id=run.pk).status == "done"

    (event,) = events("sampling_run.finished")
    assert event.data["id"] == run.pk and event.data["queue"] == queue.pk
    assert event.data["status"] == "done"


def test_export_and_audit_events_carry_their_outcome(project):
    export = Export.objects.create(project=project, format="jsonl", status="done", rows=12,
                                   checksum="ab" * 32)
    notifications.export_finished_emit(export_id=export.pk)
    pending = Export.objects.create(project=project, format="jsonl")
    notifications.export_finished_emit(export_id=pending.pk)  # not finished: nothing
    audit = Audit.objects.create(project=project, source={}, params={}, status="done",
                                 result={"flagged": [{"segment": "a"}, {"segment": "b"}],
                                         "scope": {"rows": 40}})
    notifications.audit_finished_emit(audit_id=audit.pk)

    (exported,) = events("export.finished")
    assert exported.data["id"] == export.pk and exported.data["rows"] == 12
    assert exported.data["status"] == "done" and exported.data["checksum"] == "ab" * 32
    assert exported.data["download_url"].endswith(f"/api/v1/exports/{export.pk}/download")
    (audited,) = events("audit.finished")
    assert audited.data == {"id": audit.pk, "flagged": 2, "rows": 40, "model_version": None}


def test_labels_ready_after_notify_every_completed_items(project, make_items):
    queue = Queue.objects.create(project=project, name="retrain", overlap=1, notify_every=3)
    items = make_items(queue, 7)

    def complete(chosen):
        QueueItem.objects.filter(pk__in=[i.pk for i in chosen]).update(
            status=QueueItem.Status.COMPLETE, completed_at=timezone.now()
        )

    complete(items[:2])
    assert notifications.labels_ready_emit_due() == 0
    complete(items[2:4])
    assert notifications.labels_ready_emit_due() == 1
    assert notifications.labels_ready_emit_due() == 0  # counted from the last event on
    complete(items[4:7])
    assert notifications.labels_ready_emit_due() == 1

    first, second = events("labels.ready")
    assert first.data["queue"] == queue.pk and first.data["completed"] == 4
    assert second.data["completed"] == 3 and second.data["since"] == first.data["until"]
    Queue.objects.filter(pk=queue.pk).update(notify_every=0)
    complete(items)
    assert notifications.labels_ready_emit_due() == 0


def test_the_beat_tasks_are_scheduled(settings):
    schedule = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"webhooks.tasks.webhooks_sweep_task", "labeling.tasks.labels_ready_task"} <= schedule
    assert tasks.webhooks_sweep_task.name == "webhooks.tasks.webhooks_sweep_task"


def test_notify_every_is_set_through_the_queue_api(project, project_admin):
    from rest_framework.test import APIClient

    queue = Queue.objects.create(project=project, name="api", overlap=1)
    client = APIClient()
    client.force_authenticate(project_admin)

    changed = client.patch(f"/api/v1/queues/{queue.pk}", {"notify_every": 500}, format="json")
    refused = client.patch(f"/api/v1/queues/{queue.pk}", {"notify_every": -1}, format="json")

    assert changed.status_code == 200 and changed.json()["notify_every"] == 500
    assert Queue.objects.get(pk=queue.pk).notify_every == 500
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "notify_every"


def test_a_transaction_announces_its_events_once_in_chunks(
    project, monkeypatch, django_capture_on_commit_callbacks
):
    from webhooks.services import dispatch

    sent: list[list[int]] = []
    monkeypatch.setattr(dispatch, "enqueue", lambda task, ids, **kw: sent.append(ids))
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        first = event_emit(project_id=project.pk, type="export.finished", data={"n": 0})
        with pytest.raises(RuntimeError), transaction.atomic():  # a savepoint rolls back
            event_emit(project_id=project.pk, type="export.finished", data={"n": -1})
            raise RuntimeError
        rest = [event_emit(project_id=project.pk, type="export.finished", data={"n": i})
                for i in range(1, 250)]

    assert len(callbacks) == 1  # one announcement for the whole transaction
    assert [len(ids) for ids in sent] == [100, 100, 51]
    announced = [pk for ids in sent for pk in ids]
    assert first.pk in announced and {e.pk for e in rest} <= set(announced)
    assert OutboxEvent.objects.count() == 250  # the rolled-back one is gone


def test_a_hanging_endpoint_costs_one_timeout_per_batch(project, make_webhook, settings):
    settings.REDRESS_WEBHOOK_TIMEOUT = 0.5
    with Receiver(sequence(None)) as hanging, Receiver() as healthy:
        slow = make_webhook(hanging.url(), events=["export.finished"])
        make_webhook(healthy.url(), events=["export.finished"])
        with transaction.atomic():
            ids = [event_emit(project_id=project.pk, type="export.finished", data={"n": i}).pk
                   for i in range(5)]
        started = time.monotonic()
        results = tasks.webhook_events_task.apply(args=[ids]).get()
        elapsed = time.monotonic() - started

    assert results == 10
    assert elapsed < 3  # one timeout, not five
    assert len(hanging.requests) == 1 and len(healthy.requests) == 5
    waiting = WebhookDelivery.objects.filter(webhook=slow).order_by("pk")
    assert [d.status for d in waiting] == ["retrying"] + ["pending"] * 4
    assert [d.attempts for d in waiting] == [1, 0, 0, 0, 0]
    assert len({d.next_attempt_at for d in waiting}) == 1  # all due with the first retry
    assert all(d.locked_until is None for d in waiting)
    assert waiting[0].last_error.startswith("timeout") and len(waiting[0].log) == 1
    delivered = WebhookDelivery.objects.exclude(webhook=slow)
    assert {(d.status, d.last_response_status, d.attempts, d.last_error) for d in delivered} == {
        ("succeeded", 200, 1, "")}
    assert all(d.delivered_at and d.log[0]["status"] == 200 and d.next_attempt_at is None
               for d in delivered)

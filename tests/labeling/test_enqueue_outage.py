"""A broker outage between the commit and the send: the request still answers as usual, the
job is recorded once, and the unsent-task sweep sends it once the broker is back.

The broker is a real ``redis-server`` this test starts on a free port and stops (never the
shared one); Celery's app is pointed at it for the test. Rows are really committed
(``transaction=True``), so ``on_commit`` runs as it does in production.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import socket
import subprocess
import time

import pytest
import redis
from rest_framework.test import APIClient

from config.celery import app
from labeling.enqueue import unsent_tasks_send
from labeling.models import Export, QueueItem, SamplingRun, UnsentTask
from labeling.tasks import unsent_tasks_send_task

from .test_claims import as_user, claim, label
from .test_exports import make_labeled

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Broker:
    """A redis-server of the test's own, to stop and start again on the same port."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.thaw()
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def messages(self) -> list[tuple[str, list]]:
        """The task messages waiting in the default queue: (task name, args), oldest first."""
        raw = redis.Redis(port=self.port).lrange(app.conf.task_default_queue, 0, -1)
        found = []
        for entry in reversed(raw):  # kombu LPUSHes: the oldest is last
            message = json.loads(entry)
            args = json.loads(base64.b64decode(message["body"]))[0]
            found.append((message["headers"]["task"], args))
        return found


def _use_broker(url: str) -> None:
    app.conf.broker_url = url
    # Producers and connections are pooled per broker URL: forget the app's (the pools stay,
    # for whoever uses the other URL), so the next send opens one to ``url``.
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def broker(monkeypatch):
    original = app.conf.broker_url
    own = Broker()
    own.start()
    # Celery reads CELERY_BROKER_URL from the environment before its own setting.
    monkeypatch.setenv("CELERY_BROKER_URL", own.url)
    _use_broker(own.url)
    assert f":{own.port}/" in app.connection_for_write().as_uri()
    yield own
    own.stop()
    monkeypatch.undo()
    _use_broker(original)


def run_messages(broker: Broker) -> list[tuple[str, list]]:
    """Run every waiting message's task as a worker would (its body, with its args)."""
    messages = broker.messages()
    redis.Redis(port=broker.port).delete(app.conf.task_default_queue)
    for name, args in messages:
        app.tasks[name].apply(args=args)
    return messages


@pytest.fixture
def scientist(project, make_reviewer):
    client = APIClient()
    client.force_authenticate(make_reviewer("scientist", role="data_scientist"))
    return client


@pytest.fixture
def boss(project, make_reviewer):
    client = APIClient()
    client.force_authenticate(make_reviewer("boss", role="admin"))
    return client


def test_an_export_requested_while_the_broker_is_down_is_built_once_it_is_back(
    project, broker, scientist, settings, tmp_path
):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    make_labeled(project, count=20)
    broker.stop()

    started = time.monotonic()
    response = scientist.post(
        "/api/v1/exports", {"project": project.slug, "format": "jsonl"}, format="json"
    )
    elapsed = time.monotonic() - started

    assert response.status_code == 202, response.content
    export = Export.objects.get()
    assert response.json()["id"] == export.pk
    assert export.status == Export.Status.PENDING
    assert list(UnsentTask.objects.values_list("task", "args")) == [
        ("export_build_task", [export.pk])
    ]
    assert elapsed < 5, elapsed  # the refused send costs the request little

    broker.start()
    assert unsent_tasks_send_task.apply().get() == 1  # the beat's sweep, as a worker runs it

    assert UnsentTask.objects.count() == 0
    assert run_messages(broker) == [("labeling.tasks.export_build_task", [export.pk])]
    export.refresh_from_db()
    assert export.status == Export.Status.DONE and export.rows == 20 and export.attempts == 1
    # Nothing is sent twice (the export.finished event's webhook fan-out is another task).
    assert unsent_tasks_send() == 0
    assert [m for m in broker.messages() if m[0].startswith("labeling.")] == []


def test_a_sample_requested_while_the_broker_is_down_is_drawn_once_it_is_back(
    project, queue, broker, boss, make_items
):
    make_items(queue, 3)  # items already in the queue: the draw finds its population elsewhere
    broker.stop()

    response = boss.post(f"/api/v1/queues/{queue.pk}/sample", {}, format="json")

    assert response.status_code == 202, response.content
    run = SamplingRun.objects.get()
    assert run.status == SamplingRun.Status.PENDING
    assert UnsentTask.objects.count() == 1

    broker.start()
    assert unsent_tasks_send() == 1
    assert run_messages(broker) == [("labeling.tasks.sampling_run_task", [run.pk])]
    run.refresh_from_db()
    assert run.status == SamplingRun.Status.DONE
    assert SamplingRun.objects.count() == 1 and UnsentTask.objects.count() == 0


def test_a_dawid_skene_label_while_the_broker_is_down_is_kept_and_refits_once_it_is_back(
    project, queue, broker, make_items, make_reviewer
):
    queue.consensus = "dawid_skene"
    queue.overlap = 1
    queue.save()
    make_items(queue, 3)
    alice = as_user(make_reviewer("alice", queue))
    broker.stop()

    item_id = claim(alice, queue).json()["item"]
    response = label(alice, item_id, verdict="incorrect", categories=["incorrect"])

    assert response.status_code == 201, response.content
    item = QueueItem.objects.get(pk=item_id)
    assert item.status == QueueItem.Status.COMPLETE and item.labels.count() == 1
    assert list(UnsentTask.objects.values_list("task", "args")) == [
        ("queue_consensus_task", [queue.pk])
    ]

    # A second completion while the first refit is still owed sends nothing more.
    other = claim(alice, queue).json()["item"]
    assert label(alice, other, verdict="correct").status_code == 201
    assert UnsentTask.objects.count() == 1

    broker.start()
    assert unsent_tasks_send() == 1
    assert run_messages(broker) == [("labeling.tasks.queue_consensus_task", [queue.pk])]
    item.refresh_from_db()
    assert item.consensus["method"] == "dawid_skene"
    queue.refresh_from_db()
    assert queue.consensus_refit_requested_at is None  # the refit took the request

    # The next completion after that refit started asks for a refit of its own.
    third = claim(alice, queue).json()["item"]
    assert label(alice, third, verdict="correct").status_code == 201
    assert broker.messages() == [("labeling.tasks.queue_consensus_task", [queue.pk])]


def test_a_frozen_broker_costs_the_request_about_a_second_not_a_hang(
    project, queue, broker, boss, make_items
):
    make_items(queue, 3)
    broker.freeze()  # SIGSTOP: connections are accepted by the kernel, nothing answers

    started = time.monotonic()
    response = boss.post(f"/api/v1/queues/{queue.pk}/sample", {}, format="json")
    elapsed = time.monotonic() - started

    assert response.status_code == 202, response.content
    assert elapsed < 3, elapsed
    run = SamplingRun.objects.get()
    assert list(UnsentTask.objects.values_list("task", "args")) == [("sampling_run_task", [run.pk])]

    broker.thaw()
    assert unsent_tasks_send() == 1
    assert run_messages(broker) == [("labeling.tasks.sampling_run_task", [run.pk])]
    run.refresh_from_db()
    assert run.status == SamplingRun.Status.DONE

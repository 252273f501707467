"""Queue configuration over REST, on-demand sampling through a real Celery worker, schedules."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone
from rest_framework.test import APIClient

from feedback.models import Prediction
from labeling.models import Queue, QueueItem, SamplingRun
from labeling.services.sampling import queues_schedule_due, sampling_runs_recover

pytestmark = pytest.mark.django_db

CONFIG = {
    "name": "loan decisions",
    "instructions": "Was the decision right?",
    "label_choices": ["approve", "deny"],
    "overlap": 2,
    "lease_seconds": 300,
    "sampling": {
        "source": "predictions",
        "filter": {"model_version": "v1", "segment": {"locale": "de-DE"}},
        "strategy": "stratified",
        "size": 50,
        "strata": ["age_band"],
        "allocation": "minimum",
        "min_per_stratum": 10,
        "seed": 7,
        "schedule_minutes": 60,
    },
}


@pytest.fixture
def admin_client(project, make_reviewer):
    boss = make_reviewer("boss", role="admin")
    client = APIClient()
    client.force_authenticate(boss)
    return client


def post(client, path, body):
    return client.post(path, data=json.dumps(body), content_type="application/json")


def test_create_and_read_a_queue(admin_client, project, make_reviewer, data_client):
    make_reviewer("alice")

    response = post(
        admin_client, "/api/v1/queues", {**CONFIG, "project": project.slug, "reviewers": ["alice"]}
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["project"] == project.slug
    assert body["reviewers"] == ["alice"]
    assert body["sampling"]["strata"] == ["age_band"]
    assert body["sampling"]["filter"] == {"model_version": "v1", "segment": {"locale": "de-DE"}}
    listed = data_client.get("/api/v1/queues").json()
    assert [q["id"] for q in listed] == [body["id"]]
    assert data_client.get(f"/api/v1/queues/{body['id']}").json()["overlap"] == 2


def test_patch_changes_only_what_is_sent(admin_client, project):
    queue_id = post(admin_client, "/api/v1/queues", {**CONFIG, "project": project.slug}).json()[
        "id"
    ]

    response = admin_client.patch(
        f"/api/v1/queues/{queue_id}",
        data=json.dumps({"overlap": 3, "sampling": {"size": 80}}),
        content_type="application/json",
    )

    assert response.status_code == 200
    queue = Queue.objects.get(pk=queue_id)
    assert (queue.overlap, queue.size, queue.strata) == (3, 80, ["age_band"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sampling": {"strategy": "stratified", "strata": [], "size": 5}}, "sampling.strata"),
        ({"sampling": {"strategy": "uniform", "size": None, "rate": None}}, "sampling.size"),
        ({"sampling": {"rate": 1.5}}, "sampling.rate"),
        ({"sampling": {"filter": {"colour": "red"}}}, "sampling.filter.colour"),
        ({"sampling": {"wat": 1}}, "sampling.wat"),
        ({"overlap": 0}, "overlap"),
        ({"reviewers": ["nobody"]}, "reviewers[0]"),
        ({"label_choices": ["a", "a"]}, "label_choices"),
        ({"gold": True}, "gold"),
    ],
)
def test_bad_configurations_are_400_naming_the_field(admin_client, project, change, field):
    body = {**CONFIG, "project": project.slug, **change}
    if "sampling" in change:
        body["sampling"] = {**CONFIG["sampling"], **change["sampling"]}

    response = post(admin_client, "/api/v1/queues", body)

    assert response.status_code == 400, response.content
    assert field in {e["field"] for e in response.json()["errors"]}
    assert Queue.objects.count() == 0


def test_only_project_admins_create_and_change_queues(project, make_reviewer, data_client, queue):
    reviewer = APIClient()
    reviewer.force_authenticate(make_reviewer("alice", queue))

    assert post(reviewer, "/api/v1/queues", {**CONFIG, "project": project.slug}).status_code == 404
    assert (
        reviewer.patch(
            f"/api/v1/queues/{queue.pk}", data="{}", content_type="application/json"
        ).status_code
        == 403
    )
    assert (
        post(data_client, "/api/v1/queues", {**CONFIG, "project": project.slug}).status_code == 403
    )
    assert post(reviewer, f"/api/v1/queues/{queue.pk}/sample", {}).status_code == 403


def test_another_projects_queue_is_404(other_project, make_key, queue):
    from tests.conftest import client_for

    other = client_for(make_key(other_project, ["data"]))

    assert other.get(f"/api/v1/queues/{queue.pk}").status_code == 404
    assert other.get(f"/api/v1/queues/{queue.pk}/stats").status_code == 404


def test_sample_enqueues_after_commit_and_the_run_is_readable(
    admin_client, project, queue, data_client, django_capture_on_commit_callbacks
):
    Prediction.objects.bulk_create(
        Prediction(
            project=project, external_id=f"p{i}", occurred_at=timezone.now(), content_hash="x"
        )
        for i in range(5)
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post(admin_client, f"/api/v1/queues/{queue.pk}/sample", {})
    assert response.status_code == 202
    run_id = response.json()["run"]
    assert len(callbacks) == 1  # the task is sent only once the run row is committed

    from labeling.tasks import sampling_run_task

    sampling_run_task.apply(args=[run_id])  # the task body, as a worker runs it

    run = data_client.get(f"/api/v1/sampling-runs/{run_id}").json()
    assert run["status"] == "done"
    assert run["population"] == {"": 5} and run["sampled"] == {"": 5}
    assert QueueItem.objects.filter(queue=queue).count() == 5


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_draws_a_requested_run(project, queue, settings):
    """Through the configured broker (embedded filesystem, or Redis in CI) and a real worker."""
    from celery.contrib.testing.worker import start_worker

    from config.celery import app
    from labeling.services.sampling import sampling_run_request

    Prediction.objects.bulk_create(
        Prediction(
            project=project, external_id=f"p{i}", occurred_at=timezone.now(), content_hash="x"
        )
        for i in range(12)
    )
    queue.strategy, queue.size = "uniform", 4
    queue.save()
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        run = sampling_run_request(queue=queue)  # autocommit: enqueued at once
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                run.refresh_from_db()
            except OperationalError:
                # SQLite's in-memory test database (shared cache) locks whole tables and does not
                # wait: the worker thread is writing this row right now. Look again shortly.
                time.sleep(0.05)
                continue
            if run.status in ("done", "failed"):
                break
            time.sleep(0.2)

    assert run.status == "done", run.error
    assert run.sampled == {"": 4}
    assert QueueItem.objects.filter(queue=queue).count() == 4


def test_schedules_request_runs_once_per_period(project, queue, django_capture_on_commit_callbacks):
    queue.schedule_minutes = 60
    queue.save()
    now = timezone.now()

    with django_capture_on_commit_callbacks(execute=False):
        first = queues_schedule_due(now=now)
        again = queues_schedule_due(now=now + timedelta(minutes=30))
        later = queues_schedule_due(now=now + timedelta(minutes=61))

    assert [len(first), len(again), len(later)] == [1, 0, 1]
    assert SamplingRun.objects.filter(queue=queue, trigger="schedule").count() == 2


def test_lost_runs_are_handed_back(project, queue, django_capture_on_commit_callbacks):
    stuck = SamplingRun.objects.create(
        queue=queue,
        seed=1,
        policy={},
        status="running",
        started_at=timezone.now() - timedelta(hours=1),
    )
    fresh = SamplingRun.objects.create(
        queue=queue, seed=1, policy={}, status="running", started_at=timezone.now()
    )

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert sampling_runs_recover(stale_after_seconds=900) == 1

    stuck.refresh_from_db()
    fresh.refresh_from_db()
    assert (stuck.status, fresh.status) == ("pending", "running")
    assert len(callbacks) == 1

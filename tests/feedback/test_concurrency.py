"""Simultaneous requests over real HTTP (live server threads, PostgreSQL).

Two requests with one idempotency key must create one row; two requests logging one external_id
must create one prediction. SQLite serialises writers, so these only mean something on
PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from feedback.models import Feedback, Prediction

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 16


def hammer(url: str, key: str, bodies: list[dict], headers: list[dict]) -> list[tuple[int, dict]]:
    barrier = threading.Barrier(len(bodies))

    def send(position: int) -> tuple[int, dict]:
        request = urllib.request.Request(
            url,
            data=json.dumps(bodies[position]).encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
                **headers[position],
            },
        )
        barrier.wait()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, range(len(bodies))))


def test_one_idempotency_key_sent_at_once_creates_one_row(
    live_server, project, ingest_key, prediction_factory
):
    prediction_factory(project=project, external_id="p")
    body = {"prediction": "p", "kind": "dispute", "comment": "wrong"}

    results = hammer(
        f"{live_server.url}/api/v1/feedback",
        ingest_key,
        [body] * THREADS,
        [{"Idempotency-Key": "same"}] * THREADS,
    )

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * (THREADS - 1) + [201]
    assert len({body["id"] for _, body in results}) == 1
    assert Feedback.objects.count() == 1


def test_one_key_with_different_bodies_at_once_stores_one_and_refuses_the_rest(
    live_server, project, ingest_key, prediction_factory
):
    prediction_factory(project=project, external_id="p")
    bodies = [
        {"prediction": "p", "kind": "report", "comment": f"variant {i}"} for i in range(THREADS)
    ]

    results = hammer(
        f"{live_server.url}/api/v1/feedback",
        ingest_key,
        bodies,
        [{"Idempotency-Key": "k"}] * THREADS,
    )

    assert sorted(status for status, _ in results) == [201] + [409] * (THREADS - 1)
    assert Feedback.objects.count() == 1


def test_one_inline_prediction_sent_at_once_is_logged_once(live_server, project, ingest_key):
    bodies = [
        {"prediction": {"external_id": "inline", "output": "x"}, "kind": "rating", "rating": 1}
    ] * THREADS

    results = hammer(f"{live_server.url}/api/v1/feedback", ingest_key, bodies, [{}] * THREADS)

    assert {status for status, _ in results} == {201}
    assert Prediction.objects.filter(external_id="inline").count() == 1
    assert Feedback.objects.count() == THREADS
    assert Feedback.objects.values("prediction_id").distinct().count() == 1


def test_one_external_id_logged_at_once_is_stored_once(live_server, project, ingest_key):
    body = {"external_id": "race", "output": {"a": 1}, "occurred_at": "2026-11-20T10:00:00Z"}

    results = hammer(
        f"{live_server.url}/api/v1/predictions", ingest_key, [body] * THREADS, [{}] * THREADS
    )

    assert sorted(status for status, _ in results) == [200] * (THREADS - 1) + [201]
    assert Prediction.objects.count() == 1


def test_batches_racing_on_the_same_keys_store_each_key_once(
    live_server, project, ingest_key, prediction_factory
):
    prediction_factory(project=project, external_id="p")
    items = [{"prediction": "p", "kind": "report", "idempotency_key": f"k{i}"} for i in range(50)]

    results = hammer(
        f"{live_server.url}/api/v1/feedback/batch", ingest_key, [{"items": items}] * 8, [{}] * 8
    )

    assert {status for status, _ in results} == {200}
    per_item = [[r["status"] for r in body["results"]] for _, body in results]
    for position in range(50):
        assert sorted(statuses[position] for statuses in per_item) == [200] * 7 + [201]
    assert Feedback.objects.count() == 50

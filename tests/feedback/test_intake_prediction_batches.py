"""POST /api/v1/predictions with items: COPY from 8 items on PostgreSQL (multi-row INSERT below
and on SQLite), idempotent by external_id, 409 on other content, one result per item."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from feedback.models import Prediction

pytestmark = pytest.mark.django_db


def post(client, body):
    return client.post(
        "/api/v1/predictions", data=json.dumps(body), content_type="application/json"
    )


def item(n: int, **extra):
    return {
        "external_id": f"b-{n}",
        "model": "bot",
        "model_version": "v2",
        "input": {"message": f"question {n}", "nested": [1, 2.5, None, True, {"ü": "東京"}]},
        "output": {"reply": f"answer {n}"} if n % 3 else f"plain {n}",
        "label": ("refund", None, "other")[n % 3],
        "confidence": (n % 10) / 10,
        "segment": {"locale": ("de-DE", "fr-FR")[n % 2]},
        "occurred_at": f"2026-11-{1 + n % 28:02d}T10:00:00Z",
        **extra,
    }


@pytest.mark.parametrize("size", [3, 50])  # below and above the COPY threshold
def test_a_batch_stores_exactly_what_it_reports(ingest_client, project, size):
    items = [item(n) for n in range(size)]
    items[-1] = {**items[-1], "input": None, "output": None, "segment": {}}

    response = post(ingest_client, {"items": items})

    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201] * size
    assert [r["external_id"] for r in results] == [i["external_id"] for i in items]
    stored = {p.external_id: p for p in Prediction.objects.all()}
    assert len(stored) == size
    for result, sent in zip(results, items, strict=True):
        row = stored[sent["external_id"]]
        assert row.pk == result["id"]
        assert row.project_id == project.pk
        assert (row.model, row.model_version, row.label) == ("bot", "v2", sent["label"])
        assert row.input == sent["input"] and row.output == sent["output"]
        assert row.segment == sent["segment"]
        assert row.confidence == pytest.approx(sent["confidence"])
        assert row.occurred_at == datetime.fromisoformat(sent["occurred_at"]).astimezone(UTC)
        assert len(row.content_hash) == 64


def test_a_replayed_batch_stores_nothing_more_and_answers_the_same_ids(ingest_client):
    items = [item(n) for n in range(30)]
    first = post(ingest_client, {"items": items}).json()["results"]

    again = post(ingest_client, {"items": items}).json()["results"]

    assert {r["status"] for r in first} == {201}
    assert {r["status"] for r in again} == {200}
    assert [r["id"] for r in again] == [r["id"] for r in first]
    assert Prediction.objects.count() == 30


def test_other_content_is_409_and_names_the_external_id_it_was_sent(ingest_client):
    post(ingest_client, {"items": [item(n) for n in range(10)]})
    items = [item(n) for n in range(12)]
    items[3] = {**items[3], "label": "changed"}
    items[11] = {**items[0], "model_version": "v3"}  # a stored one, other content
    items.append({**items[10]})  # a new one twice in the batch: the second replays the first

    results = post(ingest_client, {"items": items}).json()["results"]

    statuses = [r["status"] for r in results]
    assert statuses == [200, 200, 200, 409, 200, 200, 200, 200, 200, 200, 201, 409, 200]
    assert results[3]["external_id"] == "b-3"  # issue 14: it was null
    assert results[3]["id"] is None
    assert results[3]["errors"] == [
        {
            "field": "items[3].external_id",
            "code": "conflict",
            "detail": "A prediction 'b-3' is already logged with other content; "
            "external_id is unique per project.",
        }
    ]
    assert results[11]["external_id"] == "b-0"
    assert results[12]["id"] == results[10]["id"]
    assert Prediction.objects.get(external_id="b-3").label == item(3)["label"]
    assert Prediction.objects.count() == 11


def test_a_new_external_id_twice_with_other_content_is_409_for_the_second(ingest_client):
    results = post(ingest_client, {"items": [item(1), {**item(1), "label": "other"}]}).json()[
        "results"
    ]

    assert [r["status"] for r in results] == [201, 409]
    assert [r["external_id"] for r in results] == ["b-1", "b-1"]
    assert Prediction.objects.count() == 1


def test_invalid_items_are_reported_by_index_and_the_rest_stored(ingest_client):
    items = [item(n) for n in range(20)]
    items[4] = {"external_id": "", "output": 1}
    items[9] = {**item(9), "confidence": 2}
    items[15] = {**item(15), "colour": "red"}

    results = post(ingest_client, {"items": items}).json()["results"]

    assert [n for n, r in enumerate(results) if r["status"] == 400] == [4, 9, 15]
    assert results[4]["external_id"] == ""
    assert results[9]["errors"][0]["field"] == "items[9].confidence"
    assert results[15]["errors"][0]["field"] == "items[15].colour"
    assert Prediction.objects.count() == 17

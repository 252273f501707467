"""POST /api/v1/predictions, /feedback and /feedback/batch through the real HTTP stack."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from feedback.models import Feedback, Prediction
from tests.conftest import on_postgres

pytestmark = pytest.mark.django_db

PREDICTION = {
    "external_id": "chat-8812",
    "model": "support-bot",
    "model_version": "2026-11-01",
    "input": {"message": "Where is my refund?"},
    "output": {"reply": "It was sent on Monday."},
    "label": "refund",
    "confidence": 0.73,
    "segment": {"locale": "de-DE", "device": "ios"},
    "occurred_at": "2026-11-20T10:00:00Z",
}


def post(client, path, body, **headers):
    return client.post(path, data=json.dumps(body), content_type="application/json", **headers)


def errors_of(response):
    return {(e["field"], e["code"]) for e in response.json()["errors"]}


# --- predictions -----------------------------------------------------------------------------


def test_log_prediction_returns_201_with_the_stored_object(ingest_client, project):
    response = post(ingest_client, "/api/v1/predictions", PREDICTION)

    assert response.status_code == 201
    body = response.json()
    stored = Prediction.objects.get(project=project, external_id="chat-8812")
    assert body["id"] == stored.pk
    assert body["output"] == {"reply": "It was sent on Monday."}
    assert body["segment"] == {"locale": "de-DE", "device": "ios"}
    assert body["confidence"] == 0.73
    assert body["occurred_at"] == "2026-11-20T10:00:00Z"


def test_reposting_the_same_prediction_returns_200_and_changes_nothing(ingest_client):
    first = post(ingest_client, "/api/v1/predictions", PREDICTION).json()

    again = post(ingest_client, "/api/v1/predictions", PREDICTION)

    assert again.status_code == 200
    assert again.json() == first
    assert Prediction.objects.count() == 1


@pytest.mark.parametrize(
    "change",
    [{"output": {"reply": "other"}}, {"confidence": 0.5}, {"occurred_at": "2026-11-21T10:00:00Z"}],
)
def test_reposting_an_external_id_with_other_content_is_409(ingest_client, change):
    post(ingest_client, "/api/v1/predictions", PREDICTION)

    response = post(ingest_client, "/api/v1/predictions", {**PREDICTION, **change})

    assert response.status_code == 409
    assert errors_of(response) == {("external_id", "conflict")}
    assert Prediction.objects.get().confidence == 0.73


def test_prediction_batch_reports_each_item(ingest_client):
    post(ingest_client, "/api/v1/predictions", PREDICTION)
    items = [
        {**PREDICTION, "external_id": "new-1"},
        PREDICTION,  # same content: 200
        {**PREDICTION, "confidence": 0.1},  # other content: 409
        {"external_id": "", "output": 1},  # invalid: 400
        {**PREDICTION, "external_id": "new-1"},  # repeated within the batch: 200
    ]

    response = post(ingest_client, "/api/v1/predictions", {"items": items})

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 200, 409, 400, 200]
    assert results[0]["id"] == results[4]["id"] == Prediction.objects.get(external_id="new-1").pk
    assert results[0]["external_id"] == "new-1"
    assert results[3]["errors"][0]["field"] == "items[3].external_id"
    assert Prediction.objects.count() == 2


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"output": 1}, ("external_id", "required")),
        ({"external_id": 7}, ("external_id", "invalid_type")),
        ({"external_id": "x", "confidence": 1.5}, ("confidence", "out_of_range")),
        ({"external_id": "x", "confidence": True}, ("confidence", "invalid_type")),
        ({"external_id": "x", "occurred_at": "yesterday"}, ("occurred_at", "invalid")),
        (
            {"external_id": "x", "occurred_at": "2026-11-20T10:00:00"},
            ("occurred_at", "naive_datetime"),
        ),
        ({"external_id": "x", "segment": {"locale": 3}}, ("segment.locale", "invalid_type")),
        ({"external_id": "x", "segment": {"bad key": "v"}}, ("segment.bad key", "invalid_key")),
        ({"external_id": "x", "segment": {"k": "v" * 129}}, ("segment.k", "too_long")),
        (
            {"external_id": "x", "segment": {f"k{i}": "v" for i in range(21)}},
            ("segment", "too_many_keys"),
        ),
        ({"external_id": "x", "colour": "red"}, ("colour", "unknown_field")),
        ({"external_id": "x" * 256}, ("external_id", "too_long")),
    ],
)
def test_invalid_predictions_are_refused_naming_the_field(ingest_client, body, expected):
    response = post(ingest_client, "/api/v1/predictions", body)

    assert response.status_code == 400
    assert expected in errors_of(response)
    assert Prediction.objects.count() == 0


# --- feedback --------------------------------------------------------------------------------


@pytest.fixture
def logged(ingest_client):
    post(ingest_client, "/api/v1/predictions", PREDICTION)
    return PREDICTION["external_id"]


def test_submit_a_report(ingest_client, logged, project):
    response = post(
        ingest_client,
        "/api/v1/feedback",
        {
            "prediction": logged,
            "kind": "report",
            "rating": -1,
            "categories": ["unsafe", "incorrect"],
            "comment": "It told me to call 555-123-4567 and mail bob@example.com",
            "correction": "The refund was sent on Tuesday.",
            "end_user": "user-42",
            "segment": {"age_band": "65+", "locale": "en-GB"},
        },
    )

    assert response.status_code == 201
    body = response.json()
    assert body["kind"] == "report"
    assert body["status"] is None
    assert body["prediction"] == logged
    assert body["categories"] == ["incorrect", "unsafe"]  # sorted, as stored
    assert body["comment"] == "It told me to call [PHONE] and mail [EMAIL]"
    # the feedback's segment is merged over the prediction's
    assert body["segment"] == {"locale": "en-GB", "device": "ios", "age_band": "65+"}
    stored = Feedback.objects.get(pk=body["id"])
    expected_hmac = hmac.new(project.secret.encode(), b"user-42", hashlib.sha256).hexdigest()
    assert stored.end_user == expected_hmac
    assert "user-42" not in json.dumps(body)
    assert stored.categories == ["incorrect", "unsafe"]


def test_a_dispute_starts_open_and_is_readable_by_the_app(ingest_client, logged):
    response = post(
        ingest_client,
        "/api/v1/feedback",
        {"prediction": logged, "kind": "dispute", "comment": "This is wrong."},
    )
    assert response.status_code == 201
    dispute_id = response.json()["id"]
    assert response.json()["status"] == "open"

    status = ingest_client.get(f"/api/v1/disputes/{dispute_id}")

    assert status.status_code == 200
    assert status.json() == {
        "id": dispute_id,
        "status": "open",
        "resolution_note": "",
        "resolved_at": None,
    }


def test_a_report_is_not_a_dispute(ingest_client, logged):
    report = post(ingest_client, "/api/v1/feedback", {"prediction": logged, "kind": "report"})

    assert ingest_client.get(f"/api/v1/disputes/{report.json()['id']}").status_code == 404


def test_feedback_can_log_its_prediction_inline(ingest_client, project):
    inline = {**PREDICTION, "external_id": "inline-1"}

    response = post(
        ingest_client, "/api/v1/feedback", {"prediction": inline, "kind": "rating", "rating": 1}
    )

    assert response.status_code == 201
    prediction = Prediction.objects.get(project=project, external_id="inline-1")
    assert Feedback.objects.get(pk=response.json()["id"]).prediction == prediction
    # the same inline prediction again is a reference to the stored one
    again = post(
        ingest_client, "/api/v1/feedback", {"prediction": inline, "kind": "rating", "rating": -1}
    )
    assert again.status_code == 201
    assert Prediction.objects.filter(external_id="inline-1").count() == 1


def test_inline_prediction_with_other_content_is_409(ingest_client, logged):
    response = post(
        ingest_client,
        "/api/v1/feedback",
        {"prediction": {**PREDICTION, "output": "changed"}, "kind": "report"},
    )

    assert response.status_code == 409
    assert errors_of(response) == {("prediction", "conflict")}
    assert Feedback.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"kind": "report"}, ("prediction", "required")),
        ({"prediction": "nope", "kind": "report"}, ("prediction", "unknown_prediction")),
        ({"prediction": "chat-8812"}, ("kind", "required")),
        ({"prediction": "chat-8812", "kind": "complaint"}, ("kind", "invalid_choice")),
        ({"prediction": "chat-8812", "kind": "rating"}, ("rating", "required")),
        ({"prediction": "chat-8812", "kind": "rating", "rating": 5}, ("rating", "invalid_choice")),
        (
            {"prediction": "chat-8812", "kind": "report", "categories": "unsafe"},
            ("categories", "invalid_type"),
        ),
        (
            {"prediction": "chat-8812", "kind": "report", "categories": ["unsafe", "rude"]},
            ("categories[1]", "unknown_category"),
        ),
        (
            {"prediction": "chat-8812", "kind": "report", "comment": "x" * 5001},
            ("comment", "too_long"),
        ),
        (
            {"prediction": "chat-8812", "kind": "report", "correction": 12},
            ("correction", "invalid_type"),
        ),
        ({"prediction": "chat-8812", "kind": "report", "segment": []}, ("segment", "invalid_type")),
        ({"prediction": "chat-8812", "kind": "report", "mood": "sad"}, ("mood", "unknown_field")),
        ({"prediction": 42, "kind": "report"}, ("prediction", "invalid_type")),
        ({"prediction": {"output": 1}, "kind": "report"}, ("prediction.external_id", "required")),
    ],
)
def test_invalid_feedback_is_refused_naming_the_field(ingest_client, logged, body, expected):
    response = post(ingest_client, "/api/v1/feedback", body)

    assert response.status_code == 400
    assert expected in errors_of(response)
    assert Feedback.objects.count() == 0


def test_unknown_category_error_lists_the_valid_ones(ingest_client, logged):
    response = post(
        ingest_client,
        "/api/v1/feedback",
        {"prediction": logged, "kind": "report", "categories": ["rude"]},
    )

    (error,) = response.json()["errors"]
    assert error["field"] == "categories[0]"
    assert "'rude'" in error["detail"]
    assert "incorrect, incomplete, unsafe, biased, off_topic, too_slow, other" in error["detail"]


def test_an_inactive_category_is_refused(
    ingest_client, logged, project, django_capture_on_commit_callbacks
):
    from feedback.services.projects import project_settings_changed

    project.categories.filter(slug="biased").update(active=False)
    with django_capture_on_commit_callbacks(execute=True):
        project_settings_changed(project=project)

    response = post(
        ingest_client,
        "/api/v1/feedback",
        {"prediction": logged, "kind": "report", "categories": ["biased"]},
    )

    assert response.status_code == 400
    assert errors_of(response) == {("categories[0]", "unknown_category")}


# --- idempotency -----------------------------------------------------------------------------


def test_replaying_an_idempotency_key_returns_the_first_response(ingest_client, logged):
    body = {"prediction": logged, "kind": "dispute", "comment": "wrong"}
    first = post(ingest_client, "/api/v1/feedback", body, HTTP_IDEMPOTENCY_KEY="k-1")

    replay = post(ingest_client, "/api/v1/feedback", body, HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == 201
    assert replay.status_code == 200
    assert replay.json() == first.json()
    assert Feedback.objects.count() == 1


def test_same_idempotency_key_with_another_body_is_409(ingest_client, logged):
    post(
        ingest_client,
        "/api/v1/feedback",
        {"prediction": logged, "kind": "report"},
        HTTP_IDEMPOTENCY_KEY="k-1",
    )

    response = post(
        ingest_client,
        "/api/v1/feedback",
        {"prediction": logged, "kind": "report", "comment": "other"},
        HTTP_IDEMPOTENCY_KEY="k-1",
    )

    assert response.status_code == 409
    assert errors_of(response) == {("Idempotency-Key", "conflict")}
    assert Feedback.objects.count() == 1


def test_idempotency_keys_are_per_project(ingest_client, logged, other_project, make_key):
    from tests.conftest import client_for

    other = client_for(make_key(other_project, ["ingest"]))
    post(other, "/api/v1/predictions", PREDICTION)
    body = {"prediction": logged, "kind": "report"}

    a = post(ingest_client, "/api/v1/feedback", body, HTTP_IDEMPOTENCY_KEY="shared")
    b = post(other, "/api/v1/feedback", body, HTTP_IDEMPOTENCY_KEY="shared")

    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


def test_an_overlong_idempotency_key_is_refused(ingest_client, logged):
    response = post(
        ingest_client,
        "/api/v1/feedback",
        {"prediction": logged, "kind": "report"},
        HTTP_IDEMPOTENCY_KEY="k" * 256,
    )

    assert response.status_code == 400
    assert errors_of(response) == {("Idempotency-Key", "too_long")}


# --- batch -----------------------------------------------------------------------------------


def test_batch_stores_valid_items_and_reports_invalid_ones_by_index(ingest_client, logged):
    items = [
        {"prediction": logged, "kind": "rating", "rating": 1, "idempotency_key": "a"},
        {"prediction": logged, "kind": "report", "categories": ["nope"]},
        {"prediction": "missing", "kind": "report"},
        {"prediction": logged, "kind": "dispute", "comment": "call +44 20 7946 0958"},
        "not an object",
    ]

    response = post(ingest_client, "/api/v1/feedback/batch", {"items": items})

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in results] == [201, 400, 400, 201, 400]
    assert results[1]["errors"][0]["field"] == "items[1].categories[0]"
    assert results[2]["errors"][0]["code"] == "unknown_prediction"
    assert results[4]["errors"][0]["field"] == "items[4]"
    assert results[1]["id"] is None
    stored = Feedback.objects.order_by("id")
    assert [f.pk for f in stored] == [results[0]["id"], results[3]["id"]]
    assert stored[1].comment == "call [PHONE]"
    assert stored[1].status == "open"


def test_batch_idempotency_replays_and_conflicts(ingest_client, logged):
    item = {"prediction": logged, "kind": "report", "idempotency_key": "b-1"}
    first = post(ingest_client, "/api/v1/feedback/batch", {"items": [item]}).json()["results"][0]

    items = [
        item,
        {**item, "comment": "different"},
        item,
        {**item, "idempotency_key": "b-2"},
        {**item, "idempotency_key": "b-2"},
        {**item, "idempotency_key": "b-2", "rating": 1},
    ]
    results = post(ingest_client, "/api/v1/feedback/batch", {"items": items}).json()["results"]

    assert [r["status"] for r in results] == [200, 409, 200, 201, 200, 409]
    assert results[0]["id"] == results[2]["id"] == first["id"]
    assert results[3]["id"] == results[4]["id"]
    assert results[1]["errors"][0]["field"] == "items[1].idempotency_key"
    assert Feedback.objects.count() == 2


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, ("items", "invalid_type")),
        ({"items": []}, ("items", "empty")),
        ({"items": {"a": 1}}, ("items", "invalid_type")),
        ([1, 2], (None, "invalid_type")),
    ],
)
def test_malformed_batches_are_400(ingest_client, body, expected):
    response = post(ingest_client, "/api/v1/feedback/batch", body)

    assert response.status_code == 400
    assert expected in errors_of(response)


def test_batch_limit_is_1000_items(ingest_client, logged):
    items = [{"prediction": logged, "kind": "rating", "rating": 1}] * 1001

    response = post(ingest_client, "/api/v1/feedback/batch", {"items": items})

    assert response.status_code == 400
    assert errors_of(response) == {("items", "too_many")}
    assert Feedback.objects.count() == 0
    ok = post(ingest_client, "/api/v1/feedback/batch", {"items": items[:1000]})
    assert ok.status_code == 200
    assert Feedback.objects.count() == 1000


def test_batch_uses_a_constant_number_of_queries(
    ingest_client, logged, django_assert_max_num_queries
):
    def batch(n):
        return {
            "items": [
                {
                    "prediction": logged,
                    "kind": "report",
                    "categories": ["incorrect", "unsafe"],
                    "idempotency_key": f"q-{n}-{i}",
                }
                for i in range(n)
            ]
        }

    post(ingest_client, "/api/v1/feedback/batch", batch(1))  # warm the key cache
    with django_assert_max_num_queries(8):
        assert post(ingest_client, "/api/v1/feedback/batch", batch(10)).status_code == 200
    # SQLite caps a statement at 999 parameters, so Django splits big INSERTs there.
    limit = 8 if on_postgres() else 8 + 2 * 16
    with django_assert_max_num_queries(limit):
        assert post(ingest_client, "/api/v1/feedback/batch", batch(500)).status_code == 200
    assert Feedback.objects.count() == 511


# --- transport-level refusals ----------------------------------------------------------------


def test_body_over_one_mebibyte_is_413(ingest_client, logged):
    huge = {"prediction": logged, "kind": "report", "comment": "x" * (1024 * 1024)}

    response = post(ingest_client, "/api/v1/feedback", huge)

    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "too_large"


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b'{"a": NaN}', b"[" * 100_000])
def test_malformed_json_is_400(ingest_client, raw):
    response = ingest_client.post("/api/v1/feedback", data=raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "parse_error"


def test_non_object_body_is_400(ingest_client):
    response = post(ingest_client, "/api/v1/feedback", ["a"])

    assert response.status_code == 400
    assert errors_of(response) == {(None, "invalid_type")}


def test_non_json_content_type_is_415(ingest_client):
    response = ingest_client.post(
        "/api/v1/feedback", data="kind=report", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 415
    assert response.json()["errors"][0]["code"] == "unsupported_media_type"

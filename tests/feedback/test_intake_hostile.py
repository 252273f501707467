"""Hostile input to the JSON endpoints: each is a 4xx naming the field or the cause, never a
500, and in a batch it costs only the item concerned (issue 13, "Hostile input")."""

from __future__ import annotations

import json
from io import BytesIO

import pytest
from django.db import connection
from django.test.client import ClientHandler

from feedback.api.parsers import JSON_MAX_DEPTH
from feedback.models import Feedback, Prediction
from feedback.pii import SCRUB_MAX_DEPTH, scrub_value
from tests.conftest import client_for

from ..labeling.test_goldsets import item_payload

pytestmark = pytest.mark.django_db

PREDICTION = {
    "external_id": "inf-1",
    "model": "m",
    "model_version": "v1",
    "input": {},
    "output": {},
}


def post_raw(client, path, raw: bytes, content_type="application/json", **headers):
    return client.post(path, data=raw, content_type=content_type, **headers)


def post(client, path, body, **headers):
    return post_raw(client, path, json.dumps(body).encode(), **headers)


def errors_of(response):
    return [(e["field"], e["code"]) for e in response.json()["errors"]]


@pytest.fixture
def logged(project, prediction_factory):
    prediction_factory(project=project, external_id="chat-1")
    return "chat-1"


def nested(depth: int, leaf=1):
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


# --- numbers beyond a double ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'"input": {"x": 1e999}, "output": {}', "input.x"),
        (b'"input": {}, "output": [1, -1e999]', "output[1]"),
        (b'"input": {}, "output": {}, "confidence": 1e999', "confidence"),
    ],
)
def test_a_number_beyond_a_double_is_400_naming_the_field(ingest_client, raw, field):
    body = b'{"external_id": "inf-1", "model": "m", "model_version": "v1", ' + raw + b"}"

    response = post_raw(ingest_client, "/api/v1/predictions", body)

    assert response.status_code == 400, response.content
    assert errors_of(response) == [(field, "out_of_range")]
    assert Prediction.objects.count() == 0


def test_a_correction_beyond_a_double_is_400(ingest_client, logged):
    raw = b'{"prediction": "chat-1", "kind": "report", "correction": {"score": -1e999}}'

    response = post_raw(ingest_client, "/api/v1/feedback", raw)

    assert response.status_code == 400
    assert errors_of(response) == [("correction.score", "out_of_range")]
    assert Feedback.objects.count() == 0


def test_a_gold_item_beyond_a_double_is_400(data_client):
    assert (
        post(data_client, "/api/v1/goldsets", {"slug": "eval", "name": "Eval"}).status_code == 201
    )
    item = json.dumps(item_payload("a")).encode()
    raw = item.replace(b'"input": {', b'"input": {"x": 1e999, ', 1)

    response = post_raw(data_client, "/api/v1/goldsets/eval/versions/1/items", raw)

    assert response.status_code == 400, response.content
    assert errors_of(response) == [("input.x", "out_of_range")]


# --- depth ------------------------------------------------------------------------------------


def test_json_deeper_than_the_limit_is_400_naming_the_field(ingest_client, logged):
    # the body is level 1, correction level 2: correction may nest JSON_MAX_DEPTH - 1 levels
    fits = {"prediction": logged, "kind": "report", "correction": nested(JSON_MAX_DEPTH - 2)}
    too_deep = {"prediction": logged, "kind": "report", "correction": nested(490)}

    stored = post(ingest_client, "/api/v1/feedback", fits)
    refused = post(ingest_client, "/api/v1/feedback", too_deep)

    assert stored.status_code == 201, stored.content
    assert refused.status_code == 400
    ((field, code),) = errors_of(refused)
    assert code == "too_deep" and field.startswith("correction.a.a")
    assert Feedback.objects.count() == 1


def test_a_body_too_deep_for_the_parser_is_400(ingest_client):
    response = post_raw(ingest_client, "/api/v1/predictions", b"[" * 100_000 + b"]" * 100_000)

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "parse_error"


def test_the_scrubber_refuses_rather_than_recurse_without_bound():
    assert scrub_value(nested(SCRUB_MAX_DEPTH - 1, "mail a@b.io")) == nested(
        SCRUB_MAX_DEPTH - 1, "mail [EMAIL]"
    )
    with pytest.raises(ValueError, match="deeper"):
        scrub_value(nested(5000, "x"))


# --- batches: every valid item stored, each bad one reported ----------------------------------


def test_a_prediction_batch_stores_the_items_beside_a_bad_number(ingest_client):
    raw = (
        b'{"items": [{"external_id": "ok-1", "input": {"x": 1}}, '
        b'{"external_id": "inf-1", "input": {"x": 1e999}}, '
        b'{"external_id": "deep", "input": ' + json.dumps(nested(40)).encode() + b"}, "
        b'{"external_id": "ok-2", "output": "fine"}]}'
    )

    response = post_raw(ingest_client, "/api/v1/predictions", raw)

    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 400, 400, 201]
    assert results[1]["errors"][0]["field"] == "items[1].input.x"
    assert results[1]["errors"][0]["code"] == "out_of_range"
    assert results[2]["errors"][0]["code"] == "too_deep"
    assert [r["external_id"] for r in results] == ["ok-1", "inf-1", "deep", "ok-2"]
    assert set(Prediction.objects.values_list("external_id", flat=True)) == {"ok-1", "ok-2"}


def test_a_feedback_batch_stores_the_items_beside_a_nul_and_a_bad_number(ingest_client, logged):
    raw = (
        b'{"items": [{"prediction": "chat-1", "kind": "report", "comment": "a\\u0000b"}, '
        b'{"prediction": "chat-1", "kind": "report", "correction": {"n": 1e400}}, '
        b'{"prediction": "chat-1", "kind": "report", "comment": "fine"}]}'
    )

    response = post_raw(ingest_client, "/api/v1/feedback/batch", raw)

    results = response.json()["results"]
    assert [r["status"] for r in results] == [400, 400, 201]
    assert results[0]["errors"][0]["field"] == "items[0].comment"
    assert results[1]["errors"][0]["field"] == "items[1].correction.n"
    assert list(Feedback.objects.values_list("comment", flat=True)) == ["fine"]


def _refuse_prediction(external_id: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE FUNCTION test_refuse_prediction() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.external_id = '{external_id}' THEN
                    RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = 'check_violation';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER test_refuse_prediction BEFORE INSERT ON feedback_prediction
            FOR EACH ROW EXECUTE FUNCTION test_refuse_prediction();
            """
        )


@pytest.mark.postgres
@pytest.mark.parametrize("size", [3, 20])  # INSERT and COPY
def test_a_refusal_only_the_database_notices_costs_only_that_item(ingest_client, size):
    _refuse_prediction("poison")
    items = [{**PREDICTION, "external_id": f"p-{n}"} for n in range(size)]
    items[1]["external_id"] = "poison"

    response = post(ingest_client, "/api/v1/predictions", {"items": items})

    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 400] + [201] * (size - 2)
    assert results[1]["errors"][0]["code"] == "refused"
    assert results[1]["errors"][0]["field"] == "items[1]"
    assert "refused by a test trigger" in results[1]["errors"][0]["detail"]
    stored = dict(Prediction.objects.values_list("external_id", "pk"))
    assert stored == {r["external_id"]: r["id"] for r in results if r["status"] == 201}
    assert len(stored) == size - 1


@pytest.mark.postgres
def test_a_single_item_the_database_refuses_is_400_not_500(ingest_client):
    _refuse_prediction("poison")

    response = post(ingest_client, "/api/v1/predictions", {**PREDICTION, "external_id": "poison"})

    assert response.status_code == 400
    assert errors_of(response) == [(None, "refused")]


# --- the body itself ----------------------------------------------------------------------------


def test_duplicate_keys_are_400(ingest_client, logged):
    raw = b'{"prediction": "chat-1", "kind": "rating", "kind": "dispute"}'

    response = post_raw(ingest_client, "/api/v1/feedback", raw)

    assert response.status_code == 400
    assert "'kind' appears twice" in response.json()["errors"][0]["detail"]
    assert Feedback.objects.count() == 0


def test_duplicate_keys_are_400_on_every_json_endpoint(data_client):
    response = post_raw(data_client, "/api/v1/goldsets", b'{"slug": "a", "slug": "b", "name": "n"}')

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "parse_error"


def test_a_nul_anywhere_is_refused_naming_the_field(ingest_client, data_client):
    raw = b'{"external_id": "n", "input": {"deep": ["ok", "x\\u0000y"]}}'

    intake = post_raw(ingest_client, "/api/v1/predictions", raw)
    gold = post_raw(data_client, "/api/v1/goldsets", b'{"slug": "s", "name": "a\\u0000"}')

    assert errors_of(intake) == [("input.deep[1]", "invalid")]
    assert errors_of(gold) == [("name", "invalid")]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_body_in_utf16_or_utf32_is_400(ingest_client, logged, encoding):
    raw = '{"prediction": "chat-1", "kind": "report"}'.encode(encoding)

    response = post_raw(ingest_client, "/api/v1/feedback", raw)

    assert response.status_code == 400
    assert "must be UTF-8" in response.json()["errors"][0]["detail"]
    assert Feedback.objects.count() == 0


def test_a_charset_other_than_utf8_is_415(ingest_client, logged, data_client):
    raw = b'{"prediction": "chat-1", "kind": "report"}'

    intake = post_raw(
        ingest_client, "/api/v1/feedback", raw, content_type="application/json; charset=utf-16"
    )
    gold = post_raw(
        data_client,
        "/api/v1/goldsets",
        b'{"slug": "s", "name": "n"}',
        content_type="application/json; charset=latin-1",
    )

    assert (intake.status_code, gold.status_code) == (415, 415)
    assert "must be UTF-8" in intake.json()["errors"][0]["detail"]
    assert Feedback.objects.count() == 0


def test_utf8_with_a_charset_is_taken(ingest_client, logged):
    raw = '{"prediction": "chat-1", "kind": "report", "comment": "Zürich"}'.encode()

    response = post_raw(
        ingest_client, "/api/v1/feedback", raw, content_type="application/json; charset=UTF-8"
    )

    assert response.status_code == 201
    assert Feedback.objects.get().comment == "Zürich"


# --- Transfer-Encoding: chunked -----------------------------------------------------------------


def wsgi_post(path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    """A request as gunicorn hands over a chunked body: de-chunked in wsgi.input, no
    CONTENT_LENGTH."""
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": BytesIO(raw),
        "wsgi.url_scheme": "http",
        "wsgi.errors": BytesIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
        **headers,
    }
    response = ClientHandler()(environ)  # Django's WSGI handler, as the test client runs it
    return response.status_code, json.loads(response.content)


def test_a_chunked_body_is_read(ingest_key, logged, data_key):
    raw = json.dumps({"prediction": logged, "kind": "report", "comment": "chunked"}).encode()

    status, body = wsgi_post(
        "/api/v1/feedback", raw, {"HTTP_AUTHORIZATION": f"Bearer {ingest_key}"}
    )
    gold_status, gold = wsgi_post(
        "/api/v1/goldsets",
        b'{"slug": "chunked", "name": "Chunked"}',
        {"HTTP_AUTHORIZATION": f"Bearer {data_key}"},
    )

    assert status == 201, body
    assert Feedback.objects.get().comment == "chunked"
    assert gold_status == 201, gold
    assert gold["slug"] == "chunked"


def test_a_chunked_body_over_the_limit_is_413(ingest_key, logged):
    raw = json.dumps({"prediction": logged, "kind": "report", "comment": "x" * 2_000_000}).encode()

    status, body = wsgi_post(
        "/api/v1/feedback", raw, {"HTTP_AUTHORIZATION": f"Bearer {ingest_key}"}
    )

    assert status == 413
    assert body["errors"][0]["code"] == "too_large"
    assert Feedback.objects.count() == 0


# --- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "1969-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
    ],
)
def test_a_timestamp_outside_1970_to_2100_is_400(ingest_client, moment):
    response = post(ingest_client, "/api/v1/predictions", {**PREDICTION, "occurred_at": moment})

    assert response.status_code == 400
    assert errors_of(response) == [("occurred_at", "out_of_range")]
    assert Prediction.objects.count() == 0


@pytest.mark.parametrize("moment", ["1970-01-01T00:00:00Z", "2099-12-31T23:59:59+00:00"])
def test_the_ends_of_the_range_are_taken(ingest_client, moment):
    response = post(ingest_client, "/api/v1/predictions", {**PREDICTION, "occurred_at": moment})

    assert response.status_code == 201, response.content


def test_person_clients_are_unaffected(member):
    # a body rule does not change who may call: a person posting intake is still refused (403)
    client = client_for(token=member.token)

    assert post(client, "/api/v1/feedback", {"prediction": "x"}).status_code == 403


def test_a_batch_item_that_is_a_list_is_reported_by_its_own_path(ingest_client, logged):
    raw = b'{"items": [["a\\u0000"], {"prediction": "chat-1", "kind": "report"}]}'

    results = post_raw(ingest_client, "/api/v1/feedback/batch", raw).json()["results"]

    assert [r["status"] for r in results] == [400, 201]
    assert results[0]["errors"][0]["field"] == "items[0][0]"

"""The one intake path (feedback/api/intake.py): what it answers and what it stores.

On PostgreSQL a single item is one prepared statement and a batch is written with COPY
(feedback/services/intake.py); on SQLite the same tests cover the portable path.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import select
import time

import pytest
from django.db import connection
from django.utils import timezone

from feedback.api.intake import _skip_health_check_if_idle
from feedback.api.serializers import FeedbackSerializer
from feedback.models import Feedback
from feedback.selectors import project_context
from feedback.services.intake import feedback_submit
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

VOLATILE = ("id", "created_at")


def post(client, path, body, *, raw=None, **headers):
    data = raw if raw is not None else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", **headers)


def stable(body):
    if isinstance(body, dict):
        return {k: stable(v) for k, v in body.items() if k not in VOLATILE}
    if isinstance(body, list):
        return [stable(v) for v in body]
    return body


@pytest.fixture
def logged(project, prediction_factory):
    prediction_factory(
        project=project, external_id="chat-1", segment={"locale": "de-DE", "device": "ios"}
    )
    return "chat-1"


# --- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"{not json", b'{"a": NaN}', b"[" * 100_000, b'{"k": "\\ud800"}', b"\xff\xfe"]
)
def test_unparseable_bodies_are_400(ingest_client, raw):
    response = post(ingest_client, "/api/v1/feedback/batch", None, raw=raw)

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "parse_error"


@pytest.mark.parametrize("length", ["0", "", "abc"])
def test_a_body_without_a_usable_length_is_read_as_empty(ingest_client, logged, length):
    body = {"prediction": logged, "kind": "report"}

    response = post(ingest_client, "/api/v1/feedback", body, CONTENT_LENGTH=length)

    assert response.status_code == 400  # as DRF reads it: {} (nothing required is there)
    assert {e["field"] for e in response.json()["errors"]} == {"prediction", "kind"}
    assert Feedback.objects.count() == 0


def test_an_oversized_body_is_413(ingest_client, logged):
    huge = {"prediction": logged, "kind": "report", "comment": "x" * (1024 * 1024)}

    response = post(ingest_client, "/api/v1/feedback", huge)

    assert response.status_code == 413
    assert response.json()["errors"][0]["code"] == "too_large"


def test_replays_and_conflicts(ingest_client, logged):
    body = {"prediction": logged, "kind": "report", "categories": ["incorrect"]}
    first = post(ingest_client, "/api/v1/feedback", body, HTTP_IDEMPOTENCY_KEY="k1")

    replay = post(ingest_client, "/api/v1/feedback", body, HTTP_IDEMPOTENCY_KEY="k1")
    conflict = post(
        ingest_client, "/api/v1/feedback", {**body, "comment": "other"}, HTTP_IDEMPOTENCY_KEY="k1"
    )

    assert first.status_code == 201
    assert replay.status_code == 200
    assert replay.json() == first.json()
    assert conflict.status_code == 409
    assert conflict.json()["errors"] == [
        {
            "field": "Idempotency-Key",
            "code": "conflict",
            "detail": "Idempotency key 'k1' was already used with a different body.",
        }
    ]
    assert Feedback.objects.count() == 1


def test_the_created_response_is_the_stored_row_rendered(ingest_client, logged, project):
    body = {
        "prediction": logged,
        "kind": "dispute",
        "categories": ["unsafe", "incorrect"],
        "comment": "Call me at 555-123-4567",
        "correction": {"reply": "mail bob@example.com"},
        "end_user": "user-7",
        "segment": {"age_band": "65+", "locale": "en-GB"},
    }

    response = post(ingest_client, "/api/v1/feedback", body, HTTP_IDEMPOTENCY_KEY="r1")

    assert response.status_code == 201
    stored = Feedback.objects.select_related("prediction").get(pk=response.json()["id"])
    assert response.json() == FeedbackSerializer(stored).data
    assert stored.segment == {"locale": "en-GB", "device": "ios", "age_band": "65+"}
    assert stored.comment == "Call me at [PHONE]"
    assert stored.correction == {"reply": "mail [EMAIL]"}
    assert stored.status == "open"
    secret = project.secret.encode()
    assert stored.end_user == hmac.new(secret, b"user-7", hashlib.sha256).hexdigest()
    assert stored.categories == ["incorrect", "unsafe"]  # sorted slugs on the row


# --- key lookup and rate limit ----------------------------------------------------------------


def test_intake_and_drf_views_share_one_budget_per_key(settings, ingest_key, logged):
    settings.REDRESS_INGEST_RATE = "3/minute"
    client = client_for(ingest_key)
    body = {"prediction": logged, "kind": "report"}

    statuses = [
        post(client, "/api/v1/feedback", body).status_code,
        client.get("/api/v1/categories").status_code,
        post(client, "/api/v1/feedback/batch", {"items": [body]}).status_code,
        post(client, "/api/v1/feedback", body).status_code,
        client.get("/api/v1/categories").status_code,
    ]

    assert statuses == [201, 200, 200, 429, 429]
    refused = post(client, "/api/v1/feedback", body)
    assert 1 <= int(refused["Retry-After"]) <= 61
    assert refused.json()["errors"][0]["code"] == "throttled"
    assert Feedback.objects.count() == 2


def test_refused_keys_are_not_counted(settings, data_key, logged):
    settings.REDRESS_INGEST_RATE = "2/minute"
    client = client_for(data_key)

    body = {"prediction": logged}
    refused = [post(client, "/api/v1/feedback", body).status_code for _ in range(4)]
    reads = [client.get("/api/v1/feedback").status_code for _ in range(3)]

    assert refused == [403] * 4  # never 429: a refused key is not counted
    assert reads == [200, 200, 429]


def test_unknown_and_revoked_keys_are_401(
    logged, project, make_key, django_capture_on_commit_callbacks
):
    from feedback.models import ApiKey
    from feedback.services.keys import apikey_revoke

    raw = make_key(project, ["ingest"])
    client = client_for(raw)
    body = {"prediction": logged, "kind": "report"}
    assert post(client, "/api/v1/feedback", body).status_code == 201
    with django_capture_on_commit_callbacks(execute=True):  # drops the cached lookup
        apikey_revoke(key=ApiKey.objects.get(project=project, prefix=raw[:12]))

    for key in (raw, "rdr_unknown"):
        response = post(client_for(key), "/api/v1/feedback", {"prediction": logged})
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert Feedback.objects.count() == 1


# --- what the batch path stores -------------------------------------------------------------


def test_a_batch_copies_the_predictions_segments_as_stored(ingest_client, project):
    # Items that add nothing to the segment take their prediction's, written back as the text
    # PostgreSQL gave (on SQLite: encoded again); non-ASCII, nesting and numbers survive.
    from feedback.models import Prediction

    segments = [
        {"locale": "ja-JP", "région": "Île-de-France \u2028 東京", "n": 1.5, "big": 10**20},
        {"nested": {"a": [1, None, True], "b": "x\"y"}, "empty": {}},
        {},
    ]
    for i, segment in enumerate(segments):
        Prediction.objects.create(
            project=project, external_id=f"seg-{i}", segment=segment, occurred_at=timezone.now()
        )
    items = [{"prediction": f"seg-{i % 3}", "kind": "report"} for i in range(12)]
    items[0]["segment"] = {"own": "yes"}

    response = post(ingest_client, "/api/v1/feedback/batch", {"items": items})

    ids = [r["id"] for r in response.json()["results"]]
    assert [r["status"] for r in response.json()["results"]] == [201] * 12
    stored = {f.pk: f.segment for f in Feedback.objects.filter(pk__in=ids)}
    assert stored[ids[0]] == {**segments[0], "own": "yes"}
    for i, feedback_id in enumerate(ids[1:], start=1):
        assert stored[feedback_id] == segments[i % 3]


def test_a_batch_stores_exactly_the_rows_it_reports(ingest_client, logged, project):
    items = []
    for i in range(60):
        item = {
            "prediction": logged,
            "kind": ("report", "dispute", "rating")[i % 3],
            "categories": [["incorrect"], ["unsafe", "incorrect"], []][i % 3],
            "comment": f"order {i}, write to a{i}@example.com",
            "end_user": f"u{i % 7}",
            "segment": {"age_band": str(i % 4)},
            "idempotency_key": f"key-{i % 50}",  # items 50-59 replay 0-9 (same body) or not
        }
        if i % 3 == 2:
            item["rating"] = 1
        if i >= 50:
            item = {**items[i - 50]} if i % 2 == 0 else {**item, "comment": "other"}
        items.append(item)
    items[5] = {"prediction": "unknown", "kind": "report", "idempotency_key": "key-5"}
    items[7] = {"prediction": logged, "kind": "report", "categories": ["rude"]}

    response = post(ingest_client, "/api/v1/feedback/batch", {"items": items})

    results = response.json()["results"]
    created = {r["index"]: r["id"] for r in results if r["status"] == 201}
    # items 5 and 7 are invalid; 57 is the first use of key-7 (item 7 carries none)
    assert len(created) == 49
    assert [r["status"] for r in results[50:]] == [200, 409, 200, 409, 200, 409, 200, 201, 200, 409]
    assert results[5]["errors"][0]["code"] == "unknown_prediction"
    assert {r["id"] for r in results[50:] if r["status"] == 200} <= set(created.values())
    stored = {f.pk: f for f in Feedback.objects.all()}
    assert set(stored) == set(created.values())
    secret = project.secret.encode()
    for index, feedback_id in created.items():
        item, feedback = items[index], stored[feedback_id]
        assert feedback.kind == item["kind"]
        assert feedback.comment == re.sub(r"\S+@example\.com", "[EMAIL]", item["comment"])
        expected_user = hmac.new(secret, item["end_user"].encode(), "sha256").hexdigest()
        assert feedback.end_user == expected_user
        assert feedback.segment == {"locale": "de-DE", "device": "ios", **item["segment"]}
        assert feedback.idempotency_key == item["idempotency_key"]
        assert feedback.status == ("open" if item["kind"] == "dispute" else None)
        assert feedback.rating == item.get("rating")
        assert feedback.resolution_note == ""
        assert feedback.categories == sorted(set(item["categories"]))


def test_a_replayed_batch_stores_nothing_more(ingest_client, logged):
    items = [
        {"prediction": logged, "kind": "report", "idempotency_key": f"k{i}"} for i in range(30)
    ]
    first = post(ingest_client, "/api/v1/feedback/batch", {"items": items}).json()["results"]

    again = post(ingest_client, "/api/v1/feedback/batch", {"items": items}).json()["results"]

    assert {r["status"] for r in first} == {201}
    assert {r["status"] for r in again} == {200}
    assert [r["id"] for r in again] == [r["id"] for r in first]
    assert Feedback.objects.count() == 30


@pytest.mark.postgres
def test_the_single_item_insert_is_a_prepared_statement(ingest_client, logged):
    # Django's default (prepare_threshold None) would disable psycopg's preparation even where
    # the query asks for it: the settings keep it on, and the INSERT is planned once per
    # connection, not once per request.
    for n in range(3):
        body = {"prediction": logged, "kind": "report", "comment": f"n{n}"}
        assert (
            post(ingest_client, "/api/v1/feedback", body, HTTP_IDEMPOTENCY_KEY=f"p{n}").status_code
            == 201
        )

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements "
            "WHERE statement LIKE '%%INSERT INTO feedback_feedback%%'"
        )
        assert cursor.fetchone()[0] == 1


def test_a_single_item_is_stored_as_sent(ingest_client, project, logged):
    # Every kind of value the single statement takes: text beyond ASCII, JSON, a rating, a
    # dispute's status, a timestamp (on PostgreSQL: parameters in libpq's text format).
    body = {
        "prediction": logged,
        "kind": "dispute",
        "rating": -1,
        "categories": ["unsafe", "incorrect"],
        "comment": "Zürich → 東京, \"quoted\" and a back\\slash; mail bob@example.com",
        "correction": {"answer": "Größe 42", "n": [1, 2.5, None, True]},
        "segment": {"locale": "fr-CH", "tier": "pro"},
        "end_user": "user-ß",
    }

    response = post(ingest_client, "/api/v1/feedback", body, HTTP_IDEMPOTENCY_KEY="stored-1")

    assert response.status_code == 201
    stored = Feedback.objects.get()
    answer = response.json()
    assert answer["id"] == stored.pk
    assert stored.kind == "dispute" and stored.status == "open" and stored.rating == -1
    assert stored.categories == ["incorrect", "unsafe"]
    assert stored.comment == "Zürich → 東京, \"quoted\" and a back\\slash; mail [EMAIL]"
    assert stored.correction == body["correction"]
    assert stored.segment == {"locale": "fr-CH", "device": "ios", "tier": "pro"}
    assert stored.idempotency_key == "stored-1"
    expected_user = hmac.new(project.secret.encode(), "user-ß".encode(), "sha256").hexdigest()
    assert stored.end_user == expected_user
    assert answer["created_at"] == stored.created_at.isoformat().replace("+00:00", "Z")
    assert abs((timezone.now() - stored.created_at).total_seconds()) < 60
    assert stable(answer) == stable(FeedbackSerializer(stored).data)


@pytest.mark.postgres
def test_a_statement_the_server_forgot_is_prepared_again(ingest_client, logged):
    body = {"prediction": logged, "kind": "report"}
    assert post(ingest_client, "/api/v1/feedback", body).status_code == 201
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # what a pooler's DISCARD ALL does between clients

    # the request that finds it gone is stored by the general path, the next one prepares it
    again = post(ingest_client, "/api/v1/feedback", body, HTTP_IDEMPOTENCY_KEY="after-1")
    third = post(ingest_client, "/api/v1/feedback", body, HTTP_IDEMPOTENCY_KEY="after-2")

    assert (again.status_code, third.status_code) == (201, 201)
    assert Feedback.objects.count() == 3
    assert Feedback.objects.get(idempotency_key="after-1").pk == again.json()["id"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements "
            "WHERE statement LIKE '%%INSERT INTO feedback_feedback%%'"
        )
        assert cursor.fetchone()[0] == 1


@pytest.mark.postgres
def test_with_preparation_off_the_statement_is_sent_unnamed(ingest_client, logged):
    # DJANGO_DB_PREPARE_THRESHOLD=-1 (PgBouncer in transaction mode): nothing is prepared.
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # a fresh session, as far as statements go
    connection.connection._prepared.clear()
    connection.connection.prepare_threshold = None
    try:
        for n in range(3):
            body = {"prediction": logged, "kind": "report", "comment": f"n{n}"}
            assert post(ingest_client, "/api/v1/feedback", body).status_code == 201
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements")
            assert cursor.fetchone()[0] == 0
    finally:
        connection.connection.prepare_threshold = 5
    assert Feedback.objects.count() == 3


def _refuse_comment(comment: str, errcode: str, *, at_commit: bool = False) -> None:
    """A trigger (test_refuse) raising ``errcode`` for a feedback row with this comment: before
    the insert, or at COMMIT (a deferred constraint trigger)."""
    trigger = (
        "CREATE CONSTRAINT TRIGGER test_refuse AFTER INSERT ON feedback_feedback "
        "DEFERRABLE INITIALLY DEFERRED"
        if at_commit
        else "CREATE TRIGGER test_refuse BEFORE INSERT ON feedback_feedback"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.comment = '{comment}' THEN
                    RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = '{errcode}';
                END IF;
                RETURN NEW;
            END $$;
            {trigger} FOR EACH ROW EXECUTE FUNCTION test_refuse();
            """
        )


@pytest.mark.postgres
def test_a_database_refusal_of_a_single_item_is_reported(project, logged):
    # given a trigger that refuses one comment with a data error
    _refuse_comment("refused", "invalid_text_representation")
    context = project_context(project=project)
    item = {"prediction": logged, "kind": "report", "comment": "refused"}

    (result,) = feedback_submit(context=context, items=[item], idempotency_keys=[None])

    assert result.outcome == "invalid"
    assert result.errors[0].code == "refused"
    assert "refused by a test trigger" in result.errors[0].detail
    # the caller's transaction is intact (the statement ran in a savepoint) and the next works
    item["comment"] = "fine"
    (result,) = feedback_submit(context=context, items=[item], idempotency_keys=[None])
    assert result.outcome == "created"
    assert list(Feedback.objects.values_list("comment", flat=True)) == ["fine"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_refusal_at_commit_costs_only_the_refused_item(project, logged):
    # given a constraint that the last row of the batch breaks, checked at COMMIT (a deferred
    # constraint trigger), after every row was written by COPY
    context = project_context(project=project)
    items = [
        {"prediction": logged, "kind": "report", "categories": ["unsafe"], "idempotency_key": i}
        for i in map(str, range(40))
    ]
    items[-1]["comment"] = "doomed"
    _refuse_comment("doomed", "check_violation", at_commit=True)
    try:
        results = feedback_submit(context=context, items=items)

        assert [r.outcome for r in results] == ["created"] * 39 + ["invalid"]
        assert results[-1].errors[0].code == "refused"
        stored = dict(Feedback.objects.values_list("idempotency_key", "pk"))
        assert stored == {r.obj.idempotency_key: r.obj.pk for r in results[:39]}
    finally:
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER test_refuse ON feedback_feedback; DROP FUNCTION test_refuse();"
            )
    # and the item goes through once the database takes it
    results = feedback_submit(context=context, items=items)
    assert [r.outcome for r in results] == ["replayed"] * 39 + ["created"]
    assert Feedback.objects.count() == 40


# --- the connection health check ------------------------------------------------------------


def _end_from_the_server_side(pid: int) -> None:
    import psycopg

    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"] or None,
        port=settings["PORT"] or None,
        user=settings["USER"] or None,
        password=settings["PASSWORD"] or None,
        dbname=settings["NAME"],
        autocommit=True,
    ) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    deadline = time.monotonic() + 5
    while not select.select([connection.connection.fileno()], [], [], 0.05)[0]:
        assert time.monotonic() < deadline, "the server's goodbye never arrived"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_health_check_is_skipped_only_on_an_idle_quiet_connection(ingest_client, logged):
    body = {"prediction": logged, "kind": "report"}
    assert post(ingest_client, "/api/v1/feedback", body).status_code == 201
    connection.health_check_enabled = True

    connection.health_check_done = False
    _skip_health_check_if_idle()
    assert connection.health_check_done is True  # healthy and idle: no SELECT 1 needed

    connection.health_check_done = False
    old_pid = connection.connection.info.backend_pid
    _end_from_the_server_side(old_pid)  # a restart, an idle timeout, pg_terminate_backend
    _skip_health_check_if_idle()
    assert connection.health_check_done is False  # its goodbye is waiting: check it

    # and the request that follows gets a new connection from Django's check, and stores
    response = post(ingest_client, "/api/v1/feedback", body)

    assert response.status_code == 201
    assert connection.connection.info.backend_pid != old_pid
    assert Feedback.objects.count() == 2


# --- responses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        {"kind": "report"},
        {"kind": "rating", "rating": -1, "end_user": "u-1"},
        {"kind": "rating", "rating": 1, "categories": ["unsafe", "incorrect"]},
        {"kind": "dispute", "comment": "mail a@b.io", "correction": {"reply": "x", "n": [1, 2.5]}},
        {"kind": "report", "correction": "The refund window is 30 days.", "segment": {"a": "b"}},
        {"kind": "report", "comment": "\u2028 ünïcode \U0001f600", "correction": ["x", None]},
    ],
)
def test_the_direct_representation_is_the_serializers(ingest_client, logged, item):
    from feedback.api.intake import feedback_representation
    from feedback.services.disputes import dispute_resolve

    created = post(ingest_client, "/api/v1/feedback", {"prediction": logged, **item})
    assert created.status_code == 201
    stored = Feedback.objects.get(pk=created.json()["id"])
    assert created.json() == json.loads(json.dumps(FeedbackSerializer(stored).data))
    if stored.kind == "dispute":  # resolved: a resolved_at, a note, another status
        dispute_resolve(dispute_id=stored.pk, upheld=True, note="fixed")
        stored.refresh_from_db()
        assert stored.resolved_at is not None

    direct = feedback_representation(stored)

    assert direct == FeedbackSerializer(stored).data
    assert list(direct) == list(FeedbackSerializer(stored).data)  # the same key order

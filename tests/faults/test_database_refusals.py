"""PostgreSQL turning requests away: 503 with Retry-After in the error shape, not a 500.

Every fault here is PostgreSQL's own refusal: a role at its connection limit (what a server
out of connections answers: SQLSTATE 53300), nothing listening on the port, a statement timeout
(57014) and a lock timeout (55P03) against a slow trigger or a lock another session holds. The
mapping lives in feedback/api/errors.py: ``exception_handler`` for the DRF views and
``handler500`` for what fails outside a view (the intake lane, the admin's session).
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager

import psycopg
import pytest
from django.db import connection
from rest_framework.test import APIClient

from feedback.models import Feedback, Prediction

from .conftest import free_port

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif("connection.vendor != 'postgresql'"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def logged(project, prediction_factory):
    return prediction_factory(project=project).external_id


def api_client(raw_key: str) -> APIClient:
    # What a server answers: exceptions outside a view go to handler500, not to the test.
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


def post(client, path, body):
    return client.post(path, data=json.dumps(body), content_type="application/json")


def assert_503(response, code: str) -> None:
    assert response.status_code == 503, response.content[:300]
    assert response["Retry-After"] == "5"
    assert response["Content-Type"] == "application/json"
    (error,) = response.json()["errors"]
    assert error["field"] is None
    assert error["code"] == code
    assert "retry in 5 s" in error["detail"]


def key_requests(ingest, data, logged):
    """One request of each kind: the intake lane (single, batch) and DRF views (POST, GET)."""
    return {
        "feedback": lambda: post(
            ingest, "/api/v1/feedback", {"prediction": logged, "kind": "report"}
        ),
        "batch": lambda: post(
            ingest, "/api/v1/feedback/batch", {"items": [{"prediction": logged, "kind": "report"}]}
        ),
        "predictions": lambda: post(
            ingest,
            "/api/v1/predictions",
            {
                "external_id": "refused-1",
                "model": "m",
                "model_version": "v1",
                "input": {},
                "output": {},
            },
        ),
        "categories": lambda: ingest.get("/api/v1/categories"),
        "feedback list": lambda: data.get("/api/v1/feedback"),
    }


@contextmanager
def connecting_as(**changes):
    """The next connection of this thread is made with other settings (then back)."""
    saved = {name: connection.settings_dict[name] for name in changes}
    connection.close()
    connection.settings_dict.update(changes)
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.update(saved)


@pytest.fixture
def role_at_its_limit():
    """A login role that PostgreSQL lets in no more: CONNECTION LIMIT 0."""
    name = f"redress_full_{os.getpid()}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if not cursor.fetchone()[0]:
            pytest.skip("creating a role needs a superuser")
        cursor.execute(f"DROP ROLE IF EXISTS {name}")
        cursor.execute(f"CREATE ROLE {name} LOGIN CONNECTION LIMIT 0")
    yield name
    with connection.cursor() as cursor:
        cursor.execute(f"DROP ROLE IF EXISTS {name}")


@pytest.mark.parametrize("fault", ["out of connections", "nothing listening"])
def test_a_database_that_refuses_connections_is_a_503_on_every_api_path(
    project, make_key, logged, role_at_its_limit, caplog, fault
):
    ingest, data = (
        api_client(make_key(project, ["ingest"])),
        api_client(make_key(project, ["data"])),
    )
    requests = key_requests(ingest, data, logged)
    # given keys whose lookups are cached, as on a busy server
    warm = {name: request().status_code for name, request in requests.items()}
    assert warm == {
        "feedback": 201,
        "batch": 200,
        "predictions": 201,
        "categories": 200,
        "feedback list": 200,
    }
    Feedback.objects.all().delete()
    Prediction.objects.filter(external_id="refused-1").delete()
    changes = (
        {"USER": role_at_its_limit} if fault == "out of connections" else {"PORT": str(free_port())}
    )

    with connecting_as(**changes):
        responses = {name: request() for name, request in requests.items()}

    for response in responses.values():
        assert_503(response, "database_unavailable")
    assert Feedback.objects.count() == 0
    # the log names PostgreSQL's reason, one line per request
    logged_reasons = [r.getMessage() for r in caplog.records if r.name == "redress.database"]
    assert len(logged_reasons) == len(requests)
    expected = "too many connections" if fault == "out of connections" else "refused"
    assert all(expected in reason for reason in logged_reasons), logged_reasons


def test_an_unknown_key_with_the_database_refusing_is_a_503_not_a_401(
    project, logged, role_at_its_limit
):
    client = api_client("rdr_" + "y" * 43)  # nothing cached: the lookup needs the database
    with connecting_as(USER=role_at_its_limit):
        lane = post(client, "/api/v1/feedback", {"prediction": logged, "kind": "report"})
        drf = client.get("/api/v1/categories")
    assert_503(lane, "database_unavailable")
    assert_503(drf, "database_unavailable")


def test_the_admin_shows_a_plain_503_page(admin_client, role_at_its_limit):
    admin_client.raise_request_exception = False
    assert admin_client.get("/admin/").status_code == 200

    with connecting_as(USER=role_at_its_limit):
        response = admin_client.get("/admin/")

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["Content-Type"].startswith("text/html")
    assert b"Service unavailable" in response.content


@pytest.fixture
def slow_inserts():
    """Triggers that make every insert of feedback and predictions take 2 s."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION test_slow() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(2); RETURN NEW; END $$;
            CREATE TRIGGER test_slow BEFORE INSERT ON feedback_feedback
                FOR EACH ROW EXECUTE FUNCTION test_slow();
            CREATE TRIGGER test_slow BEFORE INSERT ON feedback_prediction
                FOR EACH ROW EXECUTE FUNCTION test_slow();
            """
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TRIGGER test_slow ON feedback_feedback;"
            "DROP TRIGGER test_slow ON feedback_prediction;"
            "DROP FUNCTION test_slow();"
        )


@contextmanager
def session_setting(name: str, value: str):
    with connection.cursor() as cursor:
        cursor.execute(f"SET {name} = '{value}'")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"RESET {name}")


def test_a_statement_timeout_on_intake_is_a_503(project, make_key, logged, slow_inserts):
    ingest = api_client(make_key(project, ["ingest"]))
    data = api_client(make_key(project, ["data"]))
    requests = key_requests(ingest, data, logged)
    assert requests["categories"]().status_code == 200  # the key's lookup cached

    with session_setting("statement_timeout", "200ms"):
        responses = {name: requests[name]() for name in ("feedback", "batch", "predictions")}

    for response in responses.values():
        assert_503(response, "database_timeout")
    assert Feedback.objects.count() == 0
    assert not Prediction.objects.filter(external_id="refused-1").exists()


@pytest.mark.parametrize("timeout", ["statement_timeout", "lock_timeout"])
def test_a_read_waiting_on_a_lock_past_its_timeout_is_a_503(project, make_key, logged, timeout):
    data = api_client(make_key(project, ["data"]))
    assert data.get("/api/v1/feedback").status_code == 200
    settings_dict = connection.settings_dict
    holder = psycopg.connect(
        host=settings_dict["HOST"],
        port=settings_dict["PORT"] or 5432,
        user=settings_dict["USER"],
        dbname=settings_dict["NAME"],
    )
    try:
        # another session holds the table, as a long migration or a VACUUM FULL would
        holder.execute("LOCK TABLE feedback_feedback IN ACCESS EXCLUSIVE MODE")
        with session_setting(timeout, "200ms"):
            response = data.get("/api/v1/feedback")
    finally:
        holder.close()

    assert_503(response, "database_timeout")
    assert data.get("/api/v1/feedback").status_code == 200  # and the next one is served

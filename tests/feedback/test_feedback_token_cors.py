"""CORS for browser feedback tokens: the token's project's origins, token endpoints only."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from feedback.feedback_tokens import token_mint
from feedback.models import Membership
from feedback.services.feedback_tokens import project_origins_set, token_secret_rotate
from feedback.services.projects import membership_grant

from ..conftest import client_for, token_for

pytestmark = pytest.mark.django_db

APP = "https://app.example.com"
OTHER_APP = "https://other.example.org"
EVIL = "https://evil.example.net"
ACAO = "Access-Control-Allow-Origin"


@pytest.fixture
def token(project, other_project, prediction_factory):
    prediction_factory(project=project, external_id="answer-1")
    secret = token_secret_rotate(project=project)
    project_origins_set(project=project, origins=[APP])
    project_origins_set(project=other_project, origins=[OTHER_APP])
    raw, _ = token_mint(
        secret=secret, project=project.slug, prediction="answer-1", end_user="u-1",
        kinds=["rating", "report", "dispute"], issued_at=int(time.time()), ttl_seconds=600,
    )
    return raw


def call(method: str, path: str, origin: str | None, auth: str | None = None, **headers):
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
    if origin:
        extra["HTTP_ORIGIN"] = origin
    if auth:
        extra["HTTP_AUTHORIZATION"] = auth
    client = Client()
    if method == "POST":
        return client.post(path, b'{"kind":"report"}', content_type="application/json", **extra)
    return client.generic(method, path, **extra)


def preflight(path: str, origin: str, method: str = "POST"):
    return call(
        "OPTIONS", path, origin,
        **{"Access-Control-Request-Method": method,
           "Access-Control-Request-Headers": "authorization,content-type,idempotency-key"},
    )


@pytest.mark.parametrize("path", ["/api/v1/feedback", "/api/v1/categories", "/api/v1/disputes/7"])
def test_a_preflight_from_a_listed_origin_is_allowed_with_the_three_headers(token, path):
    response = preflight(path, APP)

    assert response.status_code == 200
    assert response[ACAO] == APP
    allowed = {h.strip() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert allowed == {"authorization", "content-type", "idempotency-key"}
    assert "POST" in response["Access-Control-Allow-Methods"]
    assert "Access-Control-Allow-Credentials" not in response


def test_a_preflight_from_an_unlisted_origin_gets_no_cors_headers(token):
    response = preflight("/api/v1/feedback", EVIL)

    assert ACAO not in response
    assert "Access-Control-Allow-Headers" not in response


@pytest.mark.parametrize("path", ["/api/v1/predictions", "/api/v1/feedback/batch",
                                  "/api/v1/feedback-tokens", "/api/v1/disputes/7/resolve"])
def test_a_preflight_to_another_endpoint_gets_no_cors_headers(token, path):
    assert ACAO not in preflight(path, APP)


def test_a_token_request_from_its_projects_origin_gets_cors_headers(token):
    response = call("POST", "/api/v1/feedback", APP, f"FeedbackToken {token}")

    assert response.status_code == 201
    assert response[ACAO] == APP
    assert "Retry-After" in response["Access-Control-Expose-Headers"]
    categories = call("GET", "/api/v1/categories", APP, f"FeedbackToken {token}")
    assert categories.status_code == 200 and categories[ACAO] == APP


def test_a_token_request_from_another_projects_or_unlisted_origin_gets_none(token):
    for origin in (OTHER_APP, EVIL):
        response = call("POST", "/api/v1/feedback", origin, f"FeedbackToken {token}")
        assert ACAO not in response, origin


def test_refusals_are_readable_by_the_page_of_the_tokens_project(token, project, settings):
    # The widget must read "token_expired" and 429s to show them.
    project.refresh_from_db()
    expired, _ = token_mint(
        secret=project.token_secret, project=project.slug, prediction="answer-1", end_user="u-1",
        kinds=["report"], issued_at=int(time.time()) - 700, ttl_seconds=600,
    )
    settings.REDRESS_FEEDBACK_TOKEN_RATE = "1/minute"
    if time.time() % 60 > 50:  # the two requests in one fixed window
        time.sleep(60.5 - time.time() % 60)

    gone = call("POST", "/api/v1/feedback", APP, f"FeedbackToken {expired}")
    call("POST", "/api/v1/feedback", APP, f"FeedbackToken {token}")
    limited = call("POST", "/api/v1/feedback", APP, f"FeedbackToken {token}")
    garbage = call("POST", "/api/v1/feedback", APP, "FeedbackToken garbage")

    assert gone.status_code == 401 and gone[ACAO] == APP
    assert limited.status_code == 429 and limited[ACAO] == APP
    assert garbage.status_code == 401 and ACAO not in garbage  # names no project


def test_key_and_person_requests_never_get_cors_headers(token, ingest_key, project):
    admin = membership_grant(project=project, username="boss", role=Membership.Role.ADMIN)
    person = token_for(admin.user)
    for method, path, auth in [
        ("POST", "/api/v1/feedback", f"Bearer {ingest_key}"),
        ("GET", "/api/v1/categories", f"Bearer {ingest_key}"),
        ("GET", f"/api/v1/categories?project={project.slug}", f"Token {person}"),
        ("GET", "/api/v1/categories", None),
    ]:
        response = call(method, path, APP, auth)
        assert ACAO not in response, (method, path, auth)
        assert "Vary" not in response or "origin" not in response["Vary"].lower()


def test_a_project_admin_sets_allowed_origins_through_the_api(project, other_project):
    admin = membership_grant(project=project, username="boss", role=Membership.Role.ADMIN)
    client = client_for(token=token_for(admin.user))
    url = f"/api/v1/projects/{project.slug}/allowed-origins"

    put = client.put(url, {"allowed_origins": ["https://A.example.com:8443"]}, format="json")
    bad = client.put(url, {"allowed_origins": ["https://a.example.com/app"]}, format="json")
    extra = client.put(url, {"allowed_origins": [], "x": 1}, format="json")

    assert put.status_code == 200
    assert put.json() == {"allowed_origins": ["https://a.example.com:8443"]}
    assert client.get(url).json() == put.json()
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["field"] == "allowed_origins[0]"
    assert extra.status_code == 400
    other = f"/api/v1/projects/{other_project.slug}/allowed-origins"
    assert client.get(other).status_code == 404


def test_a_new_origin_takes_effect_at_once(token, project, django_capture_on_commit_callbacks):
    assert ACAO not in preflight("/api/v1/feedback", EVIL)  # cached "not listed"

    with django_capture_on_commit_callbacks(execute=True):
        project_origins_set(project=project, origins=[APP, EVIL])

    assert preflight("/api/v1/feedback", EVIL)[ACAO] == EVIL
    assert call("POST", "/api/v1/feedback", EVIL, f"FeedbackToken {token}")[ACAO] == EVIL

"""The lane (feedback/api/middleware.py): API-key POSTs to the intake views skip the browser
middleware; everything else goes down the whole chain as before. A middleware inserted below
the lane fails the system check.

A recording middleware placed at the end of the chain tells which requests went past the lane.
"""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.http import HttpResponse
from django.test import override_settings
from django.urls import get_resolver, include, path

from feedback.api import views
from feedback.api.intake import KeyIntake, feedback_post
from feedback.api.middleware import check_nothing_below_the_lane, key_request_routes
from feedback.models import Feedback
from feedback.services.keys import apikey_revoke
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

SEEN: list[str] = []


class Recorder:
    """Last in the chain: notes each request that reached it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        SEEN.append(f"{request.method} {request.path_info}")
        return self.get_response(request)


@pytest.fixture
def recorded():
    SEEN.clear()
    with override_settings(MIDDLEWARE=[*settings.MIDDLEWARE, f"{__name__}.Recorder"]):
        yield SEEN


@pytest.fixture
def logged(project, prediction_factory):
    prediction_factory(project=project, external_id="chat-1")
    return "chat-1"


def post(client, url, body, **extra):
    return client.post(url, data=json.dumps(body), content_type="application/json", **extra)


def test_the_lane_serves_the_three_intake_posts():
    assert set(key_request_routes(get_resolver())) == {
        "/api/v1/predictions",
        "/api/v1/feedback",
        "/api/v1/feedback/batch",
    }


def test_the_project_settings_pass_the_check():
    assert check_nothing_below_the_lane() == []


def test_a_middleware_below_the_lane_fails_the_check(settings):
    lane = settings.MIDDLEWARE.index("feedback.api.middleware.KeyRequestFastLane")
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE[: lane + 2],
        "example.AuditMiddleware",
        *settings.MIDDLEWARE[lane + 2 :],
    ]

    errors = check_nothing_below_the_lane()

    assert [e.id for e in errors] == ["redress.E001"]
    assert errors[0].msg.startswith("example.AuditMiddleware is below")


def test_a_key_post_is_answered_before_the_browser_middleware(recorded, ingest_key, logged):
    client = client_for(ingest_key)

    single = post(client, "/api/v1/feedback", {"prediction": logged, "kind": "report"})
    batch = post(
        client, "/api/v1/feedback/batch", {"items": [{"prediction": logged, "kind": "report"}]}
    )

    assert single.status_code == 201
    assert batch.status_code == 200 and batch.json()["results"][0]["status"] == 201
    assert Feedback.objects.count() == 2
    assert recorded == []
    # The middleware before the lane still applies: security and clickjacking headers.
    assert single["X-Content-Type-Options"] == "nosniff"
    assert single["X-Frame-Options"] == "DENY"
    assert "Vary" not in single and "Set-Cookie" not in single.cookies


def test_every_key_post_is_answered_by_the_lane_and_the_rest_goes_down_the_chain(
    recorded, make_key, project, data_key, logged, member
):
    body = {"prediction": logged, "kind": "report"}
    revoked_raw = make_key(project, ["ingest"])
    apikey_revoke(key=project.api_keys.get(scopes=["ingest"]))

    unknown = post(client_for("rdr_not-a-key"), "/api/v1/feedback", body)
    revoked = post(client_for(revoked_raw), "/api/v1/feedback", body)
    wrong_scope = post(client_for(data_key), "/api/v1/feedback", body)
    person = post(client_for(token=member.token), "/api/v1/feedback", body)
    listing = client_for(data_key).get("/api/v1/feedback")

    assert (unknown.status_code, revoked.status_code) == (401, 401)
    assert unknown.json()["errors"][0]["code"] == "authentication_failed"
    assert unknown["WWW-Authenticate"] == 'Bearer realm="api"'
    assert wrong_scope.status_code == 403
    assert wrong_scope.json()["errors"][0]["code"] == "permission_denied"
    assert person.status_code == 403
    assert listing.status_code == 200
    assert recorded == ["POST /api/v1/feedback", "GET /api/v1/feedback"]
    assert Feedback.objects.count() == 0


def test_a_form_body_is_415(recorded, ingest_key):
    response = client_for(ingest_key).post("/api/v1/feedback", data={"kind": "report"})

    assert response.status_code == 415
    assert recorded == []


# --- which routes the lane takes: a URLconf of this module -----------------------------------


def _plain(request):
    return HttpResponse("plain")


_lane_view = KeyIntake(views.FeedbackView.as_view(), feedback_post)
_inner = [
    path("shadowed", _plain),
    path("shadowed", _lane_view),  # never reached: the route above answers first
    path("open", _lane_view),
    path("by-id/<int:pk>", _lane_view),  # not a fixed path
]
urlpatterns = [path("x/", include(_inner))]


@override_settings(ROOT_URLCONF=__name__)
def test_only_fixed_routes_that_reach_the_view_are_taken():
    assert set(key_request_routes(get_resolver())) == {"/x/open"}


def test_the_routes_follow_the_urlconf(ingest_key, logged):
    body = {"prediction": logged, "kind": "report"}
    with override_settings(ROOT_URLCONF=__name__):
        shadowed = post(client_for(ingest_key), "/x/shadowed", body)
        moved = post(client_for(ingest_key), "/x/open", body)
    back = post(client_for(ingest_key), "/api/v1/feedback", body)

    assert shadowed.status_code == 200 and shadowed.content == b"plain"
    assert moved.status_code == 201 and back.status_code == 201
    assert Feedback.objects.count() == 2

"""Browser feedback tokens: minting, every refusal, abuse limits and the intake they share."""

from __future__ import annotations

import base64
import json
import time

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from feedback.feedback_tokens import b64url, signature, token_mint
from feedback.models import Feedback
from feedback.pii import pseudonymise
from feedback.services.feedback_tokens import project_origins_set, token_secret_rotate

pytestmark = pytest.mark.django_db

ALL = ("rating", "report", "dispute")


@pytest.fixture
def secret(project):
    return token_secret_rotate(project=project)


@pytest.fixture
def prediction(project, prediction_factory):
    return prediction_factory(project=project, external_id="answer-1")


@pytest.fixture
def mint(project, secret, prediction):
    def _mint(*, pred="answer-1", sub="user-42", kinds=ALL, ttl=600, iat=None, key=None,
              slug=None):
        token, _ = token_mint(
            secret=key or secret,
            project=slug or project.slug,
            prediction=pred,
            end_user=sub,
            kinds=kinds,
            issued_at=int(time.time()) if iat is None else iat,
            ttl_seconds=ttl,
        )
        return token

    return _mint


def browser(token: str, **headers) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"FeedbackToken {token}", **headers)
    return client


def post(client: APIClient, body: dict, **extra):
    return client.post("/api/v1/feedback", body, format="json", **extra)


def fresh_window() -> None:
    """Start a rate-limit test well inside a minute (counters are fixed windows)."""
    if time.time() % 60 > 50:
        time.sleep(60.5 - time.time() % 60)


def error(response) -> dict:
    (only,) = response.json()["errors"]
    return only


# --- minting through the API -----------------------------------------------------------------


def test_an_ingest_key_mints_a_token_the_browser_can_read(ingest_key, prediction, project):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ingest_key}")

    response = client.post(
        "/api/v1/feedback-tokens",
        {"prediction": "answer-1", "end_user": "user-42", "kinds": ["report", "rating"],
         "ttl_seconds": 120},
        format="json",
    )

    assert response.status_code == 201, response.content
    token = response.json()["token"]
    payload, sig = token.split(".")
    assert "=" not in token
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["v"] == 1 and claims["prj"] == project.slug
    assert claims["pred"] == "answer-1" and claims["sub"] == "user-42"
    assert claims["kinds"] == ["rating", "report"]  # in canonical order
    assert claims["exp"] - claims["iat"] == 120
    assert response.json()["expires_at"].endswith("Z")
    # The project got a secret on first use, and the token is signed with it.
    project.refresh_from_db()
    assert project.token_secret.startswith("rfts_")
    assert sig == signature(project.token_secret, payload)
    assert post(browser(token), {"kind": "report", "comment": "wrong"}).status_code == 201


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"prediction": "answer-1", "end_user": "u", "scope": "all"}, "scope", "unknown_field"),
        ({"prediction": "answer-1", "end_user": "u", "ttl_seconds": 59}, "ttl_seconds",
         "out_of_range"),
        ({"prediction": "answer-1", "end_user": "u", "ttl_seconds": 7 * 86400 + 1},
         "ttl_seconds", "out_of_range"),
        ({"prediction": "answer-1", "end_user": "u", "kinds": ["vote"]}, "kinds",
         "invalid_choice"),
        ({"prediction": "answer-1", "end_user": "u", "kinds": []}, "kinds", "invalid_choice"),
        ({"prediction": "answer-1"}, "end_user", "required"),
        ({"end_user": "u"}, "prediction", "required"),
    ],
)
def test_minting_refuses_bad_input(ingest_key, prediction, body, field, code):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ingest_key}")

    response = client.post("/api/v1/feedback-tokens", body, format="json")

    assert response.status_code == 400
    assert (error(response)["field"], error(response)["code"]) == (field, code)


def test_minting_for_an_unknown_or_another_projects_prediction_is_404(
    ingest_key, other_project, prediction_factory
):
    prediction_factory(project=other_project, external_id="theirs")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ingest_key}")

    for name in ("nope", "theirs"):
        response = client.post(
            "/api/v1/feedback-tokens", {"prediction": name, "end_user": "u"}, format="json"
        )
        assert response.status_code == 404
        assert error(response)["code"] == "unknown_prediction"


def test_minting_takes_the_ingest_scope(data_key, prediction):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {data_key}")

    response = client.post(
        "/api/v1/feedback-tokens", {"prediction": "answer-1", "end_user": "u"}, format="json"
    )

    assert response.status_code == 403


# --- what a token may do ---------------------------------------------------------------------


def test_a_token_posts_feedback_as_its_end_user_with_pii_scrubbed(mint, project, secret):
    response = post(
        browser(mint()),
        {"kind": "report", "categories": ["incorrect", "incomplete"],
         "comment": "Wrong, write to jane.doe@example.com"},
    )

    assert response.status_code == 201, response.content
    row = Feedback.objects.get()
    assert row.origin == "token"
    assert row.prediction.external_id == "answer-1"
    assert row.end_user == pseudonymise(project.secret, "user-42")
    assert "jane.doe@example.com" not in row.comment
    assert row.categories == ["incomplete", "incorrect"]
    body = response.json()
    assert body["prediction"] == "answer-1" and "segment" not in body


def test_the_body_may_repeat_the_tokens_prediction_and_end_user(mint):
    response = post(
        browser(mint()),
        {"kind": "rating", "rating": 1, "prediction": "answer-1", "end_user": "user-42"},
    )

    assert response.status_code == 201


def test_validation_is_the_keys(mint):
    response = post(browser(mint()), {"kind": "report", "categories": ["nope"], "mood": 1})

    assert response.status_code == 400
    codes = {(e["field"], e["code"]) for e in response.json()["errors"]}
    assert ("mood", "unknown_field") in codes
    assert ("categories[0]", "unknown_category") in codes


def test_idempotency_is_the_keys(mint):
    client = browser(mint())
    body = {"kind": "report", "comment": "late"}

    first = post(client, body, HTTP_IDEMPOTENCY_KEY="k-1")
    again = post(client, body, HTTP_IDEMPOTENCY_KEY="k-1")
    other = post(client, {**body, "comment": "other"}, HTTP_IDEMPOTENCY_KEY="k-1")

    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert again.json()["id"] == first.json()["id"]
    assert Feedback.objects.count() == 1


def test_a_token_reads_its_projects_categories(mint, other_project):
    response = browser(mint()).get("/api/v1/categories", {"project": other_project.slug})

    assert response.status_code == 200
    assert [c["slug"] for c in response.json()][:2] == ["incorrect", "incomplete"]


def test_a_token_reads_the_dispute_it_filed_and_no_other(
    mint, ingest_key, project, prediction_factory
):
    filed = post(browser(mint()), {"kind": "dispute", "comment": "I was right"})
    assert filed.status_code == 201
    dispute_id = filed.json()["id"]
    prediction_factory(project=project, external_id="answer-2")
    keyed = APIClient()
    keyed.credentials(HTTP_AUTHORIZATION=f"Bearer {ingest_key}")
    by_key = keyed.post(
        "/api/v1/feedback", {"prediction": "answer-1", "kind": "dispute", "end_user": "user-42"},
        format="json",
    ).json()["id"]

    own = browser(mint()).get(f"/api/v1/disputes/{dispute_id}")  # a later token, same user
    assert own.status_code == 200 and own.json()["status"] == "open"
    assert browser(mint(sub="user-7")).get(f"/api/v1/disputes/{dispute_id}").status_code == 404
    assert browser(mint(pred="answer-2")).get(f"/api/v1/disputes/{dispute_id}").status_code == 404
    assert browser(mint()).get(f"/api/v1/disputes/{by_key}").status_code == 404


# --- refusals --------------------------------------------------------------------------------


def test_an_expired_token_is_401_token_expired(mint):
    token = mint(iat=int(time.time()) - 700, ttl=600)

    response = post(browser(token), {"kind": "report"})

    assert response.status_code == 401
    assert error(response)["code"] == "token_expired"
    assert response["WWW-Authenticate"] == 'FeedbackToken error="token_expired"'
    assert browser(token).get("/api/v1/categories").status_code == 401
    assert Feedback.objects.count() == 0


def test_a_token_signed_with_another_secret_is_401_invalid_token(mint):
    token = mint(key="rfts_" + "x" * 43)

    response = post(browser(token), {"kind": "report"})

    assert response.status_code == 401
    assert error(response)["code"] == "invalid_token"


def _tampered(token: str, **changes) -> str:
    payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return b64url(json.dumps(claims, separators=(",", ":")).encode()) + "." + sig


@pytest.mark.parametrize(
    "change",
    [
        {"pred": "answer-2"},
        {"sub": "someone-else"},
        {"kinds": ["rating", "report", "dispute"]},
        {"exp": 4_102_444_800},
    ],
)
def test_a_tampered_payload_is_401_invalid_token(mint, change):
    token = _tampered(mint(kinds=("rating",)), **change)

    response = post(browser(token), {"kind": "rating", "rating": 1})

    assert response.status_code == 401
    assert error(response)["code"] == "invalid_token"
    assert Feedback.objects.count() == 0


@pytest.mark.parametrize(
    "garble",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # the signature's last character
        lambda t: t.split(".")[0],  # no signature
        lambda t: t + ".x",
        lambda t: "not a token",
        lambda t: "",
        lambda t: b64url(b"[1,2]") + "." + t.split(".")[1],
    ],
)
def test_a_malformed_token_is_401_invalid_token(mint, garble):
    response = post(browser(garble(mint())), {"kind": "report"})

    assert response.status_code == 401
    assert error(response)["code"] == "invalid_token"


def test_a_token_naming_another_project_is_refused(mint, other_project, project):
    # Signed with project's secret but naming the other project: the other's secret decides.
    token_secret_rotate(project=other_project)
    token = mint(slug=other_project.slug)

    assert post(browser(token), {"kind": "report"}).status_code == 401
    assert post(browser(mint(slug="no-such-project")), {"kind": "report"}).status_code == 401


def test_a_rotated_secret_refuses_old_tokens_at_once(
    mint, project, django_capture_on_commit_callbacks
):
    old = mint()
    assert post(browser(old), {"kind": "report"}).status_code == 201  # cached from here on

    with django_capture_on_commit_callbacks(execute=True):
        new_secret = token_secret_rotate(project=project)

    response = post(browser(old), {"kind": "report"})
    assert response.status_code == 401
    assert error(response)["code"] == "invalid_token"
    assert post(browser(mint(key=new_secret)), {"kind": "report"}).status_code == 201


def test_a_rotation_with_grace_accepts_old_tokens_until_it_ends(
    mint, project, django_capture_on_commit_callbacks
):
    old = mint()
    assert post(browser(old), {"kind": "report"}).status_code == 201  # cached from here on

    with django_capture_on_commit_callbacks(execute=True):
        token_secret_rotate(project=project, grace_seconds=60)
    assert post(browser(old), {"kind": "report"}).status_code == 201

    project.refresh_from_db()
    from datetime import timedelta

    from django.utils import timezone

    from feedback.services.keys import project_cache_invalidate

    type(project).objects.filter(pk=project.pk).update(
        token_secret_previous_until=timezone.now() - timedelta(seconds=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        project_cache_invalidate(project_id=project.pk)
    assert post(browser(old), {"kind": "report"}).status_code == 401


def test_another_prediction_in_the_body_is_403_token_scope(mint, prediction_factory, project):
    prediction_factory(project=project, external_id="answer-2")

    for body in (
        {"kind": "report", "prediction": "answer-2"},
        {"kind": "report", "prediction": {"external_id": "answer-1"}},  # no inline logging
    ):
        response = post(browser(mint()), body)
        assert response.status_code == 403
        assert (error(response)["field"], error(response)["code"]) == ("prediction", "token_scope")
    assert Feedback.objects.count() == 0


def test_a_kind_the_token_does_not_allow_is_403_token_scope(mint):
    response = post(browser(mint(kinds=("rating",))), {"kind": "dispute"})

    assert response.status_code == 403
    assert (error(response)["field"], error(response)["code"]) == ("kind", "token_scope")


def test_the_body_cannot_override_the_tokens_end_user(mint):
    response = post(browser(mint()), {"kind": "report", "end_user": "admin"})

    assert response.status_code == 403
    assert (error(response)["field"], error(response)["code"]) == ("end_user", "token_scope")
    assert Feedback.objects.count() == 0


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/v1/feedback", None),
        ("post", "/api/v1/feedback/batch", {"items": [{"kind": "report"}]}),
        ("post", "/api/v1/predictions", {"external_id": "x"}),
        ("post", "/api/v1/feedback-tokens", {"prediction": "answer-1", "end_user": "u"}),
        ("post", "/api/v1/disputes/1/resolve", {"status": "upheld", "resolution_note": "x"}),
        ("get", "/api/v1/queues", None),
        ("get", "/api/v1/exports/1", None),
        ("get", "/api/v1/webhooks", None),
    ],
)
def test_every_other_endpoint_is_403_token_scope(mint, method, path, body):
    client = browser(mint())

    response = getattr(client, method)(path, body, format="json") if body else client.get(path)

    assert response.status_code == 403, (path, response.content)
    assert error(response)["code"] == "token_scope"


# --- abuse -----------------------------------------------------------------------------------


def test_a_token_is_rate_limited(mint, settings):
    settings.REDRESS_FEEDBACK_TOKEN_RATE = "2/minute"
    fresh_window()
    client = browser(mint())

    statuses = [post(client, {"kind": "report"}).status_code for _ in range(3)]
    limited = post(client, {"kind": "report"})

    assert statuses == [201, 201, 429]
    assert limited.status_code == 429
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert error(limited)["code"] == "throttled"
    assert client.get("/api/v1/categories").status_code == 429  # the same counter
    assert post(browser(mint(sub="user-7")), {"kind": "report"}).status_code == 201


def test_an_end_user_is_rate_limited_across_tokens(mint, settings):
    settings.REDRESS_FEEDBACK_END_USER_RATE = "3/minute"
    fresh_window()
    statuses = [
        post(browser(mint(ttl=600 + n)), {"kind": "report"}).status_code for n in range(4)
    ]

    assert statuses == [201, 201, 201, 429]


def test_a_user_changing_their_mind_updates_their_rating(mint):
    client = browser(mint())

    down = post(client, {"kind": "rating", "rating": -1, "categories": ["incorrect"]})
    up = post(browser(mint()), {"kind": "rating", "rating": 1})  # a later page, a new token

    assert (down.status_code, up.status_code) == (201, 200)
    assert up.json()["id"] == down.json()["id"]
    row = Feedback.objects.get()
    assert (row.rating, row.categories) == (1, [])
    assert row.created_at == Feedback.objects.get().created_at
    assert row.revised_at is not None and row.revised_at >= row.created_at  # rollups recount it


def test_ratings_of_other_end_users_and_keys_stack_as_before(mint, ingest_key):
    post(browser(mint()), {"kind": "rating", "rating": -1})
    post(browser(mint(sub="user-7")), {"kind": "rating", "rating": -1})
    keyed = APIClient()
    keyed.credentials(HTTP_AUTHORIZATION=f"Bearer {ingest_key}")
    for _ in range(2):
        keyed.post("/api/v1/feedback", {"prediction": "answer-1", "kind": "rating", "rating": 1,
                                        "end_user": "user-42"}, format="json")

    assert Feedback.objects.count() == 4


def test_a_second_dispute_is_409_naming_the_first(mint):
    first = post(browser(mint()), {"kind": "dispute", "comment": "wrong"})

    second = post(browser(mint()), {"kind": "dispute", "comment": "still wrong"})

    assert first.status_code == 201
    assert second.status_code == 409
    assert error(second)["code"] == "dispute_exists"
    assert f"dispute {first.json()['id']}" in error(second)["detail"]
    assert Feedback.objects.filter(kind="dispute").count() == 1


# --- commands and admin ----------------------------------------------------------------------


def test_the_command_rotates_and_prints_the_secret_once(
    project, capsys, mint, django_capture_on_commit_callbacks
):
    old = mint()
    assert post(browser(old), {"kind": "report"}).status_code == 201

    with django_capture_on_commit_callbacks(execute=True):
        call_command("rotate_token_secret", project.slug)

    printed = capsys.readouterr().out.strip().splitlines()[-1]
    project.refresh_from_db()
    assert printed == project.token_secret and printed.startswith("rfts_")
    assert post(browser(old), {"kind": "report"}).status_code == 401
    assert post(browser(mint(key=printed)), {"kind": "report"}).status_code == 201


def test_the_admin_action_rotates_and_shows_the_secret(
    project, admin_client, mint, django_capture_on_commit_callbacks
):
    old = mint()
    assert post(browser(old), {"kind": "report"}).status_code == 201

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
        "/admin/feedback/project/",
            {"action": "rotate_token_secret", "_selected_action": [project.pk]},
            follow=True,
        )

    project.refresh_from_db()
    assert project.token_secret in response.content.decode()
    assert post(browser(old), {"kind": "report"}).status_code == 401


def test_the_admin_edits_allowed_origins_one_per_line(project, admin_client):
    url = f"/admin/feedback/project/{project.pk}/change/"
    page = admin_client.get(url)
    assert page.status_code == 200
    form = {
        "name": project.name,
        "description": "",
        "scrub_pii": "on",
        "allowed_origins": "https://App.example.com\nhttp://localhost:5173\n",
        "categories-TOTAL_FORMS": "0", "categories-INITIAL_FORMS": "0",
        "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
    }
    bad = admin_client.post(url, {**form, "allowed_origins": "https://x.example.com/path"})
    assert bad.status_code == 200 and "is not an origin" in bad.content.decode()

    admin_client.post(url, form)

    project.refresh_from_db()
    assert project.allowed_origins == ["https://app.example.com", "http://localhost:5173"]


def test_origins_are_checked(project):
    from feedback.errors import InvalidInput

    for bad in (["https://*.example.com"], ["ftp://x.org"], ["https://x.org/"], "https://x.org"):
        with pytest.raises(InvalidInput):
            project_origins_set(project=project, origins=bad)


# --- OpenAPI ---------------------------------------------------------------------------------


def test_the_schema_documents_minting_the_scheme_and_where_tokens_apply():
    document = APIClient().get("/api/schema/", {"format": "json"}).json()

    scheme = document["components"]["securitySchemes"]["FeedbackToken"]
    assert scheme["type"] == "apiKey" and scheme["name"] == "Authorization"
    mint_op = document["paths"]["/api/v1/feedback-tokens"]["post"]
    assert mint_op["security"] == [{"ApiKey": []}]
    assert {"201", "400", "401", "403", "404", "429"} <= set(mint_op["responses"])
    body = document["components"]["schemas"]["FeedbackTokenInRequest"]
    assert body["additionalProperties"] is False
    assert set(body["required"]) == {"prediction", "end_user"}
    assert body["properties"]["ttl_seconds"]["minimum"] == 60
    assert mint_op["requestBody"]["required"] is True
    created = document["components"]["schemas"]["FeedbackTokenOut"]
    assert set(created["properties"]) == {"token", "expires_at"}
    with_token = {
        operation["operationId"]
        for item in document["paths"].values()
        for operation in item.values()
        if {"FeedbackToken": []} in operation.get("security", [])
    }
    assert with_token == {"feedback_submit", "categories_list", "disputes_retrieve"}
    submit = document["paths"]["/api/v1/feedback"]["post"]
    assert "token_scope" in submit["description"] and "dispute_exists" in submit["description"]
    assert "token_expired" in submit["responses"]["401"]["description"]


@pytest.mark.parametrize("prj", [123, None, "", "a b", "x" * 65, ["p"]])
def test_a_payload_naming_no_slug_is_invalid_token(prj, secret):
    payload = b64url(json.dumps({"v": 1, "prj": prj, "pred": "a", "sub": "u", "kinds": ["report"],
                                 "exp": int(time.time()) + 60, "iat": int(time.time())}).encode())
    token = f"{payload}.{signature(secret, payload)}"

    response = post(browser(token, HTTP_ORIGIN="https://app.example.com"), {"kind": "report"})

    assert response.status_code == 401
    assert error(response)["code"] == "invalid_token"


def test_on_redis_a_process_counts_a_tenth_of_the_rate_itself_then_redis(mint, settings):
    if not settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        pytest.skip("the allowance exists on the Redis cache only (set CELERY_BROKER_URL)")
    from django.core.cache import cache

    from feedback.api import throttling

    settings.REDRESS_FEEDBACK_TOKEN_RATE = "20/minute"
    fresh_window()
    token = mint()
    digest = __import__("hashlib").sha256(token.encode()).hexdigest()[:40]
    counter = f"throttle:ftok:{digest}:{int(time.time() // 60)}"
    client = browser(token)

    first_two = [post(client, {"kind": "report"}).status_code for _ in range(2)]
    assert cache.get(counter) is None  # within the process's allowance: no round trip
    third = post(client, {"kind": "report"}).status_code
    assert int(cache.get(counter)) == 3  # the allowance is added with the first one past it
    rest = [post(client, {"kind": "report"}).status_code for _ in range(18)]

    assert first_two == [201, 201] and third == 201
    assert rest == [201] * 17 + [429]  # exact within one process: the 21st is refused
    throttling._allowance.clear()

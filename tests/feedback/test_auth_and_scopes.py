"""Who may call what: 401 without credentials, 403 without the scope, 404 across projects."""

from __future__ import annotations

import hashlib
import json

import pytest

from feedback.models import ApiKey, Feedback
from feedback.services.keys import apikey_create, apikey_revoke
from tests.conftest import client_for, token_for

pytestmark = pytest.mark.django_db


def post(client, path, body, **headers):
    return client.post(path, data=json.dumps(body), content_type="application/json", **headers)


@pytest.fixture
def dispute(project, prediction_factory):
    from feedback.selectors import project_context
    from feedback.services.intake import feedback_submit

    prediction_factory(project=project, external_id="p-1")
    (result,) = feedback_submit(
        context=project_context(project=project),
        items=[{"prediction": "p-1", "kind": "dispute"}],
    )
    return result.obj


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/v1/predictions"),
        ("post", "/api/v1/feedback"),
        ("post", "/api/v1/feedback/batch"),
        ("get", "/api/v1/feedback"),
        ("get", "/api/v1/categories"),
        ("get", "/api/v1/disputes/1"),
    ],
)
@pytest.mark.parametrize("header", [None, "Bearer rdr_not-a-key", "Bearer ", "Token nope"])
def test_missing_or_invalid_credentials_are_401(method, path, header):
    client = client_for()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)

    if method == "post":
        response = client.post(path, data="{}", content_type="application/json")
    else:
        response = client.get(path)

    assert response.status_code == 401
    assert response.json()["errors"][0]["field"] is None
    assert response.json()["errors"][0]["code"] in {"not_authenticated", "authentication_failed"}


def test_keys_are_stored_hashed_with_a_clear_prefix(project):
    key, raw = apikey_create(project=project, scopes=["ingest"])

    assert raw.startswith("rdr_") and len(raw) > 40
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert key.prefix == raw[:12]
    assert raw not in json.dumps(list(ApiKey.objects.values()), default=str)


def test_unknown_scope_is_refused(project):
    from feedback.errors import InvalidInput

    with pytest.raises(InvalidInput) as refused:
        apikey_create(project=project, scopes=["admin"])
    assert refused.value.errors[0].field == "scopes"


def test_a_revoked_key_is_refused_at_once(project, ingest_key, django_capture_on_commit_callbacks):
    client = client_for(ingest_key)
    assert client.get("/api/v1/categories").status_code == 200  # now cached

    with django_capture_on_commit_callbacks(execute=True):
        apikey_revoke(key=ApiKey.objects.get(project=project))

    assert client.get("/api/v1/categories").status_code == 401


def test_last_used_is_recorded(project, ingest_key):
    assert ApiKey.objects.get().last_used_at is None

    client_for(ingest_key).get("/api/v1/categories")

    assert ApiKey.objects.get().last_used_at is not None


def test_a_data_key_cannot_ingest(data_client):
    response = post(data_client, "/api/v1/feedback", {"prediction": "x", "kind": "report"})

    assert response.status_code == 403
    assert response.json()["errors"][0]["code"] == "permission_denied"


def test_an_ingest_key_cannot_read_feedback(ingest_client):
    assert ingest_client.get("/api/v1/feedback").status_code == 403


def test_a_person_cannot_use_intake_endpoints(member):
    client = client_for(token=member.token)

    response = post(client, "/api/v1/feedback", {"prediction": "x", "kind": "report"})

    assert response.status_code == 403


def test_a_key_never_sees_another_projects_dispute(dispute, other_project, make_key):
    other = client_for(make_key(other_project, ["ingest", "data"]))

    response = other.get(f"/api/v1/disputes/{dispute.pk}")

    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"


def test_a_key_never_reads_another_projects_feedback(dispute, other_project, make_key, data_client):
    other = client_for(make_key(other_project, ["data"]))

    assert other.get("/api/v1/feedback").json()["results"] == []
    assert [f["id"] for f in data_client.get("/api/v1/feedback").json()["results"]] == [dispute.pk]


def test_a_key_cannot_reference_another_projects_prediction(
    project, other_project, prediction_factory, make_key
):
    prediction_factory(project=project, external_id="mine")
    other = client_for(make_key(other_project, ["ingest"]))

    response = post(other, "/api/v1/feedback", {"prediction": "mine", "kind": "report"})

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == "unknown_prediction"
    assert Feedback.objects.count() == 0


def test_a_member_reads_only_their_projects(dispute, member, other_project, user_factory):
    outsider = user_factory()
    outsider_token = token_for(outsider)

    mine = client_for(token=member.token).get("/api/v1/feedback").json()["results"]
    theirs = client_for(token=outsider_token).get("/api/v1/feedback").json()["results"]

    assert [f["id"] for f in mine] == [dispute.pk]
    assert theirs == []
    assert client_for(token=member.token).get(f"/api/v1/disputes/{dispute.pk}").status_code == 200
    assert client_for(token=outsider_token).get(f"/api/v1/disputes/{dispute.pk}").status_code == 404


def test_a_person_names_the_project_for_categories(member, project, other_project):
    client = client_for(token=member.token)

    assert client.get("/api/v1/categories").status_code == 400
    assert client.get(f"/api/v1/categories?project={other_project.slug}").status_code == 404
    response = client.get(f"/api/v1/categories?project={project.slug}")
    assert response.status_code == 200
    assert [c["slug"] for c in response.json()] == [
        "incorrect",
        "incomplete",
        "unsafe",
        "biased",
        "off_topic",
        "too_slow",
        "other",
    ]


def test_categories_are_the_projects_active_taxonomy(ingest_client, project):
    project.categories.filter(slug="too_slow").update(active=False)
    project.categories.create(slug="hallucination", name="Hallucination", position=99)

    slugs = [c["slug"] for c in ingest_client.get("/api/v1/categories").json()]

    assert "too_slow" not in slugs
    assert slugs[-1] == "hallucination"

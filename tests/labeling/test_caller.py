"""The Caller (feedback/api/caller.py): one answer to "who calls, which projects, 404 or 403",
the reviewer rule of blind review, strict query parameters and strict input serializers, and
an OpenAPI schema that documents every status the labeling and feedback operations return."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient, APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from feedback.api.caller import DATA, GOLD, MANAGE, KeyCaller, PersonCaller, caller_of
from feedback.errors import InvalidInput, NotFound
from feedback.models import Membership
from feedback.selectors import api_key_context, project_context
from feedback.services.intake import feedback_submit, predictions_log
from feedback.services.keys import apikey_create
from feedback.services.projects import membership_grant
from labeling.models import Queue, SamplingRun
from tests.conftest import client_for

pytestmark = pytest.mark.django_db
Role = Membership.Role


def person_client(project, name: str, role: str) -> tuple[APIClient, object]:
    user = membership_grant(project=project, username=name, role=role).user
    client = APIClient()
    client.force_authenticate(user)
    return client, user


def seed_feedback(project) -> list[int]:
    context = project_context(project=project)
    predictions_log(
        context=context,
        items=[{"external_id": "a", "model_version": "v1", "segment": {"age_band": "65+"}}],
    )
    results = feedback_submit(
        context=context,
        items=[
            {"prediction": "a", "kind": "rating", "rating": -1},
            {"prediction": "a", "kind": "dispute"},
        ],
    )
    return sorted(r.obj.pk for r in results)


# --- blind review: a reviewer does not read feedback (segments) -----------------------------


def test_a_reviewer_gets_403_on_the_feedback_listing(project, queue):
    seed_feedback(project)
    reviewer, user = person_client(project, "rita", Role.REVIEWER)
    queue.reviewers.add(user)

    for path in ("/api/v1/feedback", "/api/v1/feedback?segment.age_band=65%2B"):
        response = reviewer.get(path)
        assert response.status_code == 403, response.content
        assert response.json()["errors"][0]["code"] == "permission_denied"


def test_a_reviewer_of_a_queue_showing_segments_reads_that_projects_feedback(project, queue):
    stored = seed_feedback(project)
    reviewer, user = person_client(project, "rita", Role.REVIEWER)
    queue.reviewers.add(user)
    Queue.objects.filter(pk=queue.pk).update(show_segments=True)

    response = reviewer.get("/api/v1/feedback?segment.age_band=65%2B")

    assert response.status_code == 200, response.content
    assert sorted(item["id"] for item in response.json()["results"]) == stored


def test_an_admin_here_and_reviewer_there_reads_only_here(project, other_project):
    ours = seed_feedback(project)
    seed_feedback(other_project)
    client, _ = person_client(project, "ada", Role.ADMIN)
    membership_grant(project=other_project, username="ada", role=Role.REVIEWER)

    listed = client.get("/api/v1/feedback")
    named = client.get(f"/api/v1/feedback?project={other_project.slug}")

    assert sorted(item["id"] for item in listed.json()["results"]) == ours
    assert named.status_code == 403


def test_a_data_scientist_and_a_data_key_still_read_feedback(project, data_client):
    stored = seed_feedback(project)
    scientist, _ = person_client(project, "sam", Role.DATA_SCIENTIST)
    for client in (scientist, data_client):
        response = client.get("/api/v1/feedback")
        assert sorted(item["id"] for item in response.json()["results"]) == stored


# --- the Caller's answers -------------------------------------------------------------------


def caller_for(*, user=None, key: str | None = None):
    request = APIRequestFactory().get("/")
    if key is not None:
        request.META["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    if user is not None:
        force_authenticate(request, user=user)
    view = APIView()
    drf_request = view.initialize_request(request)
    drf_request.user  # noqa: B018  authenticates
    return caller_of(drf_request)


def test_a_key_caller_acts_in_its_own_project_only(project, other_project):
    _, raw = apikey_create(project=project, scopes=["ingest"], name="k")
    caller = caller_for(key=raw)

    assert isinstance(caller, KeyCaller)
    assert caller.key == api_key_context(raw)  # intake keeps taking the KeyContext
    assert caller.project_ids(DATA) == []  # no 'data' scope
    with pytest.raises(NotFound):
        caller.project(DATA, slug=other_project.slug)
    with pytest.raises(InvalidInput) as refused:
        caller.project(DATA, slug=12)
    assert refused.value.errors[0].code == "invalid_type"
    assert caller.user is None and caller.key_id == caller.key.key_id


def test_a_person_caller_answers_by_role_404_or_403(project, other_project):
    _, user = person_client(project, "rita", Role.REVIEWER)
    caller = caller_for(user=user)

    assert isinstance(caller, PersonCaller)
    assert caller.project_ids_list(DATA) == []
    with pytest.raises(InvalidInput) as missing:
        caller.project(DATA)
    assert missing.value.errors[0].code == "required"
    with pytest.raises(NotFound):  # not theirs at all
        caller.project(DATA, slug=other_project.slug)
    from rest_framework.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):  # theirs, in a role without the access
        caller.project(DATA, slug=project.slug)
    with pytest.raises(NotFound):  # queues and gold conceal projects one does not run
        caller.project(MANAGE, slug=project.slug)
    with pytest.raises(NotFound):
        caller.project(GOLD, slug=project.slug)


def test_a_person_in_one_gold_project_may_leave_it_out(project):
    _, user = person_client(project, "sam", Role.DATA_SCIENTIST)
    assert caller_for(user=user).project(GOLD, sole=True) == project


# --- strict query parameters and input serializers ------------------------------------------


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/goldsets?project=a%00", "project"),
        ("/api/v1/goldsets?pro%00ject=a", "pro\\x00ject"),
        ("/api/v1/audits?project=a%00", "project"),
        ("/api/v1/feedback?model_version=v%00", "model_version"),
        ("/api/v1/feedback?segment.locale=d%00", "segment.locale"),
    ],
)
def test_nul_in_a_query_parameter_is_400_naming_it(data_client, path, field):
    response = data_client.get(path)
    assert response.status_code == 400, response.content
    assert (field, "invalid") in [(e["field"], e["code"]) for e in response.json()["errors"]]


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        ({"name": 60809470560304472522752}, "name", "invalid_type"),
        ({"name": "a\x00b"}, "name", "invalid"),
        ({"label_choices": ["ok", 7]}, "label_choices[1]", "invalid_type"),
        ({"project": 12}, "project", "invalid_type"),
        ({"colour": "red"}, "colour", "unknown_field"),
    ],
)
def test_a_queue_payload_is_strict(project, change, field, code):
    admin, _ = person_client(project, "ada", Role.ADMIN)
    body = {"name": "q", "project": project.slug, **change}

    response = admin.post("/api/v1/queues", body, format="json")

    assert response.status_code == 400, response.content
    assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [(field, code)]
    assert Queue.objects.count() == 0


@pytest.mark.parametrize("body", [[1], "x", 3])
def test_a_label_body_that_is_not_an_object_is_400(project, queue, make_items, body):
    reviewer, user = person_client(project, "rita", Role.REVIEWER)
    queue.reviewers.add(user)
    (item,) = make_items(queue, 1)

    response = reviewer.post(f"/api/v1/items/{item.pk}/labels", body, format="json")

    assert response.status_code == 400
    assert response.json()["errors"][0] == {
        "field": None,
        "code": "invalid_type",
        "detail": "The body must be a JSON object.",
    }


# --- the schema documents what the operations answer ----------------------------------------


def test_queue_reads_answer_only_documented_statuses(client, project, queue, make_key):
    # schemathesis found 403 on GET /queues and 403/404 on GET /sampling-runs/{id} undocumented.
    schema = client.get("/api/schema/?format=json").json()["paths"]
    run = SamplingRun.objects.create(queue=queue, seed=1)
    ingest = client_for(make_key(project, ["ingest"]))
    data = client_for(make_key(project, ["data"]))
    cases = [
        ("/api/v1/queues", "/api/v1/queues", ingest, 403),
        ("/api/v1/queues/{id}", f"/api/v1/queues/{queue.pk}", ingest, 403),
        ("/api/v1/queues/{id}/stats", f"/api/v1/queues/{queue.pk}/stats", ingest, 403),
        ("/api/v1/sampling-runs/{id}", f"/api/v1/sampling-runs/{run.pk}", ingest, 403),
        ("/api/v1/sampling-runs/{id}", f"/api/v1/sampling-runs/{run.pk + 1000}", data, 404),
        ("/api/v1/queues/{id}", f"/api/v1/queues/{queue.pk + 1000}", data, 404),
        ("/api/v1/categories", "/api/v1/categories", APIClient(), 401),
    ]
    for template, path, caller, expected in cases:
        response = caller.get(path)
        assert response.status_code == expected, (path, response.content)
        assert str(expected) in schema[template]["get"]["responses"], template


def test_every_operation_documents_401_and_429(client):
    schema = client.get("/api/schema/?format=json").json()
    missing = [
        (method.upper(), path, code)
        for path, item in schema["paths"].items()
        if path.startswith("/api/v1/")
        for method, operation in item.items()
        for code in ("401", "429")
        if code not in operation["responses"]
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"notes": "a\x00b"}, "notes"),
        ({"correction": {"text": "a\x00b"}}, "correction"),
        ({"true_label": 3}, "true_label"),
    ],
)
def test_a_label_with_nul_or_a_wrong_type_is_400_naming_the_field(
    project, queue, make_items, change, field
):
    reviewer, user = person_client(project, "rita", Role.REVIEWER)
    queue.reviewers.add(user)
    Queue.objects.filter(pk=queue.pk).update(label_choices=["approve", "deny"])
    make_items(queue, 1)
    claimed = reviewer.post(f"/api/v1/queues/{queue.pk}/claim")
    assert claimed.status_code == 200, claimed.content
    body = {"verdict": "correct", "true_label": "approve", **change}

    response = reviewer.post(f"/api/v1/items/{claimed.json()['item']}/labels", body, format="json")

    assert response.status_code == 400, response.content
    fields = [error["field"] for error in response.json()["errors"]]
    # NUL is refused by the JSON parser, naming the path inside the field (correction.text)
    assert any(f == field or f.startswith(f"{field}.") for f in fields), fields

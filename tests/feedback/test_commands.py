"""Management commands as API.md describes them."""

from __future__ import annotations

import hashlib
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from feedback.models import ApiKey, Feedback, Membership, Prediction, Project
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_create_project_with_default_taxonomy():
    run("create_project", "support-bot", "--name", "Support bot")

    project = Project.objects.get(slug="support-bot")
    assert project.name == "Support bot"
    assert list(project.categories.values_list("slug", flat=True)) == [
        "incorrect",
        "incomplete",
        "unsafe",
        "biased",
        "off_topic",
        "too_slow",
        "other",
    ]
    with pytest.raises(CommandError, match="exists already"):
        run("create_project", "support-bot")


def test_create_api_key_prints_a_working_key_as_the_last_line(project):
    output = run("create_api_key", project.slug, "--scopes", "ingest,data")

    raw = output.strip().splitlines()[-1]
    key = ApiKey.objects.get()
    assert key.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert key.scopes == ["data", "ingest"]
    assert client_for(raw).get("/api/v1/feedback").status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [(["nope", "--scopes", "ingest"], "No project"), (["{slug}", "--scopes", "root"], "Scopes")],
)
def test_create_api_key_refuses_clearly(project, args, message):
    with pytest.raises(CommandError, match=message):
        run("create_api_key", *[a.format(slug=project.slug) for a in args])


def test_create_reviewer_makes_a_staff_member_who_can_log_in(project, client):
    run("create_reviewer", "alice", "--project", project.slug, "--password", "s3cret-pass")

    user = get_user_model().objects.get(username="alice")
    assert user.is_staff and not user.is_superuser
    assert Membership.objects.get(user=user, project=project).role == "reviewer"
    assert user.groups.filter(name="Reviewers").exists()
    assert client.login(username="alice", password="s3cret-pass")


def test_drf_create_token_gives_a_person_api_access(project):
    run("create_reviewer", "bob", "--project", project.slug, "--role", "data_scientist")

    token = run("drf_create_token", "bob").split()[2]

    response = client_for(token=token).get(f"/api/v1/categories?project={project.slug}")
    assert response.status_code == 200


def test_seed_demo_is_idempotent():
    first = run("seed_demo")
    second = run("seed_demo")

    project = Project.objects.get(slug="demo")
    assert "1500 predictions" in first
    assert "2 queues with" in first
    assert "nothing to do" in second
    assert Prediction.objects.filter(project=project).count() == 1500
    assert Feedback.objects.filter(project=project, kind="dispute").exists()
    assert Feedback.objects.filter(comment__contains="[EMAIL]").exists()
    demo = get_user_model().objects.get(username="demo")
    assert demo.check_password("demo")
    assert Membership.objects.get(user=demo, project=project).role == "reviewer"

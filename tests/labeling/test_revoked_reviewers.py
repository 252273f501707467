"""A revoked member reviews no more: ``membership_revoke`` (and ``manage.py revoke_member``)
ends their claims and labels in the project's queues at once, over the API and in the admin
workspace, although the queue still names them among its reviewers (``reviews_in``: reviewing
needs a current membership of the queue's project). The same rule keeps a reviewer group shared
by several projects (the role group) from reaching the queues of a project one is not in."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from feedback.models import Membership
from feedback.services.projects import membership_grant, membership_revoke
from labeling.models import Assignment, Label, Queue
from labeling.selectors import can_review, queues_for_reviewer

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_reviewer, queue):
    return make_reviewer("alice", queue)


def api_as(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def label(client: APIClient, item_id: int):
    return client.post(
        f"/api/v1/items/{item_id}/labels",
        data=json.dumps({"verdict": "correct"}),
        content_type="application/json",
    )


def test_a_revoked_reviewer_can_no_longer_claim_or_label_over_the_api(
    project, queue, alice, make_items
):
    make_items(queue, 2)
    client = api_as(alice)
    claimed = client.post(f"/api/v1/queues/{queue.pk}/claim")
    assert claimed.status_code == 200
    item_id = claimed.json()["item"]

    membership_revoke(project=project, username="alice")

    # still named by the queue, but no longer a member: the queue is not theirs to see (404)
    assert queue.reviewers.filter(pk=alice.pk).exists()
    refused_claim = client.post(f"/api/v1/queues/{queue.pk}/claim")
    refused_label = label(client, item_id)
    assert refused_claim.status_code == 404
    assert refused_claim.json()["errors"][0]["field"] == "id"
    assert refused_label.status_code == 404
    assert refused_label.json()["errors"][0]["field"] == "id"
    assert not Label.objects.exists()
    assert Assignment.objects.count() == 1  # only the claim made before the revocation
    assert can_review(queue=queue, user=alice) is False


def test_a_revoked_reviewer_is_refused_by_the_workspace(
    project, other_project, queue, alice, make_items
):
    # given: alice reviews in another project too, so she stays staff after the revocation
    (item,) = make_items(queue, 1)
    membership_grant(project=other_project, username="alice", role=Membership.Role.REVIEWER)
    client = Client()
    client.force_login(alice)
    page = reverse("admin:labeling_workspace", args=[queue.pk])
    assert client.get(page).status_code == 200  # claims the item

    # when
    call_command("revoke_member", "alice", "--project", project.slug)

    # then
    alice.refresh_from_db()
    assert alice.is_staff is True
    assert client.get(page).status_code == 403
    submit = reverse("admin:labeling_workspace_submit", args=[queue.pk])
    assert client.post(submit, {"item": item.pk, "verdict": "correct"}).status_code == 403
    assert not Label.objects.exists()
    assert list(queues_for_reviewer(user=alice)) == []


def test_reviewing_comes_back_with_the_membership(project, queue, alice, make_items):
    make_items(queue, 1)
    membership_revoke(project=project, username="alice")
    assert can_review(queue=queue, user=alice) is False

    membership_grant(project=project, username="alice", role=Membership.Role.REVIEWER)

    assert can_review(queue=queue, user=alice) is True
    assert [q.pk for q in queues_for_reviewer(user=alice)] == [queue.pk]


def test_a_shared_reviewer_group_reaches_only_projects_one_belongs_to(
    project, other_project, queue, make_items
):
    # given: the queue is reviewed by the "Reviewers" role group, which a reviewer of another
    # project is in too
    make_items(queue, 1)
    outsider = membership_grant(
        project=other_project, username="olga", role=Membership.Role.REVIEWER
    ).user
    queue.reviewer_group = outsider.groups.get()
    queue.save()
    insider = membership_grant(project=project, username="ines", role=Membership.Role.REVIEWER)

    # then
    assert can_review(queue=queue, user=insider.user) is True
    assert can_review(queue=queue, user=outsider) is False
    assert api_as(outsider).post(f"/api/v1/queues/{queue.pk}/claim").status_code == 404
    assert api_as(insider.user).post(f"/api/v1/queues/{queue.pk}/claim").status_code == 200
    assert not Queue.objects.filter(pk=queue.pk, reviewers=outsider).exists()

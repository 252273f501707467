"""The reviewer flow over HTTP: claim, label, release, leases, consensus, disputes."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from feedback.models import Feedback
from feedback.selectors import project_context
from feedback.services.intake import feedback_submit
from labeling.models import Assignment, Label, LabelRevision, QueueItem
from labeling.payloads.labels import label_input
from labeling.services.labels import item_adjudicate, label_update

pytestmark = pytest.mark.django_db


def as_user(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)  # DRF's session-less login; the request stack is real
    return client


def claim(client, queue):
    return client.post(f"/api/v1/queues/{queue.pk}/claim")


def label(client, item_id, **body):
    body.setdefault("verdict", "correct")
    return client.post(
        f"/api/v1/items/{item_id}/labels", data=json.dumps(body), content_type="application/json"
    )


def test_claim_returns_the_item_without_segments(queue, make_items, make_reviewer):
    (item,) = make_items(queue, 1)
    alice = as_user(make_reviewer("alice", queue))

    response = claim(alice, queue)

    assert response.status_code == 200
    body = response.json()
    assert body["item"] == item.pk
    assert body["prediction"]["output"] == {"reply": "answer 0"}
    assert "segment" not in body["prediction"]  # blind review
    assert body["categories"][0] == "incorrect"
    assert body["label_choices"] == []
    assert Assignment.objects.get().expires_at > timezone.now() + timedelta(seconds=590)


def test_segments_are_shown_when_the_queue_says_so(queue, make_items, make_reviewer):
    queue.show_segments = True
    queue.save()
    make_items(queue, 1)

    body = claim(as_user(make_reviewer("alice", queue)), queue).json()

    assert body["prediction"]["segment"] == {"locale": "de-DE"}


def test_claiming_again_returns_the_same_item(queue, make_items, make_reviewer):
    make_items(queue, 3)
    alice = as_user(make_reviewer("alice", queue))

    first = claim(alice, queue).json()["item"]

    assert claim(alice, queue).json()["item"] == first
    assert Assignment.objects.count() == 1


def test_priority_then_age(queue, make_items, make_reviewer):
    older = make_items(queue, 1, prefix="old")[0]
    dispute = make_items(queue, 1, priority=QueueItem.PRIORITY_DISPUTE, prefix="d")[0]
    alice = as_user(make_reviewer("alice", queue))

    assert claim(alice, queue).json()["item"] == dispute.pk
    assert label(alice, dispute.pk).status_code == 201
    assert claim(alice, queue).json()["item"] == older.pk


def test_overlap_needs_distinct_reviewers_and_then_the_item_is_done(
    queue, make_items, make_reviewer
):
    (item,) = make_items(queue, 1)
    alice, bob, carol = (as_user(make_reviewer(n, queue)) for n in ("alice", "bob", "carol"))

    assert claim(alice, queue).json()["item"] == item.pk
    assert claim(bob, queue).json()["item"] == item.pk
    assert claim(carol, queue).status_code == 204  # both slots are leased
    assert label(alice, item.pk, verdict="incorrect", categories=["unsafe"]).status_code == 201
    assert claim(alice, queue).status_code == 204  # never an item she labeled
    assert label(bob, item.pk, verdict="incorrect").status_code == 201

    item.refresh_from_db()
    assert item.status == "complete"
    assert item.consensus["verdict"] == "incorrect"
    assert item.consensus["agreement"] == 1.0
    assert item.consensus["categories"] == ["unsafe"]
    assert claim(carol, queue).status_code == 204


def test_labeling_without_a_live_lease_is_409(queue, make_items, make_reviewer):
    (item,) = make_items(queue, 1)
    alice = as_user(make_reviewer("alice", queue))

    response = label(alice, item.pk)

    assert response.status_code == 409
    assert response.json()["errors"][0]["code"] == "no_lease"
    assert Label.objects.count() == 0


def test_labeling_twice_is_409(queue, make_items, make_reviewer):
    (item,) = make_items(queue, 1)
    alice = as_user(make_reviewer("alice", queue))
    claim(alice, queue)
    label(alice, item.pk)

    response = label(alice, item.pk, verdict="incorrect")

    assert response.status_code == 409
    assert response.json()["errors"][0]["code"] == "already_labeled"
    assert Label.objects.get().verdict == "correct"


def test_an_expired_lease_returns_the_slot(queue, make_items, make_reviewer):
    queue.overlap = 1
    queue.save()
    (item,) = make_items(queue, 1)
    alice, bob = as_user(make_reviewer("alice", queue)), as_user(make_reviewer("bob", queue))
    claim(alice, queue)
    assert claim(bob, queue).status_code == 204

    Assignment.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    assert claim(bob, queue).json()["item"] == item.pk
    assert label(alice, item.pk).status_code == 409  # her lease lapsed
    assert label(bob, item.pk).status_code == 201


def test_release_returns_the_slot_and_skips_the_item_for_a_while(queue, make_items, make_reviewer):
    queue.overlap = 1
    queue.save()
    first, second = make_items(queue, 2)
    alice, bob = as_user(make_reviewer("alice", queue)), as_user(make_reviewer("bob", queue))
    assert claim(alice, queue).json()["item"] == first.pk

    assert alice.post(f"/api/v1/items/{first.pk}/release").status_code == 200

    assert claim(bob, queue).json()["item"] == first.pk
    assert claim(alice, queue).json()["item"] == second.pk  # not the one she skipped
    assert alice.post(f"/api/v1/items/{first.pk}/release").status_code == 409


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"verdict": "maybe"}, "verdict", "invalid_choice"),
        ({"verdict": "correct", "categories": ["nope"]}, "categories[0]", "unknown_category"),
        ({"verdict": "correct", "true_label": "approve"}, "true_label", "not_allowed"),
        ({"verdict": "correct", "seconds_spent": -1}, "seconds_spent", "invalid"),
        ({"verdict": "correct", "colour": "red"}, "colour", "unknown_field"),
    ],
)
def test_bad_labels_are_400(queue, make_items, make_reviewer, body, field, code):
    (item,) = make_items(queue, 1)
    alice = as_user(make_reviewer("alice", queue))
    claim(alice, queue)

    response = label(alice, item.pk, **body)

    assert response.status_code == 400
    assert (field, code) in {(e["field"], e["code"]) for e in response.json()["errors"]}


def test_a_day_of_seconds_spent_is_accepted_as_documented(queue, make_items, make_reviewer):
    # The schema said at most 86,400 seconds; the service refused exactly 86,400.
    (item,) = make_items(queue, 1)
    alice = as_user(make_reviewer("alice", queue))
    claim(alice, queue)

    response = label(alice, item.pk, seconds_spent=86400)

    assert response.status_code == 201, response.content
    assert response.json()["seconds_spent"] == 86400.0


def test_label_choices_require_a_true_label(queue, make_items, make_reviewer):
    queue.label_choices = ["approve", "deny"]
    queue.overlap = 1
    queue.save()
    (item,) = make_items(queue, 1)
    alice = as_user(make_reviewer("alice", queue))
    claim(alice, queue)

    assert label(alice, item.pk).json()["errors"][0]["field"] == "true_label"
    assert label(alice, item.pk, true_label="deny").status_code == 201
    item.refresh_from_db()
    assert item.consensus["true_label"] == "deny"


def test_a_tie_goes_to_adjudication_and_an_admin_settles_it(queue, make_items, make_reviewer):
    (item,) = make_items(queue, 1)
    alice, bob = as_user(make_reviewer("alice", queue)), as_user(make_reviewer("bob", queue))
    boss = make_reviewer("boss", role="admin")
    for client, verdict in ((alice, "correct"), (bob, "incorrect")):
        claim(client, queue)
        label(client, item.pk, verdict=verdict)
    item.refresh_from_db()
    assert item.status == "adjudication"

    item_adjudicate(item=item, actor=boss, verdict="incorrect", note="Wrong refund date.")

    item.refresh_from_db()
    assert item.status == "complete"
    assert item.consensus["method"] == "adjudicated"
    assert item.consensus["verdict"] == "incorrect"


def test_completing_an_item_resolves_its_dispute(
    project, queue, make_items, make_reviewer, ingest_client
):
    (item,) = make_items(queue, 1)
    (result,) = feedback_submit(
        context=project_context(project=project),
        items=[{"prediction": item.prediction.external_id, "kind": "dispute"}],
    )
    alice, bob = as_user(make_reviewer("alice", queue)), as_user(make_reviewer("bob", queue))
    for client in (alice, bob):
        claim(client, queue)
        label(client, item.pk, verdict="incorrect")

    dispute = ingest_client.get(f"/api/v1/disputes/{result.obj.pk}").json()
    assert dispute["status"] == "upheld"
    assert "upheld" in dispute["resolution_note"]
    assert Feedback.objects.get(pk=result.obj.pk).resolved_at is not None


def test_edits_keep_history(queue, make_items, make_reviewer):
    (item,) = make_items(queue, 1)
    alice_user = make_reviewer("alice", queue)
    alice = as_user(alice_user)
    claim(alice, queue)
    label(alice, item.pk, verdict="correct", notes="first look")
    stored = Label.objects.get()

    label_update(
        label=stored,
        actor=alice_user,
        answer=label_input({"verdict": "incorrect", "notes": "on reflection"}),
        categories={"incorrect"},
    )

    stored.refresh_from_db()
    assert stored.verdict == "incorrect"
    (revision,) = LabelRevision.objects.all()
    assert revision.content["verdict"] == "correct"
    assert revision.content["notes"] == "first look"
    assert revision.changed_by == alice_user


def test_only_the_queues_reviewers_may_claim(queue, make_items, make_reviewer, other_project):
    make_items(queue, 1)
    stranger = as_user(make_reviewer("stranger"))  # a member of the project, not of the queue
    scientist = as_user(make_reviewer("sci", role="data_scientist"))

    assert claim(stranger, queue).status_code == 404
    assert claim(scientist, queue).status_code == 403  # sees the queue, does not review it


def test_keys_cannot_claim(queue, make_items, make_key, project):
    from tests.conftest import client_for

    make_items(queue, 1)

    assert (
        client_for(make_key(project, ["ingest", "data"]))
        .post(f"/api/v1/queues/{queue.pk}/claim")
        .status_code
        == 403
    )


def test_a_reviewer_group_grants_access(queue, make_items, make_reviewer):
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="night shift")
    queue.reviewer_group = group
    queue.save()
    make_items(queue, 1)
    dora = make_reviewer("dora")
    dora.groups.add(group)

    assert claim(as_user(dora), queue).status_code == 200


def test_stats_report_agreement_and_reviewers(queue, make_items, make_reviewer, data_client):
    items = make_items(queue, 4)
    alice, bob = as_user(make_reviewer("alice", queue)), as_user(make_reviewer("bob", queue))
    verdicts = {
        "alice": ["correct", "incorrect", "correct", "correct"],
        "bob": ["correct", "incorrect", "incorrect", "correct"],
    }
    for name, client in (("alice", alice), ("bob", bob)):
        for _ in verdicts[name]:
            claimed = claim(client, queue).json()["item"]
            position = [i.pk for i in items].index(claimed)
            label(client, claimed, verdict=verdicts[name][position], seconds_spent=10 + position)

    stats = data_client.get(f"/api/v1/queues/{queue.pk}/stats").json()

    assert stats["items"] == {"open": 0, "adjudication": 1, "complete": 3, "total": 4}
    assert stats["labels"] == 8
    assert stats["agreement"]["percent_agreement"] == 0.75
    alice_row = stats["reviewers"][0]
    assert alice_row == {
        "username": "alice",
        "labels": 4,
        "median_seconds": 11.5,
        "agreement_with_consensus": 1.0,
        "gold_checks": 0,  # no gold set: tests/labeling/test_gold_checks.py has the figures
        "gold_correct": 0,
        "gold_accuracy": None,
    }

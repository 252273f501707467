"""Contradictory labels, undo and edits of one's own labels, progress: the label service
(labeling/services/labels.py), the REST API and the workspace agree.

"correct" with a true label other than the predicted one, or "incorrect" with the predicted
label as the true one, is refused (400 naming ``true_label``, code ``contradicts_verdict``)
unless the request confirms it.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from feedback.errors import InvalidInput, NotFound
from labeling.models import Label, LabelRevision, Queue
from labeling.payloads.labels import label_input
from labeling.services.claims import queue_claim_next
from labeling.services.labels import item_label_submit, label_edit_own

pytestmark = pytest.mark.django_db


@pytest.fixture
def labeled_queue(queue: Queue) -> Queue:
    # make_items predicts "refund" for every item
    queue.label_choices = ["refund", "shipping", "other"]
    queue.overlap = 1
    queue.save()
    return queue


@pytest.fixture
def alice(make_reviewer, labeled_queue):
    return make_reviewer("alice", labeled_queue)


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def claim(queue, user):
    lease = queue_claim_next(queue=queue, reviewer=user)
    assert lease is not None
    return lease.item_id


# --- the service -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "true_label"), [("correct", "shipping"), ("incorrect", "refund")]
)
def test_the_service_refuses_a_contradiction_naming_true_label(
    labeled_queue, alice, make_items, verdict, true_label
):
    make_items(labeled_queue, 1)
    item_id = claim(labeled_queue, alice)

    with pytest.raises(InvalidInput) as refused:
        item_label_submit(
            item_id=item_id,
            reviewer=alice,
            answer=label_input({"verdict": verdict, "true_label": true_label}),
            categories=set(),
        )

    (error,) = refused.value.errors
    assert (error.field, error.code) == ("true_label", "contradicts_verdict")
    assert "'refund'" in error.detail and "confirm_contradiction" in error.detail
    assert not Label.objects.exists()

    # confirmed, it is stored as given (the confirmation itself is not a label field)
    label = item_label_submit(
        item_id=item_id,
        reviewer=alice,
        answer=label_input(
            {"verdict": verdict, "true_label": true_label, "confirm_contradiction": True}
        ),
        categories=set(),
    )
    assert (label.verdict, label.true_label) == (verdict, true_label)


@pytest.mark.parametrize(
    ("verdict", "true_label"),
    [("correct", "refund"), ("incorrect", "shipping"), ("unsure", "shipping"), ("unsure", "")],
)
def test_consistent_answers_pass(labeled_queue, alice, make_items, verdict, true_label):
    make_items(labeled_queue, 1)
    item_id = claim(labeled_queue, alice)

    label = item_label_submit(
        item_id=item_id,
        reviewer=alice,
        answer=label_input({"verdict": verdict, "true_label": true_label}),
        categories=set(),
    )

    assert (label.verdict, label.true_label) == (verdict, true_label)


def test_confirm_must_be_a_boolean(labeled_queue, alice, make_items):
    make_items(labeled_queue, 1)
    item_id = claim(labeled_queue, alice)

    with pytest.raises(InvalidInput) as refused:
        item_label_submit(
            item_id=item_id,
            reviewer=alice,
            answer=label_input(
                {"verdict": "correct", "true_label": "refund", "confirm_contradiction": "yes"}
            ),
            categories=set(),
        )

    assert [(e.field, e.code) for e in refused.value.errors] == [
        ("confirm_contradiction", "invalid_type")
    ]


def test_an_edit_is_checked_too_and_keeps_the_old_answer(labeled_queue, alice, make_items):
    make_items(labeled_queue, 1)
    item_id = claim(labeled_queue, alice)
    label = item_label_submit(
        item_id=item_id,
        reviewer=alice,
        answer=label_input({"verdict": "correct", "true_label": "refund", "notes": "fine"}),
        categories=set(),
    )

    with pytest.raises(InvalidInput) as refused:
        label_edit_own(
            label_id=label.pk,
            reviewer=alice,
            answer=label_input({"verdict": "incorrect", "true_label": "refund"}),
        )
    assert refused.value.errors[0].code == "contradicts_verdict"
    assert not LabelRevision.objects.exists()

    edited = label_edit_own(
        label_id=label.pk,
        reviewer=alice,
        answer=label_input({"verdict": "incorrect", "true_label": "other"}),
    )

    assert (edited.verdict, edited.true_label) == ("incorrect", "other")
    (revision,) = LabelRevision.objects.all()
    assert revision.changed_by == alice
    assert revision.content["verdict"] == "correct"
    assert revision.content["true_label"] == "refund"
    assert revision.content["notes"] == "fine"
    edited.item.refresh_from_db()
    assert edited.item.consensus["verdict"] == "incorrect"  # consensus follows the edit


def test_nobody_edits_someone_elses_label(labeled_queue, alice, make_reviewer, make_items):
    bob = make_reviewer("bob", labeled_queue)
    make_items(labeled_queue, 1)
    label = item_label_submit(
        item_id=claim(labeled_queue, alice),
        reviewer=alice,
        answer=label_input({"verdict": "correct", "true_label": "refund"}),
        categories=set(),
    )

    with pytest.raises(NotFound):
        label_edit_own(label_id=label.pk, reviewer=bob, answer=label_input({"verdict": "unsure"}))

    assert Label.objects.get().verdict == "correct"


# --- the REST API ----------------------------------------------------------------------------


def test_the_api_answers_400_and_takes_the_confirmation(labeled_queue, alice, make_items):
    make_items(labeled_queue, 1)
    api = APIClient()
    api.force_authenticate(alice)
    item_id = api.post(f"/api/v1/queues/{labeled_queue.pk}/claim").json()["item"]
    url = f"/api/v1/items/{item_id}/labels"
    body = {"verdict": "correct", "true_label": "shipping"}

    refused = api.post(url, json.dumps(body), content_type="application/json")

    assert refused.status_code == 400
    assert [(e["field"], e["code"]) for e in refused.json()["errors"]] == [
        ("true_label", "contradicts_verdict")
    ]
    stored = api.post(
        url, json.dumps({**body, "confirm_contradiction": True}), content_type="application/json"
    )
    assert stored.status_code == 201, stored.content
    assert stored.json()["true_label"] == "shipping"
    assert "confirm_contradiction" not in stored.json()


def test_an_item_of_another_project_is_404_about_the_item(labeled_queue, make_items, other_project):
    from feedback.models import Membership
    from feedback.services.projects import membership_grant

    (item,) = make_items(labeled_queue, 1)
    outsider = membership_grant(
        project=other_project, username="olga", role=Membership.Role.REVIEWER, password="pw-123456"
    ).user
    api = APIClient()
    api.force_authenticate(outsider)

    response = api.post(
        f"/api/v1/items/{item.pk}/labels",
        json.dumps({"verdict": "correct", "true_label": "refund"}),
        content_type="application/json",
    )

    assert response.status_code == 404
    assert response.json()["errors"] == [
        {"field": "id", "code": "not_found", "detail": f"No item {item.pk} of yours."}
    ]
    assert "queue" not in response.content.decode().lower()
    assert not Label.objects.exists()


# --- the workspace ---------------------------------------------------------------------------


def page(queue):
    return reverse("admin:labeling_workspace", args=[queue.pk])


def submit(queue):
    return reverse("admin:labeling_workspace_submit", args=[queue.pk])


def test_correct_alone_takes_the_predicted_label(labeled_queue, alice, make_items):
    make_items(labeled_queue, 1)
    client = logged_in(alice)
    html = client.get(page(labeled_queue)).content.decode()
    item_id = int(html.split('name="item" value="')[1].split('"')[0])
    assert 'data-predicted="refund"' in html
    assert 'refund <span class="ws-quiet">(predicted)</span>' in html

    response = client.post(submit(labeled_queue), {"item": item_id, "verdict": "correct"})

    assert response.status_code == 302
    assert Label.objects.get().true_label == "refund"


def test_the_workspace_asks_to_confirm_a_contradiction(labeled_queue, alice, make_items):
    make_items(labeled_queue, 1)
    client = logged_in(alice)
    html = client.get(page(labeled_queue)).content.decode()
    item_id = int(html.split('name="item" value="')[1].split('"')[0])
    posted = {"item": item_id, "verdict": "correct", "true_label": "shipping"}

    response = client.post(submit(labeled_queue), posted)

    html = response.content.decode()
    assert response.status_code == 200
    assert "You marked the output correct but chose" in html
    assert 'id="confirm-contradiction"' in html
    assert 'value="shipping" id="true-label-2" data-key="p" checked' in html
    assert not Label.objects.exists()

    response = client.post(submit(labeled_queue), {**posted, "confirm_contradiction": "1"})

    assert response.status_code == 302
    assert (Label.objects.get().verdict, Label.objects.get().true_label) == ("correct", "shipping")


def test_progress_undo_and_recent_labels(labeled_queue, alice, make_reviewer, make_items):
    make_items(labeled_queue, 3)
    client = logged_in(alice)
    html = client.get(page(labeled_queue)).content.decode()
    assert '<span id="ws-left"><strong>3</strong> left for you</span>' in html
    assert '<span id="ws-done-today"><strong>0</strong> done today</span>' in html
    first = int(html.split('name="item" value="')[1].split('"')[0])
    client.post(submit(labeled_queue), {"item": first, "verdict": "correct"})

    html = client.get(page(labeled_queue)).content.decode()
    assert '<span id="ws-left"><strong>2</strong> left for you</span>' in html
    assert '<span id="ws-done-today"><strong>1</strong> done today</span>' in html
    held = int(html.split('name="item" value="')[1].split('"')[0])

    # Z: undo reopens the last label, filled in
    undo = client.get(reverse("admin:labeling_workspace_undo", args=[labeled_queue.pk]))
    label = Label.objects.get()
    edit_url = reverse("admin:labeling_workspace_edit", args=[labeled_queue.pk, label.pk])
    assert undo.status_code == 302 and undo["Location"] == edit_url
    html = client.get(edit_url).content.decode()
    assert 'id="ws-editing"' in html and "Save change" in html
    assert (
        'value="correct" id="verdict-correct" data-key="1" class="visually-hidden" checked' in html
    )
    assert 'value="refund" id="true-label-1" data-key="r" checked' in html

    # saving the change keeps the old answer and goes back to the held item
    response = client.post(
        edit_url, {"verdict": "incorrect", "true_label": "other", "notes": "misread it"}
    )
    assert response.status_code == 302 and response["Location"] == page(labeled_queue)
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        f"Changed your label on item {first}: incorrect · other."
    ]
    label.refresh_from_db()
    assert (label.verdict, label.true_label, label.notes) == ("incorrect", "other", "misread it")
    assert LabelRevision.objects.get().content["verdict"] == "correct"
    html = client.get(page(labeled_queue)).content.decode()
    assert int(html.split('name="item" value="')[1].split('"')[0]) == held

    # the recent list shows it with its one change; another reviewer cannot open it
    html = client.get(
        reverse("admin:labeling_workspace_recent", args=[labeled_queue.pk])
    ).content.decode()
    assert f'<tr data-label="{label.pk}">' in html
    assert '<td class="ws-num">1</td>' in html
    bob = make_reviewer("bob", labeled_queue)
    assert logged_in(bob).get(edit_url).status_code == 404
    assert logged_in(bob).post(edit_url, {"verdict": "unsure"}).status_code == 404
    assert Label.objects.get().verdict == "incorrect"


def test_the_api_schema_documents_the_confirmation():
    from django.test import Client as PlainClient

    response = PlainClient().get("/api/schema/", {"format": "json"})

    schema = json.loads(response.content)
    operation = schema["paths"]["/api/v1/items/{id}/labels"]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]
    assert body["confirm_contradiction"]["type"] == "boolean"
    assert "contradicts_verdict" in body["confirm_contradiction"]["description"]

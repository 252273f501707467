"""The reviewer workspace in the admin (labeling/admin/workspace.py), through Django's test client.

Everything here is plain HTML forms: no JavaScript runs, so these tests are also the proof that
the workspace works without it (the keyboard layer is covered by tests/e2e).
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from feedback.models import Membership
from feedback.selectors import project_context
from feedback.services.intake import feedback_submit
from labeling.admin.workspace import present, shortcut_letters
from labeling.models import Assignment, Label, Queue, QueueItem

pytestmark = pytest.mark.django_db


def index_url() -> str:
    return reverse("admin:labeling_workspace_index")


def page_url(queue: Queue) -> str:
    return reverse("admin:labeling_workspace", args=[queue.pk])


def submit_url(queue: Queue) -> str:
    return reverse("admin:labeling_workspace_submit", args=[queue.pk])


def release_url(queue: Queue) -> str:
    return reverse("admin:labeling_workspace_release", args=[queue.pk])


def logged_in(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no hidden {name} in the page"
    return match.group(1)


def open_item(client: Client, queue: Queue) -> tuple[int, str]:
    """GET the labeling page (which claims); return the item id and the page."""
    response = client.get(page_url(queue))
    assert response.status_code == 200
    html = response.content.decode()
    return int(hidden(html, "item")), html


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def alice(make_reviewer, queue):
    return make_reviewer("alice", queue)


# --- index -----------------------------------------------------------------------------------


def test_index_lists_only_my_queues_with_open_counts(project, queue, alice, make_items):
    # given: alice reviews "review" (3 open, 1 complete); "escalations" is someone else's
    others = Queue.objects.create(project=project, name="escalations")
    items = make_items(queue, 4)
    make_items(others, 2, prefix="o")
    QueueItem.objects.filter(pk=items[0].pk).update(status=QueueItem.Status.COMPLETE)

    # when
    response = logged_in(alice).get(index_url())

    # then
    assert response.status_code == 200
    html = response.content.decode()
    assert [(q.name, q.open_items) for q in response.context["queues"]] == [("review", 3)]
    assert "escalations" not in html
    row = re.search(rf'<tr data-queue="{queue.pk}">(.*?)</tr>', html, re.S).group(1)
    assert '<td class="ws-num ws-open">3</td>' in row
    assert f'href="{page_url(queue)}">Start labeling</a>' in row


def test_index_shows_my_stats(project, queue, alice, make_reviewer, make_items):
    bob = make_reviewer("bob", queue)
    items = make_items(queue, 4)
    for item, seconds in zip(items[:3], [10.0, 40.0, 20.0], strict=True):
        Label.objects.create(item=item, reviewer=alice, verdict="correct", seconds_spent=seconds)
    Label.objects.create(item=items[3], reviewer=bob, verdict="correct", seconds_spent=99.0)

    response = logged_in(alice).get(index_url())

    assert response.context["stats"] == {"labels": 3, "last_day": 3, "median_seconds": 20.0}
    html = response.content.decode()
    assert '<dd id="ws-stat-labels">3</dd>' in html
    assert '<dd id="ws-stat-median">20.0</dd>' in html
    assert response.context["queues"][0].my_labels == 3


def test_index_for_someone_without_queues(project, make_reviewer):
    carol = make_reviewer("carol")  # a project member, in no queue

    response = logged_in(carol).get(index_url())

    assert response.status_code == 200
    assert list(response.context["queues"]) == []
    assert "not a reviewer of any queue" in response.content.decode()


def test_admin_pages_link_to_the_workspace(alice):
    # A reviewer's admin start page is their queues (config/views.py: admin_index).
    response = logged_in(alice).get(reverse("admin:index"), follow=True)

    assert f'<a href="{index_url()}" id="label-next-item">Label</a>' in response.content.decode()


def test_workspace_needs_an_admin_login(queue):
    response = Client().get(page_url(queue))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


# --- the labeling page -----------------------------------------------------------------------


def test_page_shows_the_item_and_the_users_feedback_but_no_segment(
    project, queue, alice, make_items
):
    (item,) = make_items(queue, 1)
    (result,) = feedback_submit(
        context=project_context(project=project),
        items=[
            {
                "prediction": item.prediction.external_id,
                "kind": "dispute",
                "categories": ["incorrect", "off_topic"],
                "comment": "It never answered my refund question.",
                "correction": "You can get a refund within 30 days.",
            }
        ],
    )
    assert result.outcome == "created", result.errors

    response = logged_in(alice).get(page_url(queue))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Is the answer right?" in html  # instructions
    assert '<div class="ws-text" data-field="message">question 0</div>' in html  # input
    assert '<div class="ws-text" data-field="reply">answer 0</div>' in html  # output
    assert '<dd id="ws-predicted-label">refund</dd>' in html
    assert '<dd id="ws-confidence">0.70</dd>' in html
    assert "Dispute" in html and "It never answered my refund question." in html
    assert '<span class="ws-tag">Incorrect</span><span class="ws-tag">Off topic</span>' in html
    assert "You can get a refund within 30 days." in html
    # blind review: the segment (locale de-DE) is not shown
    assert "de-DE" not in html and "ws-segment" not in html
    # the page claimed the item for alice, and says until when
    lease = Assignment.objects.get(item=item, reviewer=alice, status="active")
    assert f'Lease expires at <time datetime="{lease.expires_at.isoformat()}"' in html
    assert lease.expires_at.strftime("%H:%M:%S UTC") in html


def test_page_shows_segments_when_the_queue_does(queue, alice, make_items):
    queue.show_segments = True
    queue.save()
    make_items(queue, 1)

    html = logged_in(alice).get(page_url(queue)).content.decode()

    assert 'id="ws-segment"' in html
    assert "<dt>locale</dt><dd>de-DE</dd>" in html


def test_form_has_verdict_buttons_category_shortcuts_and_true_label(queue, alice, make_items):
    queue.label_choices = ["approve", "deny"]
    queue.save()
    make_items(queue, 1)

    html = logged_in(alice).get(page_url(queue)).content.decode()

    for value, key in [("correct", "1"), ("incorrect", "2"), ("unsure", "3")]:
        assert (
            f'type="radio" name="verdict" value="{value}" id="verdict-{value}" data-key="{key}"'
            in html
        )
    assert 'value="off_topic" id="category-off_topic" data-key="o"' in html
    # label choices are radio buttons with letters beside them, after the categories' letters
    assert 'name="true_label" value="approve" id="true-label-1" data-key="a"' in html
    assert 'name="true_label" value="deny" id="true-label-2" data-key="d"' in html
    assert 'id="ws-shortcuts"' in html  # the "?" list
    assert 'name="correction"' in html and 'name="notes"' in html
    assert "Skip (S)" in html


def test_a_reviewer_not_assigned_to_the_queue_gets_403(project, queue, make_reviewer, make_items):
    (item,) = make_items(queue, 1)
    mallory = make_reviewer("mallory")  # member of the project, not of the queue
    client = logged_in(mallory)

    assert client.get(page_url(queue)).status_code == 403
    assert (
        client.post(submit_url(queue), {"item": item.pk, "verdict": "correct"}).status_code == 403
    )
    assert client.post(release_url(queue), {"item": item.pk}).status_code == 403
    assert not Assignment.objects.exists() and not Label.objects.exists()


def test_a_group_reviewer_may_label(project, queue, make_reviewer, make_items):
    make_items(queue, 1)
    dave = make_reviewer("dave")
    queue.reviewer_group = dave.groups.get()  # the "Reviewers" role group
    queue.save()

    assert logged_in(dave).get(page_url(queue)).status_code == 200


# --- submitting ------------------------------------------------------------------------------


def test_submit_stores_the_label_and_serves_the_next_item(queue, alice, make_items):
    items = make_items(queue, 2)
    client = logged_in(alice)
    item_id, html = open_item(client, queue)
    assert item_id == items[0].pk

    response = client.post(
        submit_url(queue),
        {
            "item": item_id,
            "started": hidden(html, "started"),
            "verdict": "incorrect",
            "categories": ["off_topic", "incomplete"],
            "correction": "  Refunds take 5 days.\r\nSorry!  ",
            "notes": "asked twice",
        },
    )

    assert response.status_code == 302
    assert response["Location"] == page_url(queue)
    label = Label.objects.get()
    assert (label.item_id, label.reviewer, label.verdict) == (item_id, alice, "incorrect")
    assert label.categories == ["off_topic", "incomplete"]
    assert (label.correction, label.notes, label.true_label) == (
        "Refunds take 5 days.\nSorry!",
        "asked twice",
        "",
    )
    assert 0 <= label.seconds_spent < 60
    assert Assignment.objects.get(item_id=item_id).status == Assignment.Status.SUBMITTED
    assert messages_of(response) == [
        f"Saved item {item_id}: incorrect · off_topic, incomplete. Z undoes it."
    ]
    # PRG: the redirect target claims the next item
    assert open_item(client, queue)[0] == items[1].pk


def test_submit_with_a_true_label(queue, alice, make_items):
    queue.label_choices = ["approve", "deny"]
    queue.save()
    make_items(queue, 1)
    client = logged_in(alice)
    item_id, _ = open_item(client, queue)

    response = client.post(
        submit_url(queue), {"item": item_id, "verdict": "correct", "true_label": "deny"}
    )

    assert response.status_code == 302
    label = Label.objects.get()
    assert (label.verdict, label.true_label, label.categories) == ("correct", "deny", [])
    assert label.seconds_spent is None  # no started stamp posted: nothing made up


def test_a_forged_started_stamp_is_ignored(queue, alice, make_items):
    make_items(queue, 1)
    client = logged_in(alice)
    item_id, _ = open_item(client, queue)

    client.post(submit_url(queue), {"item": item_id, "verdict": "unsure", "started": "0"})

    assert Label.objects.get().seconds_spent is None


def test_invalid_input_re_renders_the_item_with_the_errors(queue, alice, make_items):
    queue.label_choices = ["approve", "deny"]
    queue.save()
    make_items(queue, 2)
    client = logged_in(alice)
    item_id, _ = open_item(client, queue)

    # no verdict (the payload's declaration refuses it, before the item's rules)
    response = client.post(
        submit_url(queue), {"item": item_id, "categories": ["nope"], "notes": "keep me"}
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert int(hidden(html, "item")) == item_id  # the same item, still leased
    assert "Please correct the error below." in html
    assert "<li>One of correct, incorrect, unsure.</li>" in html
    assert ">keep me</textarea>" in html
    assert not Label.objects.exists()

    # an unknown category (the project's taxonomy: the service's to check)
    response = client.post(
        submit_url(queue),
        {"item": item_id, "verdict": "correct", "true_label": "approve", "categories": ["nope"]},
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert "&#x27;nope&#x27; is not an active category" in html
    assert not Label.objects.exists()

    # a verdict without the label this queue asks for
    response = client.post(submit_url(queue), {"item": item_id, "verdict": "incorrect"})

    html = response.content.decode()
    assert response.status_code == 200
    assert "This queue asks for a label: approve, deny." in html
    assert (
        'value="incorrect" id="verdict-incorrect" data-key="2" class="visually-hidden" checked'
        in html
    )
    assert not Label.objects.exists()


def test_submitting_after_the_lease_lapsed_moves_on_with_a_message(queue, alice, make_items):
    make_items(queue, 1)
    client = logged_in(alice)
    item_id, _ = open_item(client, queue)
    Assignment.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    response = client.post(submit_url(queue), {"item": item_id, "verdict": "correct"})

    assert response.status_code == 302 and response["Location"] == page_url(queue)
    assert messages_of(response) == ["You hold no live lease on this item: claim it again."]
    assert not Label.objects.exists()


def test_submit_for_an_item_of_another_queue_is_404(project, queue, alice, make_items):
    others = Queue.objects.create(project=project, name="escalations")
    (foreign,) = make_items(others, 1, prefix="o")

    response = logged_in(alice).post(submit_url(queue), {"item": foreign.pk, "verdict": "correct"})

    assert response.status_code == 404
    assert not Label.objects.exists()


def test_get_is_not_allowed_on_submit_and_release(queue, alice):
    client = logged_in(alice)

    assert client.get(submit_url(queue)).status_code == 405
    assert client.get(release_url(queue)).status_code == 405


# --- skipping and the end of the queue -------------------------------------------------------


def test_skip_releases_the_item_and_serves_another(queue, alice, make_items):
    items = make_items(queue, 2)
    client = logged_in(alice)
    first, _ = open_item(client, queue)

    response = client.post(release_url(queue), {"item": first})

    assert response.status_code == 302 and response["Location"] == page_url(queue)
    assert Assignment.objects.get(item_id=first).status == Assignment.Status.RELEASED
    assert messages_of(response) == [f"Skipped item {first}."]
    second, _ = open_item(client, queue)
    assert (first, second) == (items[0].pk, items[1].pk)
    assert not Label.objects.exists()


def test_nothing_left(queue, alice, make_items):
    make_items(queue, 1)
    client = logged_in(alice)
    item_id, _ = open_item(client, queue)
    client.post(submit_url(queue), {"item": item_id, "verdict": "correct"})

    response = client.get(page_url(queue))

    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>Nothing left to label in review</h1>" in html
    assert f'href="{index_url()}">Back to my queues</a>' in html
    assert 'id="label-form"' not in html


def test_an_empty_queue_says_so_without_claiming(queue, alice):
    response = logged_in(alice).get(page_url(queue))

    assert "Nothing left to label in review" in response.content.decode()
    assert not Assignment.objects.exists()


# --- without JavaScript ----------------------------------------------------------------------


def test_plain_html_forms_with_csrf_label_and_skip(queue, alice, make_items):
    """A browser without JavaScript: read the form, post it back with its CSRF token."""
    items = make_items(queue, 3)
    client = logged_in(alice, enforce_csrf_checks=True)

    item_id, html = open_item(client, queue)
    assert f'<form method="post" action="{submit_url(queue)}" id="label-form"' in html
    assert f'<form method="post" action="{release_url(queue)}" id="skip-form">' in html
    # the skip button belongs to the skip form although it sits in the label form
    assert '<button type="submit" form="skip-form"' in html
    token = hidden(html, "csrfmiddlewaretoken")

    # without the token: refused
    assert (
        client.post(submit_url(queue), {"item": item_id, "verdict": "correct"}).status_code == 403
    )

    response = client.post(
        submit_url(queue),
        {
            "csrfmiddlewaretoken": token,
            "item": item_id,
            "started": hidden(html, "started"),
            "verdict": "correct",
        },
    )
    assert response.status_code == 302

    second, html = open_item(client, queue)
    response = client.post(
        release_url(queue),
        {"csrfmiddlewaretoken": hidden(html, "csrfmiddlewaretoken"), "item": second},
    )
    assert response.status_code == 302

    third, _ = open_item(client, queue)
    assert [item_id, second, third] == [i.pk for i in items]
    assert list(Label.objects.values_list("item_id", "verdict")) == [(items[0].pk, "correct")]


# --- presentation helpers --------------------------------------------------------------------


def test_shortcut_letters_are_deterministic_and_avoid_reserved_keys(project):
    from feedback.selectors import active_categories

    assert shortcut_letters(list(active_categories(project_id=project.pk))) == {
        "incorrect": "i",
        "incomplete": "n",
        "unsafe": "u",
        "biased": "b",
        "off_topic": "o",
        "too_slow": "t",
        "other": "h",
    }
    assert shortcut_letters(["spam", "slow", "s2"]) == {"spam": "p", "slow": "l", "s2": "a"}


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain text", {"text": "plain text"}),
        (None, {"empty": True}),
        (
            {"reply": "Hello", "tokens": 3},
            {"text": "Hello", "field": "reply", "raw": '{\n  "reply": "Hello",\n  "tokens": 3\n}'},
        ),
        (
            {"a": {"b": [1, 2]}},
            {"json": '{\n  "a": {\n    "b": [\n      1,\n      2\n    ]\n  }\n}'},
        ),
        ({"message": "x", "reply": "y"}, {"json": '{\n  "message": "x",\n  "reply": "y"\n}'}),
        ([1, "two"], {"json": '[\n  1,\n  "two"\n]'}),
    ],
)
def test_present(value, shown):
    assert present(value) == shown


def test_an_object_output_is_pretty_printed(project, queue, alice, make_reviewer):
    from feedback.models import Prediction

    prediction = Prediction.objects.create(
        project=project,
        external_id="loan-1",
        input={"income": 52000, "amount": 15000},
        output={"decision": "deny", "reasons": ["dti"]},
        occurred_at=timezone.now(),
        content_hash="y",
    )
    QueueItem.objects.create(queue=queue, prediction=prediction, inclusion_probability=1)

    html = logged_in(alice).get(page_url(queue)).content.decode()

    assert '<pre class="ws-json">{\n  &quot;decision&quot;: &quot;deny&quot;,' in html
    assert "ws-predicted-label" not in html  # no label, no confidence: not a classifier
    assert Membership.objects.filter(user=alice).exists()

"""A reviewer labels three items with the keyboard only, in a real browser.

Logs into the admin through its login form, opens the workspace, and for each item presses a
verdict digit, category letters and Enter; then checks the database holds exactly those labels.
(The README's screenshot of the workspace is taken by test_reviewer_label_choices.py.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.urls import reverse

from feedback.models import Membership, Project
from feedback.selectors import project_context
from feedback.services.intake import feedback_submit, predictions_log
from feedback.services.projects import membership_grant, project_create
from labeling.models import Label, Queue, QueueItem

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "reviewer-workspace.png"
# The committed screenshot is rewritten only on request, so a test run leaves the tree clean.
UPDATE_SCREENSHOT = os.environ.get("REDRESS_UPDATE_SCREENSHOTS") == "1"
PASSWORD = "pw-reviewer-123"

# Realistic traffic of a support assistant; the first one is a dispute, so it is served first.
ITEMS = [
    {
        "prediction": {
            "external_id": "conv-8841-turn-3",
            "model": "support-bot",
            "model_version": "2026-11-01",
            "input": {
                "message": (
                    "I was charged twice for my annual plan on Nov 3. Can I get the second "
                    "charge refunded? Order #A-20931."
                )
            },
            "output": {
                "reply": (
                    "Thanks for reaching out! Annual plans can be cancelled at any time from "
                    "Settings > Billing. Your plan will stay active until the end of the "
                    "current billing period."
                ),
                "tokens": 41,
                "latency_ms": 820,
            },
            "label": "cancel_subscription",
            "confidence": 0.62,
            "segment": {"locale": "en-US", "device": "ios", "plan": "annual"},
        },
        "feedback": {
            "kind": "dispute",
            "categories": ["incorrect", "off_topic"],
            "comment": (
                "I didn't ask how to cancel. I was billed twice and want the duplicate charge back."
            ),
            "correction": (
                "Duplicate charges are refunded automatically within 5 business days; I have "
                "opened refund R-5521 for order #A-20931."
            ),
        },
        "priority": QueueItem.PRIORITY_DISPUTE,
    },
    {
        "prediction": {
            "external_id": "conv-8902-turn-1",
            "model": "support-bot",
            "model_version": "2026-11-01",
            "input": {"message": "How do I change the email address on my account?"},
            "output": {
                "reply": "Go to Settings > Profile, edit the email field and confirm the link "
                "we send to the new address."
            },
            "label": "account_settings",
            "confidence": 0.94,
            "segment": {"locale": "en-GB", "device": "web"},
        },
        "feedback": {"kind": "rating", "rating": 1},
        "priority": 0,
    },
    {
        "prediction": {
            "external_id": "conv-8955-turn-2",
            "model": "support-bot",
            "model_version": "2026-11-01",
            "input": {"message": "Do you ship to Canada, and how long does it take?"},
            "output": {"reply": "Yes, we ship to Canada."},
            "label": "shipping",
            "confidence": 0.71,
            "segment": {"locale": "en-CA", "device": "android"},
        },
        "feedback": {
            "kind": "report",
            "rating": -1,
            "categories": ["incomplete"],
            "comment": "It ignored the second half of my question.",
        },
        "priority": 0,
    },
]

# What the reviewer types on each item, in the order they are served, and what it means.
KEYSTROKES = [
    (["2", "i", "o"], "incorrect", ["incorrect", "off_topic"]),
    (["1"], "correct", []),
    (["2", "n"], "incorrect", ["incomplete"]),
]


def seed() -> tuple[Project, Queue, list[QueueItem]]:
    project = project_create(slug="support-bot", name="Support bot")
    context = project_context(project=project)
    queue = Queue.objects.create(
        project=project,
        name="Refund disputes",
        overlap=1,
        lease_seconds=600,
        instructions=(
            "Judge whether the assistant's reply answers what the customer asked, following "
            "the refund policy (duplicate charges are always refunded).\n"
            "Pick every category that applies; write the reply it should have given when "
            "you mark it incorrect."
        ),
    )
    items = []
    for spec in ITEMS:
        (logged,) = predictions_log(context=context, items=[spec["prediction"]])
        assert logged.ok, logged.errors
        (given,) = feedback_submit(
            context=context,
            items=[{"prediction": logged.obj.external_id, **spec["feedback"]}],
        )
        assert given.ok, given.errors
        items.append(
            QueueItem.objects.create(
                queue=queue,
                prediction=logged.obj,
                feedback=given.obj,
                inclusion_probability=1.0,
                priority=spec["priority"],
            )
        )
    return project, queue, items


def reviewer_of(project: Project, queue: Queue):
    user = membership_grant(
        project=project, username="rita", role=Membership.Role.REVIEWER, password=PASSWORD
    ).user
    queue.reviewers.add(user)
    return user


def log_in_and_start(page, live_server) -> None:
    """Log in through the admin's form, follow "Label", start the (only) queue."""
    page.goto(f"{live_server.url}{reverse('admin:login')}")
    page.fill("#id_username", "rita")
    page.fill("#id_password", PASSWORD)
    with page.expect_navigation():
        page.click("input[type=submit]")
    with page.expect_navigation():
        page.click("#label-next-item")
    assert page.locator("#ws-queues tbody tr").count() == 1
    with page.expect_navigation():
        page.click("text=Start labeling")
    page.wait_for_selector("#ws-lease .ws-countdown:not([hidden])")  # the script is live


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_reviewer_labels_three_items_with_the_keyboard(live_server, page, tmp_path):
    # given: a project, a queue of three items, and a reviewer who can log into the admin
    project, queue, items = seed()
    reviewer = reviewer_of(project, queue)

    # when: she logs in through the admin's form and opens her queue
    log_in_and_start(page, live_server)

    served = []
    for position, (keys, _, categories) in enumerate(KEYSTROKES):
        item_id = int(page.inner_text("#ws-item-id"))
        assert item_id not in served, "a new item must load after each submission"
        served.append(item_id)
        page.wait_for_selector("#ws-lease .ws-countdown:not([hidden])")  # the script is live
        for key in keys:
            page.keyboard.press(key)
        for slug in categories:
            assert page.is_checked(f"#category-{slug}")
        if position == 0:
            page.mouse.move(0, 0)
            # docs/img/reviewer-workspace.png is test_reviewer_label_choices.py's (1440 px).
            shot = tmp_path / SCREENSHOT.name
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot))
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert (
            page.locator("ul.messagelist li.success")
            .inner_text()
            .startswith(f"Saved item {item_id}:")
        )

    # then: the queue is done, and the database holds exactly the three labels typed
    assert "Nothing left to label in Refund disputes" in page.inner_text("#content")
    assert served == [item.pk for item in items]  # dispute first, then by age
    labels = list(
        Label.objects.order_by("id").values_list("item_id", "reviewer", "verdict", "categories")
    )
    assert labels == [
        (item_id, reviewer.pk, verdict, categories)
        for item_id, (_, verdict, categories) in zip(served, KEYSTROKES, strict=True)
    ]
    assert all(
        seconds is not None and seconds >= 0
        for seconds in Label.objects.values_list("seconds_spent", flat=True)
    )
    assert shot.stat().st_size > 20_000


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_keys_typed_in_a_text_box_are_text_and_s_skips(live_server, page):
    project, queue, items = seed()
    reviewer_of(project, queue)
    log_in_and_start(page, live_server)
    first = int(page.inner_text("#ws-item-id"))

    # S skips: the lease is given back and another item is served
    with page.expect_navigation():
        page.keyboard.press("s")
    second = int(page.inner_text("#ws-item-id"))
    assert (first, second) == (items[0].pk, items[1].pk)
    assert page.locator("ul.messagelist li.info").inner_text() == f"Skipped item {first}."
    page.wait_for_selector("#ws-lease .ws-countdown:not([hidden])")

    # in the correction box, "2", "i" and "s" and Enter are just text
    page.keyboard.press("3")
    page.click("#correction")
    page.keyboard.type("2 is wrong, said it")
    page.keyboard.press("Enter")
    page.keyboard.type("twice")
    assert page.input_value("#correction") == "2 is wrong, said it\ntwice"
    assert page.is_checked("#verdict-unsure") and not page.is_checked("#verdict-incorrect")
    assert not page.is_checked("#category-incorrect")
    assert int(page.inner_text("#ws-item-id")) == second  # neither skipped nor submitted

    # Esc leaves the box so shortcuts work again; Ctrl+Enter submits from a text box
    page.keyboard.press("Escape")
    page.keyboard.press("2")
    page.click("#notes")
    with page.expect_navigation():
        page.keyboard.press("Control+Enter")

    label = Label.objects.get()
    assert (label.item_id, label.verdict) == (second, "incorrect")
    assert label.correction == "2 is wrong, said it\ntwice"

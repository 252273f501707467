"""A reviewer labels five items of a queue with label choices, keyboard only, in a real browser.

On the way: "1" alone takes the predicted label, a contradiction is refused with its reason and
answered by changing the verdict, Alt+C / Alt+N write a correction and a note, "?" shows the
shortcut list, "z" reopens the last label and the edit is saved with its history. The database
then holds the five labels, one of them with a revision holding its first answer.
Saves docs/img/reviewer-workspace.png at 1440 px on request (REDRESS_UPDATE_SCREENSHOTS=1).
"""

from __future__ import annotations

import pytest

from feedback.models import Membership
from feedback.selectors import project_context
from feedback.services.intake import feedback_submit, predictions_log
from feedback.services.projects import membership_grant, project_create
from labeling.models import Label, LabelRevision, Queue, QueueItem

from .test_reviewer_keyboard import PASSWORD, SCREENSHOT, UPDATE_SCREENSHOT

WIDE = {"width": 1440, "height": 900}
CHOICES = ["refund", "cancel_subscription", "account_settings", "shipping", "other"]
# (message, reply, predicted label, feedback or None)
ITEMS = [
    (
        "I was charged twice for my annual plan on Nov 3. Can I get the second charge refunded? "
        "Order #A-20931.",
        "Thanks for reaching out! Annual plans can be cancelled at any time from Settings > "
        "Billing. Your plan stays active until the end of the current billing period.",
        "cancel_subscription",
        {
            "kind": "dispute",
            "categories": ["incorrect", "off_topic"],
            "comment": "I didn't ask how to cancel. I was billed twice and want my money back.",
        },
    ),
    (
        "How do I change the email address on my account?",
        "Go to Settings > Profile, edit the email field and confirm the link we send you.",
        "account_settings",
        {"kind": "rating", "rating": 1},
    ),
    (
        "My parcel was marked delivered but it never arrived. I want my money back.",
        "Parcels can take up to 7 business days. Track it from Orders > Tracking.",
        "shipping",
        {"kind": "report", "rating": -1, "comment": "I asked for a refund."},
    ),
    (
        "Is there a student discount?",
        "We do not sell student plans.",
        "account_settings",
        None,
    ),
    (
        "Do you ship to Canada?",
        "Yes, we ship to Canada within 5 to 8 business days.",
        "shipping",
        None,
    ),
]


def seed():
    project = project_create(slug="support-bot", name="Support bot")
    context = project_context(project=project)
    queue = Queue.objects.create(
        project=project,
        name="Intent review",
        overlap=1,
        lease_seconds=600,
        label_choices=CHOICES,
        instructions="Is the reply right for what the customer asked? Pick the intent it "
        "should have been routed to.",
    )
    items = []
    for n, (message, reply, label, feedback) in enumerate(ITEMS):
        (logged,) = predictions_log(
            context=context,
            items=[
                {
                    "external_id": f"conv-{9100 + n}",
                    "model": "support-bot",
                    "model_version": "2026-11-01",
                    "input": {"message": message},
                    "output": {"reply": reply},
                    "label": label,
                    "confidence": 0.6 + n / 20,
                    "segment": {"locale": "en-US"},
                }
            ],
        )
        assert logged.ok, logged.errors
        given = None
        if feedback is not None:
            (given,) = feedback_submit(
                context=context,
                items=[{"prediction": logged.obj.external_id, **feedback}],
            )
            assert given.ok, given.errors
        items.append(
            QueueItem.objects.create(
                queue=queue,
                prediction=logged.obj,
                feedback=given.obj if given else None,
                inclusion_probability=1.0,
                priority=QueueItem.PRIORITY_DISPUTE if n == 0 else 0,
            )
        )
    user = membership_grant(
        project=project, username="rita", role=Membership.Role.REVIEWER, password=PASSWORD
    ).user
    queue.reviewers.add(user)
    return queue, items, user


def item_on_screen(page) -> int:
    page.wait_for_selector("#label-form")
    return int(page.inner_text("#ws-item-id"))


def submit(page, key: str = "Enter") -> None:
    with page.expect_navigation():
        page.keyboard.press(key)


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_five_items_with_label_choices_undo_and_edit_keyboard_only(live_server, browser, tmp_path):
    queue, items, rita = seed()
    context = browser.new_context(viewport=WIDE, device_scale_factor=1, locale="en-US")
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        # log in and reach the queue with the keyboard: type, Tab, Enter
        page.goto(f"{live_server.url}/admin/login/")
        page.keyboard.type("rita")
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        submit(page)
        page.goto(f"{live_server.url}/admin/labeling/queue/workspace/{queue.pk}/")

        # 1: the dispute. incorrect, routed to refund, category "incorrect", a correction
        first = item_on_screen(page)
        assert first == items[0].pk
        assert "5 left for you" in page.inner_text("#ws-progress")
        assert "0 done today" in page.inner_text("#ws-progress")
        page.wait_for_selector("#ws-lease .ws-countdown:not([hidden])")  # the script is live
        page.keyboard.press("?")
        assert page.is_visible("#ws-shortcuts")
        assert "Undo: reopen your last label" in page.inner_text("#ws-shortcuts")
        page.keyboard.press("Escape")
        assert not page.is_visible("#ws-shortcuts")
        for key in ["2", "r", "i"]:
            page.keyboard.press(key)
        page.keyboard.press("Alt+c")
        page.keyboard.type("Duplicate charges are refunded within 5 days: refund R-5521 is open.")
        page.keyboard.press("Escape")
        assert page.is_checked("#verdict-incorrect") and page.is_checked("#true-label-1")
        page.mouse.move(0, 0)
        shot = SCREENSHOT if UPDATE_SCREENSHOT else tmp_path / SCREENSHOT.name
        page.screenshot(path=str(shot))
        submit(page)
        assert "Saved item" in page.inner_text("ul.messagelist")

        # 2: "1" alone picks the predicted label
        second = item_on_screen(page)
        page.wait_for_selector("#ws-lease .ws-countdown:not([hidden])")
        page.keyboard.press("1")
        assert page.is_checked("#true-label-3")  # account_settings, the prediction
        submit(page)

        # 3: correct with another label is refused, with the reason; changing the verdict fixes it
        third = item_on_screen(page)
        page.wait_for_selector("#ws-lease .ws-countdown:not([hidden])")
        page.keyboard.press("1")
        page.keyboard.press("r")
        submit(page)
        assert int(page.inner_text("#ws-item-id")) == third
        assert "You marked the output correct but chose 'refund'" in page.inner_text(
            "#ws-true-label"
        )
        page.keyboard.press("2")  # incorrect keeps "refund": not the predicted label
        submit(page)

        # 4: unsure with a note
        fourth = item_on_screen(page)
        page.wait_for_selector("#ws-lease .ws-countdown:not([hidden])")
        page.keyboard.press("3")
        page.keyboard.press("Alt+n")
        page.keyboard.type("Depends on the student plan launch.")
        submit(page, "Control+Enter")

        # on the fifth: z reopens the fourth, which becomes incorrect / other
        fifth = item_on_screen(page)
        assert "3 done today" not in page.inner_text("#ws-progress")
        assert "4 done today" in page.inner_text("#ws-progress")
        page.wait_for_selector("#ws-lease .ws-countdown:not([hidden])")
        with page.expect_navigation():
            page.keyboard.press("z")
        page.wait_for_selector("#ws-editing")
        assert int(page.inner_text("#ws-item-id")) == fourth
        assert page.is_checked("#verdict-unsure")
        page.keyboard.press("2")
        page.keyboard.press("e")  # other
        submit(page)
        assert "Changed your label on item" in page.inner_text("ul.messagelist")

        # back on the fifth (still held): correct
        assert item_on_screen(page) == fifth
        page.wait_for_selector("#ws-lease .ws-countdown:not([hidden])")
        page.keyboard.press("1")
        submit(page)
        assert "Nothing left to label in Intent review" in page.inner_text("#content")
    finally:
        context.close()

    # then: five labels, as typed, the edit with its history
    assert [first, second, third, fourth, fifth] == [i.pk for i in items]
    labels = {label.item_id: label for label in Label.objects.filter(reviewer=rita).order_by("id")}
    assert len(labels) == 5
    summary = [
        (labels[i.pk].verdict, labels[i.pk].true_label, labels[i.pk].categories) for i in items
    ]
    assert summary == [
        ("incorrect", "refund", ["incorrect"]),
        ("correct", "account_settings", []),
        ("incorrect", "refund", []),
        ("incorrect", "other", []),
        ("correct", "shipping", []),
    ]
    assert labels[first].correction.startswith("Duplicate charges are refunded")
    assert labels[fourth].notes == "Depends on the student plan launch."
    (revision,) = LabelRevision.objects.all()
    assert revision.label_id == labels[fourth].pk and revision.changed_by == rita
    assert (revision.content["verdict"], revision.content["true_label"]) == ("unsure", "")
    assert revision.content["notes"] == "Depends on the student plan launch."
    assert shot.stat().st_size > 20_000

"""The webhooks admin: the secret shown once by message, never in a form; read-only deliveries
with their attempt log; Redeliver and Send test actions; only the project's admins."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.db import transaction
from django.test import Client

from config.celery import app
from feedback.models import Membership
from feedback.services.events import event_emit
from webhooks.models import Webhook, WebhookDelivery
from webhooks.services.dispatch import delivery_attempt, event_fan_out

from .receiver import Receiver, sequence

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_browser(project_admin):
    client = Client()
    client.force_login(project_admin)
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_adding_an_endpoint_shows_its_secret_once(admin_browser, project):
    form = admin_browser.get("/admin/webhooks/webhook/add/")
    assert form.status_code == 200 and b"whsec_" not in form.content

    response = admin_browser.post("/admin/webhooks/webhook/add/", {
        "project": project.pk, "url": "https://example.com/hooks", "events": ["dispute.resolved"],
        "format": "standard", "description": "", "active": "on",
    }, follow=True)

    hook = Webhook.objects.get()
    assert hook.events == ["dispute.resolved"]
    assert any(hook.secret in message for message in messages_of(response))
    change = admin_browser.get(f"/admin/webhooks/webhook/{hook.pk}/change/")
    assert change.status_code == 200 and hook.secret.encode() not in change.content


def test_the_admin_form_refuses_a_private_address(admin_browser, project, settings):
    settings.REDRESS_WEBHOOK_ALLOW_PRIVATE = False
    response = admin_browser.post("/admin/webhooks/webhook/add/", {
        "project": project.pk, "url": "http://192.168.0.10/hook", "events": ["*"],
        "format": "standard",
    })
    assert response.status_code == 200 and b"private" in response.content
    assert not Webhook.objects.exists()


def test_rotate_and_send_test_actions(admin_browser, make_webhook):
    with Receiver(sequence(200)) as receiver:
        hook = make_webhook(receiver.url())
        old = hook.secret
        rotated = admin_browser.post("/admin/webhooks/webhook/", {
            "action": "rotate_secret", "_selected_action": [hook.pk]}, follow=True)
        tested = admin_browser.post("/admin/webhooks/webhook/", {
            "action": "send_test", "_selected_action": [hook.pk]}, follow=True)

    hook.refresh_from_db()
    assert hook.secret != old
    assert any(hook.secret in m for m in messages_of(rotated))
    assert any("delivered (HTTP 200)" in m for m in messages_of(tested))
    assert receiver.requests[0].headers["webhook-id"].startswith("evt_")


def test_deliveries_are_read_only_with_their_log_and_can_be_redelivered(
    admin_browser, project, make_webhook, django_capture_on_commit_callbacks
):
    with Receiver(sequence(500, 200)) as receiver:
        make_webhook(receiver.url())
        with transaction.atomic():
            event = event_emit(project_id=project.pk, type="export.finished", data={"id": 4})
        (delivery_id,) = event_fan_out(event_id=event.pk)
        delivery_attempt(delivery_id=delivery_id, force=True)

        page = admin_browser.get(f"/admin/webhooks/webhookdelivery/{delivery_id}/change/")
        app.conf.task_always_eager = True
        try:
            with django_capture_on_commit_callbacks(execute=True):
                admin_browser.post("/admin/webhooks/webhookdelivery/", {
                    "action": "redeliver", "_selected_action": [delivery_id]})
        finally:
            app.conf.task_always_eager = False

    assert page.status_code == 200
    assert b"HTTP 500" in page.content and event.uid.encode() in page.content
    assert b'name="_save"' not in page.content  # read-only: no save button
    assert WebhookDelivery.objects.get(pk=delivery_id).status == "succeeded"
    assert [r.headers["webhook-id"] for r in receiver.requests] == [event.uid, event.uid]


def test_only_project_admins_see_webhooks(make_person, make_webhook, other_project):
    make_webhook("https://example.com/a")
    theirs = make_webhook("https://example.com/b", in_project=other_project)
    scientist = Client()
    scientist.force_login(make_person(Membership.Role.DATA_SCIENTIST))
    outsider = Client()
    outsider.force_login(make_person(Membership.Role.ADMIN, in_project=other_project))

    assert scientist.get("/admin/webhooks/webhook/").status_code == 403
    listing = outsider.get("/admin/webhooks/webhook/")
    assert listing.status_code == 200
    assert b"example.com/b" in listing.content and b"example.com/a" not in listing.content
    assert outsider.get(f"/admin/webhooks/webhook/{theirs.pk}/change/").status_code == 200

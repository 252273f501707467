"""Deliveries over real HTTP: signatures verified with the ``standardwebhooks`` package, retries
under one webhook-id, timeouts, redirects, 410, private addresses, the outbox's transaction."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import standardwebhooks
from django.core import mail
from django.db import transaction
from django.utils import timezone

from feedback.models import Feedback, Membership, OutboxEvent
from feedback.selectors import project_context
from feedback.services.disputes import dispute_resolve
from feedback.services.events import event_emit
from feedback.services.intake import feedback_submit
from webhooks import transport
from webhooks.models import Webhook, WebhookDelivery
from webhooks.services.dispatch import delivery_attempt, event_fan_out, webhooks_sweep

from .receiver import Receiver, sequence

pytestmark = pytest.mark.django_db


def emit(project, type="export.finished", data=None) -> OutboxEvent:
    with transaction.atomic():
        return event_emit(project_id=project.pk, type=type, data=data or {"id": 7, "rows": 3})


def deliver_now(delivery_id: int) -> WebhookDelivery:
    delivery, _ = delivery_attempt(delivery_id=delivery_id, force=True)
    assert delivery is not None
    return delivery


def test_a_delivery_is_signed_per_standard_webhooks_and_verifies(project, receiver, make_webhook):
    hook = make_webhook(receiver.url())
    event = emit(project)

    (delivery_id,) = event_fan_out(event_id=event.pk)
    delivery = deliver_now(delivery_id)

    assert delivery.status == "succeeded" and delivery.attempts == 1
    assert delivery.last_response_status == 200
    (request,) = receiver.requests
    assert request.path == "/hook"
    assert request.headers["webhook-id"] == event.uid and event.uid.startswith("evt_")
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 30
    payload = standardwebhooks.Webhook(hook.secret).verify(request.body, request.headers)
    assert payload == {
        "type": "export.finished",
        "timestamp": event.created_at.isoformat().replace("+00:00", "Z"),
        "data": {"id": 7, "rows": 3},
    }
    # A wrong secret does not verify: the signature really is keyed.
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(Webhook(project=project).secret).verify(
            request.body, request.headers
        )
    assert delivery.log[0]["status"] == 200 and delivery.log[0]["error"] == ""


def test_fan_out_reaches_only_subscribed_active_endpoints_once(project, other_project,
                                                               receiver, make_webhook):
    wanted = make_webhook(receiver.url("/a"), events=["export.finished"])
    everything = make_webhook(receiver.url("/b"), events=["*"])
    make_webhook(receiver.url("/c"), events=["dispute.resolved"])
    make_webhook(receiver.url("/d"), active=False)
    make_webhook(receiver.url("/e"), in_project=other_project)
    event = emit(project)

    first = event_fan_out(event_id=event.pk)
    again = event_fan_out(event_id=event.pk)

    assert first == again and len(first) == 2
    assert set(WebhookDelivery.objects.values_list("webhook_id", flat=True)) == {
        wanted.pk, everything.pk}


def test_fails_twice_then_succeeds_three_attempts_one_webhook_id(project, make_webhook, settings):
    settings.REDRESS_WEBHOOK_RETRY_SECONDS = [0, 0, 0]
    with Receiver(sequence(500, 503, 200)) as receiver:
        hook = make_webhook(receiver.url())
        event = emit(project)
        (delivery_id,) = event_fan_out(event_id=event.pk)
        statuses = []
        for _ in range(3):
            delivery, _ = delivery_attempt(delivery_id=delivery_id)
            statuses.append((delivery.status, delivery.last_response_status))
        # Done: a fourth call finds nothing to send.
        assert delivery_attempt(delivery_id=delivery_id) == (None, None)

    assert statuses == [("retrying", 500), ("retrying", 503), ("succeeded", 200)]
    assert len(receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in receiver.requests} == {event.uid}
    assert len({r.body for r in receiver.requests}) == 1  # the same bytes every time
    for request in receiver.requests:  # each attempt signed afresh, each verifies
        standardwebhooks.Webhook(hook.secret).verify(request.body, request.headers)
    delivery = WebhookDelivery.objects.get(pk=delivery_id)
    assert delivery.attempts == 3
    assert [entry["status"] for entry in delivery.log] == [500, 503, 200]
    assert Webhook.objects.get(pk=hook.pk).failing_since is None  # the success cleared it


def test_backoff_follows_the_schedule_with_jitter_then_fails(project, make_webhook, settings):
    settings.REDRESS_WEBHOOK_RETRY_SECONDS = [10, 100]
    with Receiver(sequence(500)) as receiver:
        make_webhook(receiver.url())
        (delivery_id,) = event_fan_out(event_id=emit(project).pk)
        delays = []
        for _ in range(3):
            delivery, delay = delivery_attempt(delivery_id=delivery_id, force=True)
            delays.append(delay)

    assert 8 <= delays[0] <= 12 and 80 <= delays[1] <= 120 and delays[2] is None
    assert delivery.status == "failed" and delivery.attempts == 3
    assert delivery.next_attempt_at is None
    assert len(receiver.requests) == 3
    # Not due yet: a plain (unforced) attempt of a retrying delivery waits for its time.
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        status="retrying", next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    assert delivery_attempt(delivery_id=delivery_id) == (None, None)


def test_a_receiver_that_hangs_costs_one_timeout(project, make_webhook, settings):
    settings.REDRESS_WEBHOOK_TIMEOUT = 0.5
    with Receiver(sequence(None)) as receiver:
        make_webhook(receiver.url())
        (delivery_id,) = event_fan_out(event_id=emit(project).pk)
        started = time.monotonic()
        delivery = deliver_now(delivery_id)
        elapsed = time.monotonic() - started

    assert 0.4 <= elapsed < 2.0
    assert delivery.status == "retrying" and delivery.last_response_status is None
    assert delivery.last_error.startswith("timeout")
    assert delivery.locked_until is None  # the claim is released: the retry can run
    assert len(receiver.requests) == 1


def test_a_redirect_is_not_followed(project, make_webhook):
    def redirect(i, request):
        if request.path == "/hook":
            return 302, {"Location": "/elsewhere"}, b""
        return 200, {}, b""

    with Receiver(redirect) as receiver:
        make_webhook(receiver.url())
        (delivery_id,) = event_fan_out(event_id=emit(project).pk)
        delivery = deliver_now(delivery_id)

    assert [r.path for r in receiver.requests] == ["/hook"]
    assert delivery.status == "retrying" and delivery.last_response_status == 302
    assert "redirects are not followed" in delivery.last_error


def test_410_disables_the_endpoint_and_emails_its_admins(project, make_webhook, make_person):
    admin = make_person(Membership.Role.ADMIN)
    make_person(Membership.Role.DATA_SCIENTIST)
    with Receiver(sequence(410)) as receiver:
        hook = make_webhook(receiver.url())
        (delivery_id,) = event_fan_out(event_id=emit(project).pk)
        delivery = deliver_now(delivery_id)
        # Later events are not fanned out to a disabled endpoint.
        assert event_fan_out(event_id=emit(project).pk) == []

    hook.refresh_from_db()
    assert delivery.status == "failed" and delivery.last_response_status == 410
    assert not hook.active and hook.disabled_at is not None and "410" in hook.disabled_reason
    (message,) = mail.outbox
    assert message.to == [admin.email] and hook.url in message.subject
    assert len(receiver.requests) == 1


def test_a_day_of_failures_disables_the_endpoint_once(project, make_webhook, project_admin):
    with Receiver(sequence(500)) as receiver:
        hook = make_webhook(receiver.url())
        (first,) = event_fan_out(event_id=emit(project).pk)
        deliver_now(first)
        hook.refresh_from_db()
        assert hook.active and hook.failing_since is not None
        Webhook.objects.filter(pk=hook.pk).update(
            failing_since=timezone.now() - timedelta(hours=25)
        )
        deliver_now(first)

    hook.refresh_from_db()
    assert not hook.active and "failed since" in hook.disabled_reason
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [project_admin.email]
    # A delivery still open for a disabled endpoint fails without a request.
    requests_before = len(receiver.requests)
    delivery = deliver_now(first)
    assert delivery.status == "failed" and delivery.last_error == "endpoint disabled"
    assert len(receiver.requests) == requests_before


def test_a_rolled_back_dispute_resolution_sends_nothing(project, prediction_factory, receiver,
                                                        make_webhook):
    make_webhook(receiver.url(), events=["dispute.resolved"])
    prediction_factory(project=project, external_id="chat-1")
    (result,) = feedback_submit(context=project_context(project=project),
                                items=[{"prediction": "chat-1", "kind": "dispute"}])

    with pytest.raises(RuntimeError), transaction.atomic():
        dispute_resolve(dispute_id=result.obj.pk, upheld=True, note="refund due")
        assert OutboxEvent.objects.filter(type="dispute.resolved").count() == 1
        raise RuntimeError("the caller's transaction fails after the resolution")

    assert OutboxEvent.objects.filter(type="dispute.resolved").count() == 0
    assert Feedback.objects.get(pk=result.obj.pk).status == "open"
    webhooks_sweep(enqueue_delivery=lambda pk: delivery_attempt(delivery_id=pk, force=True))
    assert WebhookDelivery.objects.count() == 0 and receiver.requests == []

    # The committed resolution is delivered, with the data API.md names.
    dispute_resolve(dispute_id=result.obj.pk, upheld=True, note="refund due")
    later = timezone.now() + timedelta(minutes=1)  # its own task never came (no broker here)
    webhooks_sweep(enqueue_delivery=lambda pk: delivery_attempt(delivery_id=pk, force=True),
                   now=later)
    (request,) = receiver.requests
    body = json.loads(request.body)
    assert body["type"] == "dispute.resolved"
    assert body["data"]["id"] == result.obj.pk and body["data"]["prediction"] == "chat-1"
    assert body["data"]["status"] == "upheld" and body["data"]["resolution_note"] == "refund due"
    assert body["data"]["resolved_at"].startswith(str(timezone.now().year))


def test_private_and_loopback_targets_are_refused_without_the_setting(project, receiver,
                                                                      make_webhook, settings):
    settings.REDRESS_WEBHOOK_ALLOW_PRIVATE = False
    by_address = make_webhook(receiver.url())
    by_name = make_webhook(f"http://localhost:{receiver.port}/hook")  # resolves to 127.0.0.1
    deliveries = event_fan_out(event_id=emit(project).pk)

    results = [deliver_now(pk) for pk in deliveries]

    assert receiver.requests == []
    assert {d.webhook_id for d in results} == {by_address.pk, by_name.pk}
    for delivery in results:
        assert delivery.status == "retrying"
        assert delivery.last_error.startswith("private_address")
    assert "localhost resolves to 127.0.0.1" in next(
        d.last_error for d in results if d.webhook_id == by_name.pk
    )


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("224.0.0.1", False),
    ],
)
def test_address_check(address, allowed):
    assert transport.address_allowed(address) is allowed


def test_every_resolved_address_is_checked(monkeypatch):
    # A name resolving to one public and one private address is refused: checking only the
    # first would let DNS smuggle the private one in.
    import socket

    def fake_getaddrinfo(host, port, type=0):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(transport.TransportError) as refused:
        transport.resolve("mixed.example", 443, allow_private=False)
    assert refused.value.code == "private_address" and "10.0.0.5" in refused.value.detail
    assert transport.resolve("mixed.example", 443, allow_private=True) == "93.184.216.34"


def test_a_refused_connection_is_retried(project, make_webhook):
    with Receiver() as receiver:
        url = receiver.url()
    # The receiver is gone: nothing listens on its port any more.
    make_webhook(url)
    (delivery_id,) = event_fan_out(event_id=emit(project).pk)
    delivery = deliver_now(delivery_id)
    assert delivery.status == "retrying"
    assert delivery.last_error.startswith("connection_refused")


def test_a_duplicate_attempt_is_refused_while_one_is_in_flight(project, receiver, make_webhook):
    make_webhook(receiver.url())
    (delivery_id,) = event_fan_out(event_id=emit(project).pk)
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        locked_until=timezone.now() + timedelta(seconds=60)
    )
    assert delivery_attempt(delivery_id=delivery_id, force=True) == (None, None)
    assert receiver.requests == []


def test_slack_format_for_alert_events(project, receiver, make_webhook):
    make_webhook(receiver.url(), format="slack")
    event = emit(project, type="alert.fired", data={
        "rule": 3, "name": "Dispute rate de-DE", "metric": "dispute_rate", "value": 0.084,
        "interval": [0.061, 0.112], "volume": 1200, "window": "24h",
    })
    (delivery_id,) = event_fan_out(event_id=event.pk)
    assert deliver_now(delivery_id).status == "succeeded"

    body = json.loads(receiver.requests[0].body)
    assert set(body) == {"text", "blocks"}
    assert "Dispute rate de-DE" in body["text"] and "dispute_rate = 0.084" in body["text"]
    assert "0.061 to 0.112" in body["text"] and "n = 1200" in body["text"]
    assert body["blocks"][0]["text"]["text"] == body["text"]

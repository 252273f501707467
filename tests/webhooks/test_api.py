"""The webhooks REST API and POST /disputes/{id}/resolve: who may call them, what they answer."""

from __future__ import annotations

import base64

import pytest
import standardwebhooks
from django.db import transaction

from config.celery import app
from feedback.models import Membership, OutboxEvent
from feedback.selectors import project_context
from feedback.services.events import event_emit
from feedback.services.intake import feedback_submit
from webhooks.models import Webhook, WebhookDelivery
from webhooks.services.dispatch import event_fan_out

from ..conftest import client_for
from .receiver import Receiver, sequence

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(project_admin):
    return client_for(token=project_admin.token)


def create(client, project, url, **extra):
    body = {"project": project.slug, "url": url, "events": ["dispute.resolved"], **extra}
    return client.post("/api/v1/webhooks", body, format="json")


def test_create_shows_the_secret_once(admin_client, project, receiver):
    response = create(admin_client, project, receiver.url(), description="app backend")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["project"] == project.slug and body["events"] == ["dispute.resolved"]
    assert body["format"] == "standard" and body["active"] is True
    assert body["secret"].startswith("whsec_")
    assert len(base64.b64decode(body["secret"].removeprefix("whsec_"))) == 32
    assert Webhook.objects.get(pk=body["id"]).secret == body["secret"]
    shown = admin_client.get(f"/api/v1/webhooks/{body['id']}").json()
    assert "secret" not in shown and shown["url"] == receiver.url()
    (listed,) = admin_client.get("/api/v1/webhooks").json()
    assert "secret" not in listed and listed["id"] == body["id"]


def test_rotate_patch_and_delete(admin_client, project, receiver):
    first = create(admin_client, project, receiver.url()).json()

    rotated = admin_client.post(f"/api/v1/webhooks/{first['id']}/rotate-secret")
    patched = admin_client.patch(f"/api/v1/webhooks/{first['id']}",
                                 {"events": ["*"], "format": "slack"}, format="json")
    deleted = admin_client.delete(f"/api/v1/webhooks/{first['id']}")

    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != first["secret"]
    assert patched.status_code == 200
    assert patched.json()["events"] == ["*"] and patched.json()["format"] == "slack"
    assert deleted.status_code == 204 and not Webhook.objects.exists()
    assert admin_client.get(f"/api/v1/webhooks/{first['id']}").status_code == 404


def test_reactivating_clears_the_disabled_state(admin_client, project, make_webhook):
    from django.utils import timezone

    hook = make_webhook("https://example.com/h", active=False, disabled_at=timezone.now(),
                        disabled_reason="The endpoint answered 410 Gone.")
    body = admin_client.patch(f"/api/v1/webhooks/{hook.pk}", {"active": True},
                              format="json").json()
    assert body["active"] is True and body["disabled_at"] is None
    assert body["disabled_reason"] == ""


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"url": "ftp://example.com/x"}, "url", "invalid"),
        ({"url": "http://10.0.0.8/hook"}, "url", "private_address"),
        ({"url": "http://[::1]:8000/hook"}, "url", "private_address"),
        ({"url": "http://localhost:8000/hook"}, "url", "private_address"),
        ({"url": "https://user:pw@example.com/hook"}, "url", "invalid"),
        ({"events": []}, "events", "invalid"),
        ({"events": ["dispute.closed"]}, "events", "invalid_choice"),
        ({"events": ["*", "alert.fired"]}, "events", "invalid"),
        ({"format": "teams"}, "format", "invalid_choice"),
        ({"secret": "whsec_mine"}, "secret", "unknown_field"),
        ({"project": "nope"}, "project", "not_found"),
    ],
)
def test_create_refuses_bad_input_naming_the_field(admin_client, project, settings, body, field,
                                                   code):
    settings.REDRESS_WEBHOOK_ALLOW_PRIVATE = False
    payload = {"project": project.slug, "url": "https://example.com/hook", "events": ["*"],
               **body}
    response = admin_client.post("/api/v1/webhooks", payload, format="json")
    assert response.status_code in (400, 404)
    assert response.status_code == (404 if code == "not_found" else 400)
    (error,) = response.json()["errors"]
    assert (error["field"], error["code"]) == (field, code)
    assert not Webhook.objects.exists()


def test_only_project_admins_manage_webhooks(project, other_project, make_person, make_webhook,
                                             data_key, admin_client):
    hook = make_webhook("https://example.com/mine")
    theirs = make_webhook("https://example.com/theirs", in_project=other_project)
    scientist = client_for(token=make_person(Membership.Role.DATA_SCIENTIST).token)
    reviewer = client_for(token=make_person(Membership.Role.REVIEWER).token)
    key = client_for(data_key)
    # An admin of another project only: their project's hooks, not ours.
    outsider = client_for(token=make_person(Membership.Role.ADMIN, in_project=other_project).token)

    for client in (scientist, reviewer, key):
        assert client.get("/api/v1/webhooks").status_code == 403
        assert client.get(f"/api/v1/webhooks/{hook.pk}").status_code == 403
        assert create(client, project, "https://example.com/x").status_code == 403
        assert client.post(f"/api/v1/webhooks/{hook.pk}/rotate-secret").status_code == 403
    assert client_for().get("/api/v1/webhooks").status_code == 401
    assert admin_client.get(f"/api/v1/webhooks/{theirs.pk}").status_code == 404
    assert admin_client.delete(f"/api/v1/webhooks/{theirs.pk}").status_code == 404
    assert admin_client.post(f"/api/v1/webhooks/{theirs.pk}/test").status_code == 404
    assert outsider.get(f"/api/v1/webhooks/{hook.pk}").status_code == 404
    assert create(outsider, project, "https://example.com/x").status_code == 404
    assert [h["id"] for h in admin_client.get("/api/v1/webhooks").json()] == [hook.pk]
    assert Webhook.objects.count() == 2


def test_list_takes_a_fixed_number_of_queries(admin_client, project, make_webhook,
                                              django_assert_num_queries):
    for i in range(5):
        make_webhook(f"https://example.com/{i}")
    # session-less token auth, the admin check, the list with its projects
    with django_assert_num_queries(3):
        assert len(admin_client.get("/api/v1/webhooks").json()) == 5


def test_test_send_reports_the_first_attempt(admin_client, project, make_webhook):
    with Receiver(sequence(200, 500)) as receiver:
        hook = make_webhook(receiver.url(), events=["alert.fired"])
        ok = admin_client.post(f"/api/v1/webhooks/{hook.pk}/test")
        failing = admin_client.post(f"/api/v1/webhooks/{hook.pk}/test")

    assert ok.status_code == 200
    assert ok.json()["status"] == "succeeded" and ok.json()["event_type"] == "webhook.test"
    assert failing.json()["status"] == "retrying"
    assert failing.json()["last_response_status"] == 500
    payload = standardwebhooks.Webhook(hook.secret).verify(receiver.requests[0].body,
                                                           receiver.requests[0].headers)
    assert payload["type"] == "webhook.test" and payload["data"]["webhook"] == hook.pk


def test_deliveries_and_redelivery_keep_the_webhook_id(admin_client, project, make_webhook,
                                                       django_capture_on_commit_callbacks):
    with Receiver() as receiver:
        hook = make_webhook(receiver.url())
        with transaction.atomic():
            event = event_emit(project_id=project.pk, type="export.finished", data={"id": 1})
        (delivery_id,) = event_fan_out(event_id=event.pk)
        WebhookDelivery.objects.filter(pk=delivery_id).update(status="failed", attempts=7)

        app.conf.task_always_eager = True
        try:
            with django_capture_on_commit_callbacks(execute=True):
                redelivered = admin_client.post(
                    f"/api/v1/webhook-deliveries/{delivery_id}/redeliver"
                )
        finally:
            app.conf.task_always_eager = False
        listed = admin_client.get(f"/api/v1/webhooks/{hook.pk}/deliveries").json()

    assert redelivered.status_code == 202
    assert [r.headers["webhook-id"] for r in receiver.requests] == [event.uid]
    (row,) = listed
    assert row["id"] == delivery_id and row["event_id"] == event.uid
    assert row["event_type"] == "export.finished" and row["status"] == "succeeded"
    assert row["attempts"] == 8 and row["attempt_log"][-1]["status"] == 200
    assert admin_client.get(f"/api/v1/webhooks/{hook.pk}/deliveries?status=nope").status_code \
        == 400
    assert admin_client.get(f"/api/v1/webhooks/{hook.pk}/deliveries?limit=0").status_code == 400
    Webhook.objects.filter(pk=hook.pk).update(active=False)
    refused = admin_client.post(f"/api/v1/webhook-deliveries/{delivery_id}/redeliver")
    assert refused.status_code == 409 and refused.json()["errors"][0]["code"] == "disabled"


# --- POST /disputes/{id}/resolve ------------------------------------------------------------


@pytest.fixture
def dispute(project, prediction_factory):
    prediction_factory(project=project, external_id="chat-77")
    (result,) = feedback_submit(context=project_context(project=project),
                                items=[{"prediction": "chat-77", "kind": "dispute"}])
    return result.obj


def test_resolve_answers_with_the_dispute_and_emits_the_event(admin_client, dispute):
    response = admin_client.post(f"/api/v1/disputes/{dispute.pk}/resolve",
                                 {"status": "upheld", "resolution_note": "Refund was due."},
                                 format="json")
    again = admin_client.post(f"/api/v1/disputes/{dispute.pk}/resolve",
                              {"status": "rejected", "resolution_note": "No."}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == dispute.pk and body["status"] == "upheld"
    assert body["resolution_note"] == "Refund was due." and body["resolved_at"]
    assert again.status_code == 409
    assert again.json()["errors"][0]["code"] == "already_resolved"
    (event,) = OutboxEvent.objects.filter(type="dispute.resolved")
    assert event.data["prediction"] == "chat-77" and event.data["status"] == "upheld"
    assert event.data["resolved_at"][:19] == body["resolved_at"][:19]


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"status": "maybe", "resolution_note": "x"}, "status", "invalid_choice"),
        ({"status": "upheld"}, "resolution_note", "required"),
        ({"status": "upheld", "resolution_note": "   "}, "resolution_note", "required"),
    ],
)
def test_resolve_refuses_bad_input(admin_client, dispute, body, field, code):
    response = admin_client.post(f"/api/v1/disputes/{dispute.pk}/resolve", body, format="json")
    assert response.status_code == 400
    assert (response.json()["errors"][0]["field"], response.json()["errors"][0]["code"]) == (
        field, code)
    dispute.refresh_from_db()
    assert dispute.status == "open"


def test_resolve_is_for_project_admins(dispute, make_person, other_project, ingest_key, data_key):
    body = {"status": "rejected", "resolution_note": "Output was right."}
    url = f"/api/v1/disputes/{dispute.pk}/resolve"
    scientist = client_for(token=make_person(Membership.Role.DATA_SCIENTIST).token)
    reviewer = client_for(token=make_person(Membership.Role.REVIEWER).token)
    outsider = client_for(token=make_person(Membership.Role.ADMIN, in_project=other_project).token)

    assert scientist.post(url, body, format="json").status_code == 403
    assert reviewer.post(url, body, format="json").status_code == 403
    assert client_for(ingest_key).post(url, body, format="json").status_code == 403
    assert client_for(data_key).post(url, body, format="json").status_code == 403
    assert outsider.post(url, body, format="json").status_code == 404
    assert client_for().post(url, body, format="json").status_code == 401
    dispute.refresh_from_db()
    assert dispute.status == "open"


def test_the_schema_documents_every_webhook_operation_and_status(admin_client):
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    paths = schema["paths"]
    expected = {
        ("/api/v1/webhooks", "get"): {"200", "401", "403"},
        ("/api/v1/webhooks", "post"): {"201", "400", "401", "403", "404"},
        ("/api/v1/webhooks/{id}", "get"): {"200", "401", "403", "404"},
        ("/api/v1/webhooks/{id}", "patch"): {"200", "400", "401", "403", "404"},
        ("/api/v1/webhooks/{id}", "delete"): {"204", "401", "403", "404"},
        ("/api/v1/webhooks/{id}/rotate-secret", "post"): {"200", "401", "403", "404"},
        ("/api/v1/webhooks/{id}/test", "post"): {"200", "401", "403", "404"},
        ("/api/v1/webhooks/{id}/deliveries", "get"): {"200", "400", "401", "403", "404"},
        ("/api/v1/webhook-deliveries/{id}/redeliver", "post"): {"202", "401", "403", "404",
                                                                 "409"},
        ("/api/v1/disputes/{id}/resolve", "post"): {"200", "400", "401", "403", "404", "409"},
    }
    for (path, method), statuses in expected.items():
        assert set(paths[path][method]["responses"]) >= statuses, (path, method)
    components = schema["components"]["schemas"]
    assert "secret" in components["WebhookWithSecret"]["properties"]
    assert "secret" not in components["Webhook"]["properties"]

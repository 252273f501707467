"""Webhook endpoints: create, change, delete, rotate the secret, send a test event."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from feedback.errors import FieldError, InvalidInput
from feedback.models import Project
from feedback.services.events import EVENT_TYPES, TEST_EVENT, event_emit

from .. import transport
from ..models import Webhook, WebhookDelivery, new_webhook_secret
from .dispatch import delivery_attempt, event_fan_out

URL_MAX = 2000
DESCRIPTION_MAX = 1000


def _person(actor: Any) -> AbstractBaseUser | None:
    return actor if actor is not None and getattr(actor, "pk", None) else None


def clean_url(url: Any, errors: list[FieldError]) -> str | None:
    if not isinstance(url, str) or not url.strip():
        errors.append(FieldError("url", "required", "The endpoint's URL, https://…"))
        return None
    url = url.strip()
    if len(url) > URL_MAX:
        errors.append(FieldError("url", "too_long", f"At most {URL_MAX} characters."))
        return None
    problem = transport.url_problem(url)
    if problem:
        errors.append(FieldError("url", "invalid", problem[0].upper() + problem[1:] + "."))
        return None
    host = urlsplit(url).hostname or ""
    if not settings.REDRESS_WEBHOOK_ALLOW_PRIVATE:
        # Addresses written in the URL are refused now; names are checked at every delivery.
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if (literal is not None and not transport.address_allowed(host)) or host in (
            "localhost", "localhost.localdomain"
        ) or host.endswith(".localhost"):
            errors.append(FieldError(
                "url", "private_address",
                f"{host} is a private, loopback or link-local address; deliveries to it are "
                "refused unless REDRESS_WEBHOOK_ALLOW_PRIVATE=true.",
            ))
            return None
    return url


def clean_events(events: Any, errors: list[FieldError]) -> list[str] | None:
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        errors.append(FieldError(
            "events", "invalid", 'A non-empty list of event types, or ["*"] for all of them.'
        ))
        return None
    unknown = [e for e in events if e != "*" and e not in EVENT_TYPES]
    if unknown:
        errors.append(FieldError(
            "events", "invalid_choice",
            f"Unknown event type(s) {', '.join(unknown)}; one of {', '.join(EVENT_TYPES)} or *.",
        ))
        return None
    if "*" in events and len(events) > 1:
        errors.append(FieldError("events", "invalid", '"*" already means every event.'))
        return None
    return list(dict.fromkeys(events))


def _clean(data: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    errors: list[FieldError] = []
    clean: dict[str, Any] = {}
    if not partial or "url" in data:
        clean["url"] = clean_url(data.get("url"), errors)
    if not partial or "events" in data:
        clean["events"] = clean_events(data.get("events"), errors)
    if "format" in data:
        if data["format"] not in Webhook.Format.values:
            errors.append(FieldError("format", "invalid_choice", "standard or slack."))
        clean["format"] = data["format"]
    if "description" in data:
        description = data["description"]
        if not isinstance(description, str) or len(description) > DESCRIPTION_MAX:
            errors.append(FieldError("description", "invalid",
                                     f"Text of at most {DESCRIPTION_MAX} characters."))
        clean["description"] = description
    if "active" in data:
        if not isinstance(data["active"], bool):
            errors.append(FieldError("active", "invalid", "true or false."))
        clean["active"] = data["active"]
    if errors:
        raise InvalidInput(errors)
    return clean


def webhook_create(*, project: Project, data: dict[str, Any], actor: Any = None) -> Webhook:
    """A new endpoint; its ``secret`` is on the returned object (show it once)."""
    clean = _clean(data, partial=False)
    return Webhook.objects.create(project=project, created_by=_person(actor), **clean)


def webhook_update(*, webhook: Webhook, data: dict[str, Any]) -> Webhook:
    """Change an endpoint. Reactivating one clears why it was disabled and its failure run."""
    clean = _clean(data, partial=True)
    for name, value in clean.items():
        setattr(webhook, name, value)
    fields = list(clean)
    if clean.get("active") is True and webhook.disabled_at is not None:
        webhook.disabled_at, webhook.disabled_reason, webhook.failing_since = None, "", None
        fields += ["disabled_at", "disabled_reason", "failing_since"]
    if fields:
        webhook.save(update_fields=[*fields, "updated_at"])
    return webhook


def webhook_delete(*, webhook: Webhook) -> None:
    webhook.delete()  # its deliveries go with it


def webhook_rotate_secret(*, webhook: Webhook) -> Webhook:
    """A new secret at once; the old one stops signing (show the new one once)."""
    webhook.secret = new_webhook_secret()
    webhook.secret_rotated_at = timezone.now()
    webhook.save(update_fields=["secret", "secret_rotated_at", "updated_at"])
    return webhook


def webhook_test_send(*, webhook: Webhook, actor: Any = None) -> WebhookDelivery:
    """Send ``webhook.test`` to this endpoint now (subscribed or not, active or not) and
    return its delivery after the first attempt; a failure is retried like any other."""
    with transaction.atomic():
        event = event_emit(
            project_id=webhook.project_id,
            type=TEST_EVENT,
            data={
                "webhook": webhook.pk,
                "url": webhook.url,
                "message": "A test event from Redress: your endpoint is reachable and can "
                "verify signatures.",
                "sent_by": actor.get_username() if _person(actor) else None,
            },
            only_webhook_id=webhook.pk,
        )
    (delivery_id,) = event_fan_out(event_id=event.pk)
    delivery, _ = delivery_attempt(delivery_id=delivery_id, force=True)
    return delivery or WebhookDelivery.objects.select_related("event").get(pk=delivery_id)

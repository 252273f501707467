"""Read queries of the webhooks app."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from feedback.models import Membership, Project
from feedback.selectors import projects_for_user

from .models import Webhook, WebhookDelivery

ADMIN_ROLES = [Membership.Role.ADMIN]


def projects_administered(*, user: AbstractBaseUser) -> QuerySet[Project]:
    """Projects whose webhooks the person manages: those where they are a project admin."""
    return projects_for_user(user=user, roles=ADMIN_ROLES)


def webhooks_visible_to(*, user: AbstractBaseUser) -> QuerySet[Webhook]:
    return (
        Webhook.objects.filter(project__in=projects_administered(user=user))
        .select_related("project")
        .order_by("project__slug", "id")
    )


def deliveries_of(*, webhook: Webhook) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(webhook=webhook).select_related("event").order_by("-id")


def deliveries_visible_to(*, user: AbstractBaseUser) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(
        webhook__project__in=projects_administered(user=user)
    ).select_related("event", "webhook")

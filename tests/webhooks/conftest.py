"""Webhook tests deliver over real HTTP to a threaded receiver on loopback (receiver.py)."""

from __future__ import annotations

import uuid

import pytest

from feedback.models import Membership
from feedback.services.projects import membership_grant
from webhooks import transport
from webhooks.models import Webhook

from ..conftest import token_for
from ..labeling.conftest import make_items  # noqa: F401  a queue's items, reused
from .receiver import Receiver


@pytest.fixture(autouse=True)
def _webhook_settings(settings):
    settings.REDRESS_WEBHOOK_ALLOW_PRIVATE = True  # the receiver is on loopback
    settings.REDRESS_WEBHOOK_TIMEOUT = 2.0
    settings.REDRESS_WEBHOOK_RETRY_SECONDS = [5, 300, 1800]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    yield
    transport.close_all()  # no kept-alive connection outlives its receiver


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


@pytest.fixture
def make_person(project):
    def _make(role: str, in_project=None):
        membership = membership_grant(
            project=in_project or project, username=f"{role}-{uuid.uuid4().hex[:6]}", role=role
        )
        user = membership.user
        user.email = f"{user.username}@example.com"
        user.save(update_fields=["email"])
        user.token = token_for(user)
        return user

    return _make


@pytest.fixture
def project_admin(make_person):
    return make_person(Membership.Role.ADMIN)


@pytest.fixture
def make_webhook(project):
    def _make(url: str, events=("*",), *, in_project=None, **extra) -> Webhook:
        return Webhook.objects.create(
            project=in_project or project, url=url, events=list(events), **extra
        )

    return _make

"""The admin monitoring page: figures on the page, links to the items, access by role."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from feedback.models import Membership
from feedback.services.projects import membership_grant
from monitoring.alerts import rule_create, rule_evaluate
from monitoring.rollups import rollups_step

from .conftest import make_stream

pytestmark = pytest.mark.django_db


def fill_recent(project):
    now = timezone.now()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=13)
    hours = int((now - start).total_seconds() // 3600) - 1
    make_stream(
        project,
        seed=31,
        n=6000,
        start=start,
        hours=hours,
        rates={("v2", "de-DE"): (0.15, 0.2), ("v1", "de-DE"): (0.1, 0.08)},
    )
    rollups_step(now=now + dt.timedelta(minutes=5))
    rule = rule_create(
        project=project,
        data={
            "name": "de-DE disputes, canary vs control",
            "metric": "dispute_rate",
            "filter": {"model_version": "v2", "segment": {"locale": "de-DE"}},
            "window_minutes": 24 * 60 * 7,
            "min_volume": 100,
            "condition": {"baseline": {"model_version": "v1"}, "min_lift": 0.02, "alpha": 0.01},
        },
    )
    rule_create(
        project=project,
        data={
            "name": "complaints above 30%",
            "metric": "complaint_rate",
            "window_minutes": 60,
            "condition": {"above": 0.3},
            "min_volume": 10,
        },
    )
    assert rule_evaluate(rule_id=rule.pk)["state"] == "firing"
    return rule


def test_page_shows_what_moved_and_links_to_items(project, admin_client):
    fill_recent(project)
    r = admin_client.get(f"/admin/monitoring/monitoringsettings/project/{project.slug}/")
    assert r.status_code == 200
    html = r.content.decode()
    assert "<svg" in html and 'data-version="v1"' in html and 'data-version="v2"' in html
    assert "Canary against control" in html and "<strong>v2</strong> (canary)" in html
    assert "de-DE disputes, canary vs control" in html and 'class="firing"' in html
    assert f"/admin/feedback/feedback/?project__id__exact={project.pk}" in html
    assert "prediction__model_version=v2" in html and "kind=dispute" in html
    assert "unsafe" in html  # top categories
    # another metric, and a link from the settings changelist
    r = admin_client.get(
        f"/admin/monitoring/monitoringsettings/project/{project.slug}/?metric=upheld_rate&days=7"
    )
    assert r.status_code == 200 and "upheld-dispute share per day" in r.content.decode()
    r = admin_client.get("/admin/monitoring/monitoringsettings/")
    assert f"/admin/monitoring/monitoringsettings/project/{project.slug}/" in r.content.decode()


def test_page_access_by_role(project, other_project, client):
    membership = membership_grant(project=project, username="rev-a", role=Membership.Role.REVIEWER)
    user = membership.user
    user.is_staff = True
    user.save()
    client.force_login(user)
    assert (
        client.get(f"/admin/monitoring/monitoringsettings/project/{project.slug}/").status_code
        == 200
    )
    url = f"/admin/monitoring/monitoringsettings/project/{other_project.slug}/"
    assert client.get(url).status_code == 404

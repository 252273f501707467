"""The monitoring page in a real browser: renders, the chart draws points with whiskers, and a
screenshot is kept (var/screenshots/monitoring.png) to look at."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from tests.monitoring.test_admin_page import fill_recent

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
SHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


def test_monitoring_page_screenshot(live_server, page, project):
    fill_recent(project)
    get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-123456")
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pw-123456")
    page.click("input[type=submit]")
    page.goto(f"{live_server.url}/admin/monitoring/monitoringsettings/project/{project.slug}/")
    assert page.locator("svg.rate-chart circle").count() >= 20
    assert page.locator("svg.rate-chart g.version").count() == 2
    assert page.locator("td.firing").count() >= 1
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.screenshot(path=str(SHOTS / "monitoring.png"), full_page=True)
    assert (SHOTS / "monitoring.png").stat().st_size > 10_000

"""The admin at 1440 px, in a real browser, on the demo data (``seed_demo``): nothing falls off
the feedback triage list or the queue list, and the queue dashboard and an audit report render.

Saves docs/img/queue-dashboard.png and docs/img/audit-report.png on request
(REDRESS_UPDATE_SCREENSHOTS=1), the screenshots in the README.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Count

from labeling.models import Audit, Queue

from .test_reviewer_keyboard import SCREENSHOT, UPDATE_SCREENSHOT

WIDE = {"width": 1440, "height": 900}
IMG = SCREENSHOT.parent
PASSWORD = "pw-boss-123"


def page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def table_fits(page) -> bool:
    """The change list's table is as wide as its box at most: its last column is on screen."""
    return page.evaluate(
        "(() => { const box = document.querySelector('#changelist .results');"
        " return box.scrollWidth <= box.clientWidth + 1; })()"
    )


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_admin_fits_1440_px_and_shows_direction(live_server, browser, tmp_path):
    call_command("seed_demo", verbosity=0)
    get_user_model().objects.create_superuser("boss", "boss@example.com", PASSWORD)
    # the queue people label most, and the audit with the most flags
    queue = Queue.objects.annotate(n=Count("items__labels")).order_by("-n", "pk").first()
    audit = max(
        Audit.objects.filter(status=Audit.Status.DONE),
        key=lambda a: (len(a.result.get("flagged", [])), a.pk),
        default=None,
    )
    assert queue is not None and audit is not None
    context = browser.new_context(viewport=WIDE, device_scale_factor=1, locale="en-US")
    context.set_default_timeout(15_000)
    page = context.new_page()
    out = IMG if UPDATE_SCREENSHOT else tmp_path
    try:
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", "boss")
        page.fill("#id_password", PASSWORD)
        with page.expect_navigation():
            page.click("input[type=submit]")

        # feedback triage: every column on screen, comments one line each
        page.goto(f"{live_server.url}/admin/feedback/feedback/")
        assert page.locator("#result_list tbody tr").count() > 10
        assert page_width(page) <= WIDE["width"]
        assert table_fits(page)  # no column scrolled out of the list's box
        heights = page.eval_on_selector_all(
            "#result_list tbody tr", "rows => rows.map(r => r.getBoundingClientRect().height)"
        )
        assert max(heights) < 60, heights  # one line of text per row, not four or five
        shown = page.locator("td.field-rating_shown").first.inner_text()
        assert shown in {"-", "+1", "\N{MINUS SIGN}1"}

        # queue list: the Dashboard link is on screen
        page.goto(f"{live_server.url}/admin/labeling/queue/")
        assert page_width(page) <= WIDE["width"]
        assert table_fits(page)
        link = page.locator("td.field-dashboard_link a").first
        box = link.bounding_box()
        assert box is not None and box["x"] + box["width"] <= WIDE["width"]

        # the queue dashboard
        page.goto(f"{live_server.url}/admin/labeling/queue/{queue.pk}/dashboard/")
        assert "Agreement on verdicts" in page.inner_text("#content")
        assert page.locator("text=No labels yet.").count() == 0
        page.screenshot(path=str(out / "queue-dashboard.png"), full_page=True)

        # an audit report: worse and better segments look different, with words
        page.goto(f"{live_server.url}/admin/labeling/audit/{audit.pk}/change/")
        assert page.locator("svg.audit-chart").count() == 1
        assert page_width(page) <= WIDE["width"]
        page.screenshot(path=str(out / "audit-report.png"), full_page=True)
    finally:
        context.close()
    assert (out / "queue-dashboard.png").stat().st_size > 20_000
    assert (out / "audit-report.png").stat().st_size > 20_000

"""The pages a newcomer meets first: the landing page at /, the API docs (offline: their
scripts are served by Redress, not a CDN), the admin branded Redress, and a reviewer's start
page after login (their queues, not an empty admin index)."""

from __future__ import annotations

import re
import urllib.request
from urllib.parse import urljoin, urlsplit

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from feedback.models import Feedback, Membership, Prediction
from feedback.services.projects import membership_grant
from labeling.models import Queue, QueueItem

pytestmark = pytest.mark.django_db

ASSET = re.compile(r'(?:src|href)="([^"]+)"')


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.status, response.read()


def test_landing_page_says_what_redress_is_and_links_the_ways_in(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<title>Redress</title>" in html and "Human feedback and labeling" in html
    links = set(ASSET.findall(html))
    assert {"/admin/", reverse("admin:labeling_workspace_index"), "/api/docs/"} <= links
    assert "/api/redoc/" in links and "/api/schema/" in links
    # Nothing from another host: no CDN, no fonts, no script at all.
    assert not [link for link in links if urlsplit(link).netloc]
    assert "<script" not in html
    for link in links:
        assert client.get(link).status_code in (200, 302), link  # 302: the admin's login


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_api_docs_load_only_local_assets_and_they_answer(live_server, path):
    status, body = _get(live_server.url + path)
    assert status == 200
    html = body.decode()
    assets = ASSET.findall(html) + re.findall(r'<script[^>]+src="([^"]+)"', html)
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', html)
    assert scripts, "the docs page loads no script of its own"
    assert not [a for a in assets if urlsplit(a).netloc], assets  # no CDN
    assert not re.search(r"https?://(?!127\.0\.0\.1|localhost)", html.split("<body")[0])
    for asset in set(assets):
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        status, content = _get(urljoin(live_server.url + path, asset))
        assert status == 200 and len(content) > 100, asset


def test_swagger_ui_renders_offline_from_local_assets(live_server):
    # The page's inline script builds Swagger UI from the local bundle and the schema URL.
    status, body = _get(live_server.url + "/api/docs/")
    html = body.decode()
    assert "swagger-ui-bundle.js" in html and "/api/schema/" in html
    status, schema = _get(live_server.url + "/api/schema/")
    assert status == 200 and b"Redress API" in schema


def test_the_admin_is_branded_redress_and_view_site_leads_home(admin_client):
    login = Client().get("/admin/login/")
    html = login.content.decode()
    assert "Redress" in html and "Django administration" not in html
    index = admin_client.get("/admin/")
    html = index.content.decode()
    assert index.status_code == 200
    assert "<title>Administration | Redress</title>" in html
    assert "Django" not in re.search(r'<div id="site-name">.*?</div>', html, re.S).group(0)
    assert 'href="/"' in html  # "View site"
    assert admin_client.get("/").status_code == 200


def test_a_reviewer_lands_on_their_queues_after_login(project):
    membership_grant(
        project=project, username="rita", role=Membership.Role.REVIEWER, password="pw-123456"
    )
    client = Client()
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "rita", "password": "pw-123456"}, follow=True
    )
    assert response.redirect_chain[-1][0] == reverse("admin:labeling_workspace_index")
    html = response.content.decode()
    assert response.status_code == 200 and "My queues" in html


def test_people_with_other_roles_keep_the_admin_index(project, admin_client):
    membership_grant(
        project=project, username="ada", role=Membership.Role.ADMIN, password="pw-123456"
    )
    client = Client()
    client.login(username="ada", password="pw-123456")
    assert client.get("/admin/").status_code == 200
    assert admin_client.get("/admin/").status_code == 200  # a superuser
    # Not logged in: the admin's login page, as before.
    response = Client().get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_a_dispute_in_review_reads_in_review_in_the_workspace(project):
    reviewer = membership_grant(
        project=project, username="rita", role=Membership.Role.REVIEWER, password="pw-123456"
    ).user
    prediction = Prediction.objects.create(
        project=project, external_id="chat-1", input={"message": "Where is my refund?"},
        output={"reply": "Monday."}, label="refund", occurred_at=timezone.now(),
        content_hash="x",
    )
    Feedback.objects.create(
        project=project, prediction=prediction, kind=Feedback.Kind.DISPUTE,
        status=Feedback.DisputeStatus.IN_REVIEW, comment="Not what I asked.",
    )
    queue = Queue.objects.create(project=project, name="disputes", overlap=1)
    queue.reviewers.add(reviewer)
    QueueItem.objects.create(queue=queue, prediction=prediction, inclusion_probability=1.0)
    client = Client()
    client.force_login(reviewer)
    html = client.get(reverse("admin:labeling_workspace", args=[queue.pk])).content.decode()
    assert "In review" in html and "Inreview" not in html

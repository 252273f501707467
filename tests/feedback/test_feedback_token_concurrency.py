"""A browser's first rating or dispute sent from many tabs at once (live server, PostgreSQL):
the constraints leave one row, and every request gets a clean answer."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from feedback.feedback_tokens import token_mint
from feedback.models import Feedback
from feedback.services.feedback_tokens import token_secret_rotate

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 12


def hammer(url: str, tokens: list[str], bodies: list[dict]) -> list[tuple[int, dict]]:
    barrier = threading.Barrier(len(bodies))

    def send(position: int) -> tuple[int, dict]:
        request = urllib.request.Request(
            url,
            data=json.dumps(bodies[position]).encode(),
            method="POST",
            headers={
                "Authorization": f"FeedbackToken {tokens[position]}",
                "Content-Type": "application/json",
            },
        )
        barrier.wait()
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, range(len(bodies))))


@pytest.fixture
def tokens(project, prediction_factory):
    prediction_factory(project=project, external_id="p")
    secret = token_secret_rotate(project=project)
    now = int(time.time())
    return [
        token_mint(secret=secret, project=project.slug, prediction="p", end_user="u-1",
                   kinds=["rating", "dispute"], issued_at=now - n, ttl_seconds=600)[0]
        for n in range(THREADS)
    ]


def test_racing_ratings_leave_one_row_with_one_of_the_ratings(live_server, tokens):
    bodies = [{"kind": "rating", "rating": 1 if n % 2 else -1} for n in range(THREADS)]

    results = hammer(f"{live_server.url}/api/v1/feedback", tokens, bodies)

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * (THREADS - 1) + [201], results
    assert len({body["id"] for _, body in results}) == 1
    assert Feedback.objects.filter(kind="rating").count() == 1


def test_racing_disputes_leave_one_and_name_it(live_server, tokens):
    results = hammer(
        f"{live_server.url}/api/v1/feedback", tokens, [{"kind": "dispute"}] * THREADS
    )

    created = [body for status, body in results if status == 201]
    refused = [body for status, body in results if status == 409]
    assert len(created) == 1 and len(refused) == THREADS - 1, results
    assert all(b["errors"][0]["code"] == "dispute_exists" for b in refused)
    assert all(f"dispute {created[0]['id']}" in b["errors"][0]["detail"] for b in refused)
    assert Feedback.objects.filter(kind="dispute").count() == 1

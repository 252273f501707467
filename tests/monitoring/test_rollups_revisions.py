"""Rollups follow a token rating changed in place (thumbs down, then up): the step recounts the
hours of feedback revised since its revision watermark, bounded by the same lag."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import connection
from rest_framework.test import APIClient

import feedback.services.intake as intake
from feedback.feedback_tokens import token_mint
from feedback.models import Feedback
from feedback.services.feedback_tokens import token_secret_rotate
from monitoring.models import MetricRollup, MonitoringSettings, RollupState
from monitoring.rollups import rollups_rebuild, rollups_step

from .test_rollups import FUTURE, snapshot

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["as_served", "general_path"])
def rate(request, project, prediction_factory, monkeypatch):
    """Post a token rating about one prediction as one end user; returns the response.
    ``as_served``: PostgreSQL's single statement (TOKEN_RATING_SQL), SQLite's ORM path;
    ``general_path``: the ORM path (``_token_earlier``) on both databases."""
    if request.param == "general_path":
        monkeypatch.setattr(intake, "_store_one_postgres", lambda *a, **k: None)
    MonitoringSettings.objects.update_or_create(
        project=project, defaults={"monitored_segment_keys": ["locale"]}
    )
    prediction_factory(project=project, external_id="answer-1")
    prediction_factory(project=project, external_id="answer-2")  # another hour, untouched
    secret = token_secret_rotate(project=project)

    def _rate(rating: int, *, pred: str = "answer-1", sub: str = "user-42"):
        token, _ = token_mint(
            secret=secret,
            project=project.slug,
            prediction=pred,
            end_user=sub,
            kinds=("rating",),
            issued_at=int(time.time()),
            ttl_seconds=600,
        )
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"FeedbackToken {token}")
        return client.post("/api/v1/feedback", {"kind": "rating", "rating": rating},
                           format="json")

    return _rate


def step() -> dict:
    """A step now, without lag (time watermarks: a step in the future would pass later
    revisions by)."""
    return rollups_step(now=dt.datetime.now(dt.UTC), lag_seconds=0)


def totals(project) -> tuple[int, int]:
    rows = MetricRollup.objects.filter(project=project, segment_key="")
    return sum(r.ratings_negative for r in rows), sum(r.ratings_positive for r in rows)


def test_a_changed_rating_is_recounted_by_the_next_step(project, rate):
    down = rate(-1)
    rate(1, pred="answer-2", sub="user-7")
    assert down.status_code == 201, down.content
    assert Feedback.objects.get(pk=down.json()["id"]).revised_at is None  # inserts never set it
    step()
    assert totals(project) == (1, 1)

    up = rate(1)

    assert up.status_code == 200 and up.json()["id"] == down.json()["id"]
    row = Feedback.objects.get(pk=down.json()["id"])
    assert row.rating == 1 and row.revised_at is not None and row.revised_at >= row.created_at
    assert step()["hours"] == 1  # only the revised prediction's hour
    assert totals(project) == (0, 2)
    per_locale = MetricRollup.objects.filter(project=project, segment_key="locale")
    assert sum(r.ratings_negative for r in per_locale) == 0
    # equals the raw rows and a rebuild from them
    ratings = Feedback.objects.filter(project=project, kind="rating")
    assert totals(project) == (ratings.filter(rating=-1).count(), ratings.filter(rating=1).count())
    incremental = snapshot()
    # a double step counts once
    assert step()["hours"] == 0
    assert snapshot() == incremental
    rollups_rebuild()
    assert snapshot() == incremental


def test_a_rating_changed_back_and_forth_ends_as_the_last_one(project, rate):
    first = rate(-1)
    step()
    rate(1)
    step()
    assert totals(project) == (0, 1)
    rate(-1)
    step()

    assert Feedback.objects.filter(project=project, kind="rating").count() == 1
    assert Feedback.objects.get(pk=first.json()["id"]).rating == -1
    assert totals(project) == (1, 0)
    incremental = snapshot()
    rollups_rebuild()
    assert snapshot() == incremental


def test_a_revision_inside_the_lag_waits_for_a_later_step(project, rate):
    rate(-1)
    step()
    assert totals(project) == (1, 0)

    rate(1)
    now = dt.datetime.now(dt.UTC)
    # Within the lag the revision is not read yet (its transaction might still be open)...
    assert rollups_step(now=now, lag_seconds=60)["hours"] == 0
    assert totals(project) == (1, 0)
    # ...and the watermark did not pass it: the next step past the lag recounts it.
    assert rollups_step(now=now + dt.timedelta(seconds=120), lag_seconds=60)["hours"] == 1
    assert totals(project) == (0, 1)


def test_a_rating_revised_before_its_first_step_is_counted_once(project, rate):
    rate(-1)
    rate(1)  # changed before any step saw it: added (and its hour recounted) once, as +1

    step()

    assert totals(project) == (0, 1)
    assert step()["hours"] == 0
    assert totals(project) == (0, 1)


def test_a_full_rebuild_sets_the_revision_watermark_behind_the_lag(project, rate, settings):
    settings.REDRESS_ROLLUP_LAG_SECONDS = 60
    rate(-1)
    rate(1)
    now = dt.datetime.now(dt.UTC)

    rollups_rebuild(now=now)

    assert RollupState.objects.get().revisions_until == now - dt.timedelta(seconds=60)
    assert totals(project) == (0, 1)
    # the revision inside the lag is recounted once more, to the same counts
    assert step()["hours"] == 1
    assert totals(project) == (0, 1)


def test_the_revised_rows_are_found_through_the_partial_index():
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL plan")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM feedback_feedback WHERE revised_at > %s AND revised_at <= %s",
            [FUTURE - dt.timedelta(days=1), FUTURE],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "feedback_revised_at" in plan

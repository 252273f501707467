"""Rollups: incremental equals rebuild equals counting raw rows; idempotent; late rows land in
the prediction's hour; resolved disputes move old buckets."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command

from feedback.models import Feedback, Prediction
from monitoring.models import CategoryRollup, MetricRollup
from monitoring.rollups import rollups_rebuild, rollups_step

from .conftest import T0, make_stream, resolve_some

pytestmark = pytest.mark.django_db
FUTURE = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def snapshot():
    fields = (
        "project_id",
        "model_version",
        "hour",
        "segment_key",
        "segment_value",
        *MetricRollup.COUNTS,
    )
    metric = sorted(
        tuple(round(v, 9) if isinstance(v, float) else v for v in row)
        for row in MetricRollup.objects.values_list(*fields)
    )
    categories = sorted(
        CategoryRollup.objects.values_list(
            "project_id",
            "model_version",
            "hour",
            "segment_key",
            "segment_value",
            "category",
            "feedback",
        )
    )
    return metric, categories


def test_incremental_equals_rebuild_and_raw_counts(project):
    make_stream(project, seed=1)
    rollups_step(now=FUTURE)
    # late feedback about old predictions, new predictions, disputes resolved later
    make_stream(project, seed=3, n=300)
    old = Prediction.objects.filter(project=project).order_by("id")[:40]
    Feedback.objects.bulk_create(
        [Feedback(project=project, prediction=p, kind="report", categories=["unsafe"]) for p in old]
    )
    resolve_some(project)
    first = rollups_step(now=FUTURE)
    assert first["hours"] > 0
    incremental = snapshot()
    again = rollups_step(now=FUTURE)  # a double run changes nothing
    assert again["hours"] == 0 and snapshot() == incremental
    rollups_rebuild()
    assert snapshot() == incremental
    call_command("rebuild_rollups")
    assert snapshot() == incremental

    # the project-wide rows against raw rows
    total = MetricRollup.objects.filter(project=project, segment_key="")
    assert sum(r.predictions for r in total) == Prediction.objects.filter(project=project).count()
    fb = Feedback.objects.filter(project=project)
    assert sum(r.reports for r in total) == fb.filter(kind="report").count()
    assert sum(r.disputes_upheld for r in total) == fb.filter(status="upheld").count()
    assert sum(r.ratings_negative for r in total) == fb.filter(kind="rating", rating=-1).count()
    # per locale sums to the total (every prediction has a locale)
    de = MetricRollup.objects.filter(project=project, segment_key="locale", segment_value="de-DE")
    assert (
        sum(r.predictions for r in de)
        == Prediction.objects.filter(project=project, segment__locale="de-DE").count()
    )
    unsafe = sum(
        CategoryRollup.objects.filter(
            project=project, segment_key="", category="unsafe"
        ).values_list("feedback", flat=True)
    )
    assert unsafe == sum(1 for f in fb if "unsafe" in f.categories)


def test_late_feedback_lands_in_prediction_hour(project):
    p = Prediction.objects.create(
        project=project,
        external_id="old",
        model_version="v1",
        occurred_at=T0 - dt.timedelta(days=7, minutes=-5),
        content_hash="x" * 64,
    )
    rollups_step(now=FUTURE)
    Feedback.objects.create(project=project, prediction=p, kind="report")
    rollups_step(now=FUTURE)
    row = MetricRollup.objects.get(project=project, segment_key="")
    assert row.hour == T0 - dt.timedelta(days=7) and row.reports == 1 and row.predictions == 1


def test_rows_within_the_lag_wait(project):
    now = dt.datetime.now(dt.UTC)
    Prediction.objects.create(
        project=project,
        external_id="new",
        model_version="v1",
        occurred_at=now,
        content_hash="y" * 64,
    )
    assert rollups_step(now=now, lag_seconds=60)["hours"] == 0
    assert not MetricRollup.objects.exists()
    assert rollups_step(now=now + dt.timedelta(seconds=120), lag_seconds=60)["hours"] == 1
    assert MetricRollup.objects.get(segment_key="").predictions == 1


def test_crash_mid_step_rolls_back_counts_and_watermark(project, monkeypatch):
    make_stream(project, seed=5, n=100)
    import monitoring.rollups as rollups

    real = rollups._replace

    def boom(*a, **k):
        real(*a, **k)  # the rows are written, then the step dies before committing
        assert MetricRollup.objects.exists()
        raise RuntimeError("crash")

    monkeypatch.setattr(rollups, "_replace", boom)
    with pytest.raises(RuntimeError):
        rollups_step(now=FUTURE)
    monkeypatch.undo()
    assert not MetricRollup.objects.exists()
    rollups_step(now=FUTURE)
    assert (
        sum(MetricRollup.objects.filter(segment_key="").values_list("predictions", flat=True))
        == 100
    )


def test_feedback_inside_the_lag_is_counted_once_when_its_hour_is_recounted(project):
    """A recount reads feedback only up to the new watermark: a feedback still inside the lag
    is added by the next step, not counted by the recount and then added again."""
    now = dt.datetime.now(dt.UTC)

    def prediction(name, minutes, created):
        p = Prediction.objects.create(
            project=project,
            external_id=name,
            model_version="v1",
            occurred_at=T0 + dt.timedelta(minutes=minutes),
            content_hash=name * 64,
        )
        Prediction.objects.filter(pk=p.pk).update(created_at=created)
        return p

    first = prediction("a", 5, now - dt.timedelta(minutes=10))
    rollups_step(now=now, lag_seconds=60)
    prediction("b", 10, now - dt.timedelta(minutes=5))  # its hour is recounted by the next step
    Feedback.objects.create(project=project, prediction=first, kind="report")  # inside the lag
    rollups_step(now=now + dt.timedelta(seconds=10), lag_seconds=60)
    row = MetricRollup.objects.get(project=project, segment_key="")
    assert (row.predictions, row.reports) == (2, 0)
    rollups_step(now=now + dt.timedelta(seconds=120), lag_seconds=60)
    row = MetricRollup.objects.get(project=project, segment_key="")
    assert (row.predictions, row.reports) == (2, 1)
    counted = snapshot()
    rollups_rebuild()
    assert snapshot() == counted

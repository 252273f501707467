"""Generated streams of predictions, feedback, disputes and reviews with known truth."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from feedback.models import DisputeEvent, Feedback, Prediction
from labeling.models import Queue, QueueItem
from monitoring.models import MonitoringSettings

T0 = dt.datetime(2026, 11, 2, 0, 0, tzinfo=dt.UTC)


def make_stream(
    project,
    *,
    seed=1,
    n=600,
    versions=("v1", "v2"),
    locales=("de-DE", "en-US"),
    rates=None,
    start=T0,
    hours=48,
    categories=("unsafe", "wrong"),
):
    """n predictions over ``hours``; each gets at most one feedback. ``rates``: {(version,
    locale): (complaint p, dispute p)}. Disputes get a status at random; some predictions a
    completed review with pi in (0.2, 1]."""
    rng = random.Random(seed)
    MonitoringSettings.objects.update_or_create(
        project=project, defaults={"monitored_segment_keys": ["locale"]}
    )
    base = Prediction.objects.count()
    predictions = [
        Prediction(
            project=project,
            external_id=f"p{base + i}",
            model_version=rng.choice(versions),
            segment={"locale": rng.choice(locales), "device": "ios"},
            occurred_at=start + dt.timedelta(minutes=rng.randrange(hours * 60)),
            content_hash=f"{base + i:064d}",
        )
        for i in range(n)
    ]
    Prediction.objects.bulk_create(predictions)
    predictions = list(
        Prediction.objects.filter(
            project=project, external_id__in=[p.external_id for p in predictions]
        )
    )
    queue = Queue.objects.create(project=project, name=f"q{seed}-{base}")
    feedback, items = [], []
    for p in predictions:
        complaint, dispute = (rates or {}).get((p.model_version, p.segment["locale"]), (0.2, 0.1))
        u = rng.random()
        cats = sorted(rng.sample(categories, rng.randrange(len(categories) + 1)))
        if u < dispute:
            status = rng.choice(["open", "upheld", "rejected"])
            feedback.append(
                Feedback(
                    project=project, prediction=p, kind="dispute", status=status, categories=cats
                )
            )
        elif u < dispute + complaint:
            kind = rng.choice(["rating", "report"])
            feedback.append(
                Feedback(
                    project=project,
                    prediction=p,
                    kind=kind,
                    rating=-1 if kind == "rating" else None,
                    categories=cats,
                )
            )
        elif u < dispute + complaint + 0.2:
            feedback.append(Feedback(project=project, prediction=p, kind="rating", rating=1))
        if rng.random() < 0.3:
            items.append(
                QueueItem(
                    queue=queue,
                    prediction=p,
                    inclusion_probability=rng.uniform(0.2, 1.0),
                    status="complete",
                    completed_at=start,
                    consensus={
                        "verdict": rng.choice(["correct", "correct", "incorrect", "unsure"])
                    },
                )
            )
    Feedback.objects.bulk_create(feedback)
    QueueItem.objects.bulk_create(items)
    return predictions


def resolve_some(project, *, seed=2, share=0.5):
    """Resolve open disputes through DisputeEvents, as the service does."""
    rng = random.Random(seed)
    for f in Feedback.objects.filter(project=project, kind="dispute", status="open"):
        if rng.random() < share:
            to = rng.choice(["upheld", "rejected"])
            DisputeEvent.objects.create(feedback=f, from_status="open", to_status=to)
            f.status = to
            f.save(update_fields=["status"])


@pytest.fixture
def stream(project):
    return make_stream(project)

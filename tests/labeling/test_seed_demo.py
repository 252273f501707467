"""The demo data shows every part working: labels, consensus, a published gold set served as
hidden checks, and an audit that finds the segment the demo model is worse for."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from labeling.models import Audit, GoldItem, Label, Queue, QueueItem

pytestmark = pytest.mark.django_db


def test_seed_demo_builds_a_reviewed_queue_gold_checks_and_an_audit():
    out = StringIO()
    call_command("seed_demo", stdout=out)

    weekly = Queue.objects.get(project__slug="demo", name="Weekly quality sample")
    complete = QueueItem.objects.filter(queue=weekly, status="complete", gold_item__isnull=True)
    assert 0 < complete.count() < QueueItem.objects.filter(queue=weekly).count()  # work left
    assert Label.objects.filter(item__queue=weekly).count() == complete.count()  # overlap 1
    assert all(item.consensus["verdict"] in ("correct", "incorrect") for item in complete)

    assert weekly.gold_set.slug == "support-checks" and weekly.gold_rate == 0.1
    version = weekly.gold_set.versions.get(number=1)
    assert version.status == "published" and len(version.checksum) == 64
    assert GoldItem.objects.filter(version=version).count() == 12

    audit = Audit.objects.get(project__slug="demo")
    assert audit.status == "done"
    # The sample depends on row ids (u(seed, id)), which differ between databases and runs, so
    # the test asserts the built-in finding, not exact figures: 65+ is the one band flagged as
    # worse on error rate, and the worst band.
    error_rates = {
        tuple(segment["segment"].items()): segment["metrics"]["error_rate"]
        for segment in audit.result["segments"]
    }
    worse = [
        key
        for key, metric in error_rates.items()
        if metric.get("flagged") and metric["direction"] == "worse"
    ]
    assert worse == [(("age_band", "65+"),)]
    bands = {key: m["value"] for key, m in error_rates.items() if key[0][0] == "age_band"}
    assert max(bands, key=bands.get) == (("age_band", "65+"),)

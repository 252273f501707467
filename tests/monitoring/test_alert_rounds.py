"""A round of alert rules is measured by a few grouped queries (PostgreSQL): the figures equal
one ``metric_total`` per window, and the round moves the same rules as one-by-one evaluation."""

from __future__ import annotations

import datetime as dt

import pytest

from monitoring.alerts import rule_create, rules_evaluate
from monitoring.metrics import metric_total, metric_totals
from monitoring.models import AlertEvent, AlertRule
from monitoring.rollups import rollups_step

from .conftest import T0, make_stream

pytestmark = pytest.mark.django_db
FUTURE = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(hours=48, minutes=5)
SHIFT = {
    ("v1", "de-DE"): (0.1, 0.08),
    ("v2", "de-DE"): (0.1, 0.16),
    ("v1", "en-US"): (0.1, 0.08),
    ("v2", "en-US"): (0.1, 0.08),
}


def _close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (a[k] is None and b[k] is None) or a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12)
        for k in a
    )


def test_grouped_totals_equal_one_window_at_a_time(project):
    make_stream(project, seed=31, n=2000, rates=SHIFT)
    rollups_step(now=FUTURE)
    specs = []
    for metric in (
        "dispute_rate",
        "complaint_rate",
        "upheld_rate",
        "reviewer_error_rate",
        "category_rate:unsafe",
    ):
        for version in ("v1", "v2", None, "v9"):
            for segment in (None, ("locale", "de-DE"), ("locale", "xx-XX")):
                # windows inside the 48 hours of the stream, so both ends have rows beside them
                for first, hours in ((10, 1), (5, 7), (20, 24), (0, 48)):
                    start = T0 + dt.timedelta(hours=first)
                    specs.append(
                        {
                            "project_id": project.pk,
                            "metric": metric,
                            "model_version": version,
                            "start": start,
                            "end": start + dt.timedelta(hours=hours),
                            "segment": segment,
                        }
                    )
    grouped = metric_totals(specs)
    one_by_one = [metric_total(**spec) for spec in specs]
    assert sum(bool(t["denominator"]) for t in one_by_one) > len(specs) // 3  # data
    assert any(not t["denominator"] for t in one_by_one)  # and some hold none
    for spec, a, b in zip(specs, grouped, one_by_one, strict=True):
        assert _close(a, b), spec


def test_a_round_fires_the_rule_that_watches_the_shift_and_records_every_rule(project):
    make_stream(project, seed=21, n=4000, rates=SHIFT)
    rollups_step(now=FUTURE)

    def rule(name, **data):
        base = {
            "name": name,
            "metric": "dispute_rate",
            "filter": {"model_version": "v2"},
            "window_minutes": 48 * 60,
            "condition": {"baseline": {"model_version": "v1"}, "min_lift": 0.0, "alpha": 0.01},
            "min_volume": 100,
        }
        return rule_create(project=project, data={**base, **data})

    de = rule("de", filter={"model_version": "v2", "segment": {"locale": "de-DE"}})
    others = [
        rule("en", filter={"model_version": "v2", "segment": {"locale": "en-US"}}),
        rule("threshold", filter={}, condition={"above": 0.5}),
        rule("latest", filter={"model_version": "latest"}, condition={"above": 0.9}),
        rule("days", condition={"baseline": {"previous_days": 1}}, window_minutes=24 * 60),
        rule("category", metric="category_rate:unsafe", condition={"above": 0.99}),
        rule("quiet", min_volume=10**6),
    ]
    assert rules_evaluate(now=NOW) == 1
    assert list(AlertEvent.objects.values_list("rule_id", "state")) == [(de.pk, "firing")]
    for r in AlertRule.objects.all():
        assert r.last_evaluated_at == NOW
        assert r.last_result["window_end"] == NOW.replace(minute=0).isoformat()
        assert r.state == ("firing" if r.pk == de.pk else "ok")
    assert AlertRule.objects.get(pk=others[-1].pk).last_result["enough"] is False
    assert AlertRule.objects.get(pk=others[0].pk).last_result["volume"] > 100
    # the same window again: no second event
    assert rules_evaluate(now=NOW + dt.timedelta(minutes=1)) == 0
    assert AlertEvent.objects.count() == 1

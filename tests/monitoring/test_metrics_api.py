"""GET /metrics and /metrics/compare: every figure against statsmodels and against raw rows."""

from __future__ import annotations

import datetime as dt

import pytest
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)
from statsmodels.stats.proportion import (
    test_proportions_2indep as sm_test_2indep,
)

from feedback.models import Feedback, Membership, Prediction
from feedback.services.projects import membership_grant
from monitoring.rollups import rollups_step
from monitoring.stats import one_sided_p
from tests.conftest import client_for, token_for

from .conftest import make_stream, resolve_some

pytestmark = pytest.mark.django_db
FUTURE = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def filled(project):
    make_stream(project, seed=11, n=1500, rates={("v2", "de-DE"): (0.3, 0.25)})
    resolve_some(project)
    rollups_step(now=FUTURE)
    return project


def _raw_dispute_counts(project, **filters):
    preds = Prediction.objects.filter(project=project, **filters)
    fb = Feedback.objects.filter(project=project, kind="dispute", prediction__in=preds)
    return fb.count(), preds.count()


def test_series_by_version_and_segment_match_raw_and_statsmodels(filled, data_client):
    r = data_client.get(
        "/api/v1/metrics", {"project": filled.slug, "metric": "dispute_rate", "by": "model_version"}
    )
    assert r.status_code == 200, r.json()
    body = r.json()
    assert body["metric"] == "dispute_rate" and [p["key"] for p in body["series"]] == ["v1", "v2"]
    for point in body["series"]:
        x, n = _raw_dispute_counts(filled, model_version=point["key"])
        assert (point["numerator"], point["denominator"]) == (x, n)
        low, high = proportion_confint(x, n, method="wilson")
        assert point["value"] == pytest.approx(x / n)
        assert (point["ci_low"], point["ci_high"]) == (pytest.approx(low), pytest.approx(high))

    r = data_client.get(
        "/api/v1/metrics",
        {
            "project": filled.slug,
            "metric": "dispute_rate",
            "by": "segment.locale",
            "model_version": "v2",
        },
    )
    points = {p["key"]: p for p in r.json()["series"]}
    for locale in ("de-DE", "en-US"):
        x, n = _raw_dispute_counts(filled, model_version="v2", segment__locale=locale)
        assert (points[locale]["numerator"], points[locale]["denominator"]) == (x, n)
    assert points["de-DE"]["value"] > points["en-US"]["value"]


def test_series_by_day_and_hour_sum_to_total(filled, data_client):
    days = data_client.get(
        "/api/v1/metrics", {"project": filled.slug, "metric": "complaint_rate", "by": "day"}
    ).json()["series"]
    assert [d["key"] for d in days] == ["2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z"]
    hours = data_client.get(
        "/api/v1/metrics",
        {
            "project": filled.slug,
            "metric": "complaint_rate",
            "by": "hour",
            "from": "2026-11-02T00:00:00Z",
            "to": "2026-11-04T00:00:00Z",
        },
    ).json()["series"]
    assert len(hours) == 48 and hours[0]["key"] == "2026-11-02T00:00:00Z"
    assert sum(h["denominator"] for h in hours) == sum(d["denominator"] for d in days) == 1500
    fb = Feedback.objects.filter(project=filled)
    complaints = fb.filter(kind="report").count() + fb.filter(kind="rating", rating=-1).count()
    assert sum(d["numerator"] for d in days) == complaints
    for point in hours:
        if point["denominator"]:
            low, high = proportion_confint(
                point["numerator"], point["denominator"], method="wilson"
            )
            assert point["ci_low"] == pytest.approx(low) and point["ci_high"] == pytest.approx(high)


def test_upheld_category_and_reviewer_error(filled, data_client):
    get = lambda m: data_client.get(  # noqa: E731
        "/api/v1/metrics",
        {
            "project": filled.slug,
            "metric": m,
            "by": "model_version",
        },
    ).json()["series"]
    fb = Feedback.objects.filter(project=filled)
    for point in get("upheld_rate"):
        mine = fb.filter(prediction__model_version=point["key"])
        up, rej = mine.filter(status="upheld").count(), mine.filter(status="rejected").count()
        assert (point["numerator"], point["denominator"]) == (up, up + rej)
    for point in get("category_rate:unsafe"):
        mine = [
            f for f in fb.filter(prediction__model_version=point["key"]) if "unsafe" in f.categories
        ]
        assert point["numerator"] == len(mine)
    from labeling.models import QueueItem

    for point in get("reviewer_error_rate"):
        items = QueueItem.objects.filter(
            prediction__model_version=point["key"], prediction__project=filled
        )
        w = {"correct": 0.0, "incorrect": 0.0}
        w2 = 0.0
        for item in items:
            verdict = item.consensus["verdict"]
            if verdict in w:
                w[verdict] += 1 / item.inclusion_probability
                w2 += 1 / item.inclusion_probability**2
        total = w["correct"] + w["incorrect"]
        assert point["numerator"] == pytest.approx(w["incorrect"])
        assert point["denominator"] == pytest.approx(total)
        n_eff = total * total / w2
        low, high = proportion_confint(point["value"] * n_eff, n_eff, method="wilson")
        assert point["ci_low"] == pytest.approx(low) and point["ci_high"] == pytest.approx(high)


def test_compare_matches_statsmodels(filled, data_client):
    r = data_client.get(
        "/api/v1/metrics/compare",
        {
            "project": filled.slug,
            "metric": "dispute_rate",
            "a": "v1",
            "b": "v2",
            "segment.locale": "de-DE",
        },
    )
    assert r.status_code == 200, r.json()
    body = r.json()
    xa, na = _raw_dispute_counts(filled, model_version="v1", segment__locale="de-DE")
    xb, nb = _raw_dispute_counts(filled, model_version="v2", segment__locale="de-DE")
    assert (body["a"]["numerator"], body["a"]["denominator"]) == (xa, na)
    assert (body["b"]["numerator"], body["b"]["denominator"]) == (xb, nb)
    assert body["difference"] == pytest.approx(xb / nb - xa / na)
    low, high = confint_proportions_2indep(xb, nb, xa, na, method="newcomb", compare="diff")
    assert body["difference_ci_low"] == pytest.approx(low)
    assert body["difference_ci_high"] == pytest.approx(high)
    _, p = proportions_ztest([xb, xa], [nb, na])
    assert body["p_value"] == pytest.approx(p)
    assert body["p_value"] < 0.01  # 0.25 against 0.1


@pytest.mark.parametrize(
    "xa,na,xb,nb,margin",
    [
        (30, 400, 52, 410, 0.0),
        (10, 100, 30, 120, 0.05),
        (120, 1000, 180, 1000, 0.02),
        (5, 300, 9, 280, 0.0),
    ],
)
def test_one_sided_test_matches_statsmodels(xa, na, xb, nb, margin):
    if margin == 0:
        _, expected = proportions_ztest([xb, xa], [nb, na], alternative="larger")
    else:
        expected = sm_test_2indep(
            xb, nb, xa, na, value=margin, method="wald", compare="diff", alternative="larger"
        ).pvalue
    assert one_sided_p(xa, na, xb, nb, margin) == pytest.approx(expected)


def test_refusals_and_access(filled, data_client, ingest_client, other_project):
    bad = [
        ({"metric": "dispute_rate"}, "project"),
        ({"project": filled.slug}, "metric"),
        ({"project": filled.slug, "metric": "nope"}, "metric"),
        ({"project": filled.slug, "metric": "dispute_rate", "by": "week"}, "by"),
        ({"project": filled.slug, "metric": "dispute_rate", "by": "hour"}, "from"),
        ({"project": filled.slug, "metric": "dispute_rate", "from": "yesterday"}, "from"),
        ({"project": filled.slug, "metric": "dispute_rate", "colour": "red"}, "colour"),
        (
            {
                "project": filled.slug,
                "metric": "dispute_rate",
                "segment.locale": "de-DE",
                "segment.device": "ios",
            },
            "segment.locale",
        ),
    ]
    for params, field in bad:
        r = data_client.get("/api/v1/metrics", params)
        assert r.status_code == 400, (params, r.json())
        assert r.json()["errors"][0]["field"] == field, (params, r.json())
    r = data_client.get(
        "/api/v1/metrics/compare", {"project": filled.slug, "metric": "dispute_rate", "a": "v1"}
    )
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "b"
    assert (
        ingest_client.get(
            "/api/v1/metrics", {"project": filled.slug, "metric": "dispute_rate"}
        ).status_code
        == 403
    )
    assert (
        client_for()
        .get("/api/v1/metrics", {"project": filled.slug, "metric": "dispute_rate"})
        .status_code
        == 401
    )
    r = data_client.get(
        "/api/v1/metrics", {"project": other_project.slug, "metric": "dispute_rate"}
    )
    assert r.status_code in (403, 404)
    reviewer = membership_grant(project=filled, username="rev-1", role=Membership.Role.REVIEWER)
    r = client_for(token=token_for(reviewer.user)).get(
        "/api/v1/metrics", {"project": filled.slug, "metric": "dispute_rate"}
    )
    assert r.status_code == 200 and r.json()["series"]

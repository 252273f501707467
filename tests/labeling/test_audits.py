"""Segment audits: the statistics against reference implementations, and the audit itself.

- Unweighted figures per segment and per intersection equal fairlearn's MetricFrame on the same
  rows (to 1e-9); Wilson bounds equal statsmodels' ``proportion_confint(method="wilson")``.
- A simulation with known truth: a population with one segment over-sampled by the real
  stratified sampler; the weighted (Hájek) estimate recovers the population's error rate within
  its interval, the unweighted one is visibly biased.
- ``min_n`` suppression, reference choices, flags on a constructed disparity and none on a
  constructed parity; gold-set sources; the SQLite and PostgreSQL paths give the same numbers
  (the suite runs on both).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pytest
from django.utils import timezone
from fairlearn.metrics import (
    MetricFrame,
    false_negative_rate,
    false_positive_rate,
    selection_rate,
)
from sklearn.metrics import accuracy_score, precision_score, recall_score
from statsmodels.stats.proportion import proportion_confint

from feedback.errors import InvalidInput
from feedback.models import Feedback, Prediction
from labeling import fairness
from labeling.models import Audit, GoldItem, GoldSet, GoldSetVersion, Queue, QueueItem
from labeling.payloads.audits import audit_request
from labeling.services.audits import audit_create, audit_run
from labeling.services.sampling import sampling_run_execute, sampling_run_request

pytestmark = pytest.mark.django_db

CLASSES = ["approve", "deny"]


# --- building labeled rows -------------------------------------------------------------------


@dataclass
class Row:
    segment: dict[str, str]
    verdict: str | None = "correct"  # consensus verdict; "unsure"/None are undecided
    predicted: str | None = None  # the prediction's label
    true_label: str | None = None  # the consensus true label
    pi: float = 1.0
    feedback: list[tuple[str, int | None]] = field(default_factory=list)  # (kind, rating)
    model_version: str = "v1"


def load_rows(project, queue: Queue, rows: list[Row], *, prefix: str = "a") -> list[QueueItem]:
    """Store predictions, completed queue items with their consensus, and feedback."""
    now = timezone.now()
    predictions = Prediction.objects.bulk_create(
        Prediction(
            project=project,
            external_id=f"{prefix}-{queue.pk}-{i}",
            model="m",
            model_version=row.model_version,
            input={"q": f"{prefix}{i}"},
            output={"a": i},
            label=row.predicted,
            segment=row.segment,
            occurred_at=now,
            content_hash="x",
        )
        for i, row in enumerate(rows)
    )
    items = QueueItem.objects.bulk_create(
        QueueItem(
            queue=queue,
            prediction=prediction,
            inclusion_probability=row.pi,
            status=QueueItem.Status.COMPLETE,
            completed_at=now,
            labels_count=1,
            consensus={
                "method": "majority",
                "verdict": row.verdict,
                "true_label": row.true_label,
                "agreement": 1.0,
                "n_labels": 1,
                "tie": False,
            },
        )
        for prediction, row in zip(predictions, rows, strict=True)
    )
    Feedback.objects.bulk_create(
        Feedback(
            project=project,
            prediction=prediction,
            kind=kind,
            rating=rating,
            status="open" if kind == "dispute" else None,
        )
        for prediction, row in zip(predictions, rows, strict=True)
        for kind, rating in row.feedback
    )
    return items


def random_rows(count: int, seed: int = 3) -> list[Row]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        locale = rng.choices(["en-US", "de-DE", "fr-FR"], [5, 3, 2])[0]
        device = rng.choice(["ios", "web"])
        true_label = rng.choice(CLASSES)
        wrong = rng.random() < (0.35 if locale == "fr-FR" else 0.15)
        predicted = (
            (CLASSES[1] if true_label == CLASSES[0] else CLASSES[0]) if wrong else true_label
        )
        verdict = rng.choices(["correct", "incorrect", "unsure"], [6, 3, 1])[0]
        feedback = []
        if rng.random() < 0.1:
            feedback.append(("dispute", None))
        if rng.random() < 0.2:
            feedback.append(("rating", rng.choice([-1, 1])))
        if rng.random() < 0.05:
            feedback.append(("report", None))
        rows.append(
            Row(
                segment={"locale": locale, "device": device},
                verdict=verdict,
                predicted=predicted,
                true_label=true_label,
                pi=rng.choice([0.1, 0.25, 0.5, 1.0]),
                feedback=feedback,
            )
        )
    return rows


def frame(rows: list[Row]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "locale": [r.segment.get("locale") for r in rows],
            "device": [r.segment.get("device") for r in rows],
            "verdict": [r.verdict for r in rows],
            "y_true": [r.true_label for r in rows],
            "y_pred": [r.predicted for r in rows],
            "disputed": [int(any(k == "dispute" for k, _ in r.feedback)) for r in rows],
            "negative": [
                int(any(k in ("report", "dispute") or (v or 0) < 0 for k, v in r.feedback))
                for r in rows
            ],
            "w": [1 / r.pi for r in rows],
        }
    )


@pytest.fixture
def labeled_queue(project):
    return Queue.objects.create(project=project, name="loans", label_choices=CLASSES)


def run(project, data: dict[str, Any]) -> dict[str, Any]:
    audit = audit_create(project=project, request=audit_request({"project": project.slug, **data}))
    assert audit.status == Audit.Status.DONE, audit.error
    return audit.result


def by_label(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["label"]: s for s in result["segments"]}


# --- statistics against reference implementations --------------------------------------------


@pytest.mark.parametrize(
    ("count", "nobs", "confidence"),
    [(0, 10, 0.95), (3, 10, 0.95), (10, 10, 0.9), (17, 250, 0.99), (1, 3, 0.8), (12.5, 40.3, 0.95)],
)
def test_wilson_bounds_equal_statsmodels(count, nobs, confidence):
    low, high = fairness.wilson_interval(count / nobs, nobs, confidence)

    ref_low, ref_high = proportion_confint(count, nobs, alpha=1 - confidence, method="wilson")
    assert low == pytest.approx(ref_low, abs=1e-12)
    assert high == pytest.approx(ref_high, abs=1e-12)


def test_kish_and_hajek_by_hand():
    weights = np.array([1.0, 1.0, 4.0, 10.0])
    y = np.array([1, 0, 1, 0])

    assert fairness.kish_effective_n(weights.sum(), (weights**2).sum()) == pytest.approx(256 / 118)
    assert fairness.hajek(float((weights * y).sum()), float(weights.sum())) == pytest.approx(5 / 16)
    assert fairness.kish_effective_n(5.0, 5.0) == 5.0  # equal weights: n_eff = n
    assert fairness.hajek(0.0, 0.0) is None


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Table II, example (a): 56/70 vs 48/80, method 10 gives 0.0524 to 0.3339.
    p1, p2 = 56 / 70, 48 / 80
    ci1 = fairness.wilson_interval(p1, 70, 0.95)
    ci2 = fairness.wilson_interval(p2, 80, 0.95)

    low, high = fairness.newcombe_interval(p1, ci1, p2, ci2)

    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


# --- the audit against fairlearn --------------------------------------------------------------


def _metric_frames(df: pd.DataFrame, by: list[str]) -> dict[str, pd.Series]:
    features = df[by] if len(by) > 1 else df[by[0]]

    def mf(metric, subset: pd.DataFrame, y_true, y_pred) -> pd.Series:
        sensitive = subset[by] if len(by) > 1 else subset[by[0]]
        return MetricFrame(
            metrics=metric, y_true=y_true, y_pred=y_pred, sensitive_features=sensitive
        ).by_group

    def share(y_true, y_pred):
        return float(np.mean(y_true))

    decided = df[df.verdict.isin(["correct", "incorrect"])]
    out = {
        "error_rate": mf(
            share, decided, (decided.verdict == "incorrect").astype(int), decided.y_true
        ),
        "dispute_rate": mf(share, df, df.disputed, df.y_true),
        "negative_feedback_rate": mf(share, df, df.negative, df.y_true),
        "accuracy": mf(accuracy_score, df, df.y_true, df.y_pred),
        "selection_rate": mf(
            partial(selection_rate, pos_label="approve"), df, df.y_true, df.y_pred
        ),
        "fpr": mf(partial(false_positive_rate, pos_label="approve"), df, df.y_true, df.y_pred),
        "fnr": mf(partial(false_negative_rate, pos_label="approve"), df, df.y_true, df.y_pred),
    }
    for label in CLASSES:
        out[f"precision:{label}"] = mf(
            partial(precision_score, labels=[label], average="macro", zero_division=0),
            df,
            df.y_true,
            df.y_pred,
        )
        out[f"recall:{label}"] = mf(
            partial(recall_score, labels=[label], average="macro", zero_division=0),
            df,
            df.y_true,
            df.y_pred,
        )
    del features
    return out


def test_unweighted_figures_equal_fairlearn_metricframe(project, labeled_queue):
    rows = random_rows(700)
    load_rows(project, labeled_queue, rows)
    df = frame(rows)

    result = run(
        project,
        {
            "source": {"queue": labeled_queue.pk},
            "segments": ["locale", "device"],
            "intersectional": True,
            "positive_label": "approve",
            "weighted": False,
            "min_n": 1,
        },
    )

    segments = by_label(result)
    checked = 0
    for by in (["locale"], ["device"], ["locale", "device"]):
        expected = _metric_frames(df, by)
        for name, series in expected.items():
            for group, value in series.items():
                values = group if isinstance(group, tuple) else (group,)
                label = ", ".join(f"{k}={v}" for k, v in zip(by, values, strict=True))
                got = segments[label]["metrics"][name]["value"]
                assert got == pytest.approx(value, abs=1e-9), (label, name)
                checked += 1
    assert checked == (3 + 2 + 6) * 11
    # Segment counts, and the overall figure against the plain mean.
    assert segments["locale=fr-FR"]["n"] == int((df.locale == "fr-FR").sum())
    assert result["overall"]["n"] == 700
    decided = df[df.verdict.isin(["correct", "incorrect"])]
    assert result["overall"]["metrics"]["error_rate"]["value"] == pytest.approx(
        (decided.verdict == "incorrect").mean(), abs=1e-12
    )


def test_unweighted_intervals_equal_statsmodels_wilson(project, labeled_queue):
    rows = random_rows(400, seed=11)
    load_rows(project, labeled_queue, rows)
    df = frame(rows)

    result = run(
        project,
        {
            "source": {"queue": labeled_queue.pk},
            "segments": ["locale"],
            "weighted": False,
            "min_n": 1,
            "confidence": 0.9,
        },
    )

    for segment in result["segments"]:
        subset = df[
            (df.locale == segment["segment"]["locale"]) & df.verdict.isin(["correct", "incorrect"])
        ]
        errors, n = int((subset.verdict == "incorrect").sum()), len(subset)
        low, high = proportion_confint(errors, n, alpha=0.1, method="wilson")
        metric = segment["metrics"]["error_rate"]
        assert (metric["n"], metric["effective_n"]) == (n, pytest.approx(n))
        assert metric["ci_low"] == pytest.approx(low, abs=1e-12)
        assert metric["ci_high"] == pytest.approx(high, abs=1e-12)


def test_weighted_figures_are_hajek_with_wilson_on_kish_n(project, labeled_queue):
    rows = random_rows(500, seed=5)
    load_rows(project, labeled_queue, rows)
    df = frame(rows)

    result = run(
        project, {"source": {"queue": labeled_queue.pk}, "segments": ["locale"], "min_n": 1}
    )

    for segment in result["segments"]:
        sub = df[
            (df.locale == segment["segment"]["locale"]) & df.verdict.isin(["correct", "incorrect"])
        ]
        w, y = sub.w.to_numpy(), (sub.verdict == "incorrect").to_numpy(dtype=float)
        value = float((w * y).sum() / w.sum())
        n_eff = float(w.sum() ** 2 / (w**2).sum())
        low, high = proportion_confint(value * n_eff, n_eff, alpha=0.05, method="wilson")
        metric = segment["metrics"]["error_rate"]
        assert metric["value"] == pytest.approx(value, abs=1e-12)
        assert metric["effective_n"] == pytest.approx(n_eff, rel=1e-12)
        assert metric["weighted_n"] == pytest.approx(w.sum(), rel=1e-12)
        assert (metric["ci_low"], metric["ci_high"]) == (
            pytest.approx(low, abs=1e-12),
            pytest.approx(high, abs=1e-12),
        )
        all_rows = df[df.locale == segment["segment"]["locale"]]
        assert segment["effective_n"] == pytest.approx(
            all_rows.w.sum() ** 2 / (all_rows.w**2).sum(), rel=1e-12
        )


# --- a simulation with known truth ------------------------------------------------------------


def test_weighted_estimate_recovers_population_truth_under_stratified_oversampling(project):
    """A population of 12,000 predictions where the small segment (10 %) errs 40 % of the time
    and the large one 10 %: the truth is known exactly. The real stratified sampler draws 600
    from each (the small one is over-sampled ninefold). Hájek with 1/π recovers the truth; the
    unweighted share over-counts the small segment's errors."""
    # given: a population whose truth (wrong or not) is decided in advance
    rng = random.Random(42)
    now = timezone.now()
    population = []
    for i in range(12_000):
        small = i % 10 == 0
        wrong = rng.random() < (0.40 if small else 0.10)
        population.append(
            Prediction(
                project=project,
                external_id=f"pop-{i}",
                model_version="v1",
                output={"wrong": wrong},
                label="x",
                segment={"region": "north" if small else "south"},
                occurred_at=now,
                content_hash="x",
            )
        )
    Prediction.objects.bulk_create(population, batch_size=2000)
    truth = sum(p.output["wrong"] for p in population) / len(population)
    queue = Queue.objects.create(
        project=project,
        name="stratified",
        strategy=Queue.Strategy.STRATIFIED,
        strata=["region"],
        allocation=Queue.Allocation.EQUAL,
        size=1200,
        seed=7,
    )
    # when: the real sampler draws, and reviewers' consensus reflects the truth
    run_ = sampling_run_request(queue=queue, seed=7)
    sampling_run_execute(run_id=run_.pk)
    items = list(QueueItem.objects.filter(queue=queue).select_related("prediction"))
    assert len(items) == 1200
    for item in items:
        item.status = QueueItem.Status.COMPLETE
        wrong = item.prediction.output["wrong"]
        item.consensus = {"verdict": "incorrect" if wrong else "correct", "tie": False}
    QueueItem.objects.bulk_update(items, ["status", "consensus"], batch_size=500)
    pis = {round(item.inclusion_probability, 6) for item in items}
    assert pis == {round(600 / 1200, 6), round(600 / 10_800, 6)}

    weighted = run(project, {"source": {"queue": queue.pk}, "segments": ["region"]})
    unweighted = run(
        project, {"source": {"queue": queue.pk}, "segments": ["region"], "weighted": False}
    )

    # then
    w = weighted["overall"]["metrics"]["error_rate"]
    u = unweighted["overall"]["metrics"]["error_rate"]
    assert 0.10 < truth < 0.15
    assert w["ci_low"] <= truth <= w["ci_high"]
    assert abs(w["value"] - truth) < 0.02
    assert w["effective_n"] < 1200  # unequal weights cost precision
    assert not u["ci_low"] <= truth <= u["ci_high"]
    assert u["value"] - truth > 0.08  # about (0.40 + 0.10) / 2 = 0.25 against ~0.13
    assert weighted["overall"]["weighted_n"] == pytest.approx(12_000, rel=1e-9)


# --- min_n, references and flags --------------------------------------------------------------


def _disparity_rows() -> list[Row]:
    """en-US: 400 rows, 10 % wrong; de-DE: 200 rows, 30 % wrong; xx: 12 rows, all wrong."""
    rows = []
    for locale, count, wrong in (("en-US", 400, 40), ("de-DE", 200, 60), ("xx", 12, 12)):
        for i in range(count):
            rows.append(
                Row(segment={"locale": locale}, verdict="incorrect" if i < wrong else "correct")
            )
    return rows


def test_a_constructed_disparity_is_flagged_and_a_tiny_segment_is_suppressed(
    project, labeled_queue
):
    load_rows(project, labeled_queue, _disparity_rows())

    result = run(project, {"source": {"queue": labeled_queue.pk}, "segments": ["locale"]})

    segments = by_label(result)
    de, en, xx = segments["locale=de-DE"], segments["locale=en-US"], segments["locale=xx"]
    overall = result["overall"]["metrics"]["error_rate"]["value"]
    assert overall == pytest.approx(112 / 612)
    error = de["metrics"]["error_rate"]
    assert error["value"] == pytest.approx(0.30)
    assert error["difference"] == pytest.approx(0.30 - 112 / 612)
    assert error["ratio"] == pytest.approx(0.30 / (112 / 612))
    assert error["difference_ci_low"] > 0
    assert (error["flagged"], error["reasons"], error["direction"]) == (
        True,
        ["difference"],
        "worse",
    )
    assert de["flagged"] and de["flags"] == ["error_rate"]
    # en-US is better than overall by 0.083: flagged too, as "better".
    assert en["metrics"]["error_rate"]["direction"] == "better"
    assert en["metrics"]["error_rate"]["flagged"] is True
    # Twelve people, all wrong: insufficient, no estimate, never flagged.
    assert xx["n"] == 12 and xx["insufficient"] is True
    assert xx["metrics"]["error_rate"]["value"] is None
    assert xx["metrics"]["error_rate"]["ci_low"] is None
    assert xx["flagged"] is False and xx["flags"] == []
    assert [f["label"] for f in result["flagged"]] == ["locale=de-DE", "locale=en-US"]
    assert any("min_n = 30" in caveat for caveat in result["caveats"])


def test_min_n_decides_suppression(project, labeled_queue):
    load_rows(project, labeled_queue, _disparity_rows())

    result = run(
        project, {"source": {"queue": labeled_queue.pk}, "segments": ["locale"], "min_n": 10}
    )

    xx = by_label(result)["locale=xx"]
    assert xx["insufficient"] is False
    assert xx["metrics"]["error_rate"]["value"] == 1.0
    assert xx["metrics"]["error_rate"]["flagged"] is True  # 12/12 wrong is real at n = 12


def test_no_flags_on_a_constructed_parity(project, labeled_queue):
    rows = [
        Row(
            segment={"locale": locale, "device": device},
            verdict="incorrect" if i % 5 == 0 else "correct",
            predicted="approve" if i % 2 else "deny",
            true_label="approve" if i % 2 else "deny",
            feedback=[("dispute", None)] if i % 10 == 0 else [],
        )
        for locale in ("en-US", "de-DE", "fr-FR")
        for device in ("ios", "web")
        for i in range(100)
    ]
    load_rows(project, labeled_queue, rows)

    result = run(
        project,
        {
            "source": {"queue": labeled_queue.pk},
            "segments": ["locale", "device"],
            "intersectional": True,
            "positive_label": "approve",
        },
    )

    assert len(result["segments"]) == 3 + 2 + 6
    assert result["flagged"] == []
    for segment in result["segments"]:
        assert segment["flagged"] is False
        error = segment["metrics"]["error_rate"]
        assert error["value"] == pytest.approx(0.2)
        assert error["difference"] == pytest.approx(0.0, abs=1e-12)
        assert error["difference_ci_low"] < 0 < error["difference_ci_high"]
        assert segment["metrics"]["selection_rate"]["ratio"] == pytest.approx(1.0)


def test_a_named_reference_segment(project, labeled_queue):
    load_rows(project, labeled_queue, _disparity_rows())

    result = run(
        project,
        {
            "source": {"queue": labeled_queue.pk},
            "segments": ["locale"],
            "reference": {"locale": "en-US"},
        },
    )

    segments = by_label(result)
    assert result["reference"] == {"segment": {"locale": "en-US"}, "label": "locale=en-US"}
    en = segments["locale=en-US"]["metrics"]["error_rate"]
    assert (en["difference"], en["ratio"], en["flagged"]) == (0.0, 1.0, False)
    de = segments["locale=de-DE"]["metrics"]["error_rate"]
    assert de["reference"] == pytest.approx(0.10)
    assert de["difference"] == pytest.approx(0.20)
    assert de["ratio"] == pytest.approx(3.0)
    assert de["flagged"] is True
    assert [f["label"] for f in result["flagged"]] == ["locale=de-DE"]


def test_a_reference_under_min_n_compares_nothing(project, labeled_queue):
    load_rows(project, labeled_queue, _disparity_rows())

    result = run(
        project,
        {
            "source": {"queue": labeled_queue.pk},
            "segments": ["locale"],
            "reference": {"locale": "xx"},
        },
    )

    assert result["flagged"] == []
    assert all(s["metrics"]["error_rate"]["difference"] is None for s in result["segments"])
    assert any("under min_n" in c for c in result["caveats"])


def test_an_intersection_as_reference(project, labeled_queue):
    rows = [
        Row(segment={"locale": "en-US", "device": d}, verdict="incorrect" if i < k else "correct")
        for d, k in (("ios", 10), ("web", 40))
        for i in range(100)
    ]
    load_rows(project, labeled_queue, rows)

    result = run(
        project,
        {
            "source": {"queue": labeled_queue.pk},
            "segments": ["locale", "device"],
            "intersectional": True,
            "reference": {"device": "ios", "locale": "en-US"},
        },
    )

    segments = by_label(result)
    assert result["reference"]["label"] == "locale=en-US, device=ios"
    web = segments["locale=en-US, device=web"]["metrics"]["error_rate"]
    assert web["difference"] == pytest.approx(0.30)
    assert web["flagged"] is True


def test_selection_rate_under_four_fifths_is_flagged(project, labeled_queue):
    # Group b is approved 30 % of the time against 50 % for a: ratio to overall 0.3/0.4 = 0.75.
    rows = []
    for group, approved in (("a", 50), ("b", 30)):
        for i in range(100):
            label = "approve" if i < approved else "deny"
            rows.append(Row(segment={"group": group}, predicted=label, true_label=label))
    load_rows(project, labeled_queue, rows)

    result = run(
        project,
        {
            "source": {"queue": labeled_queue.pk},
            "segments": ["group"],
            "positive_label": "approve",
            "tolerance": 0.5,
        },
    )

    b = by_label(result)["group=b"]["metrics"]["selection_rate"]
    assert b["ratio"] == pytest.approx(0.75)
    assert (b["flagged"], b["reasons"], b["direction"]) == (True, ["four_fifths"], "worse")
    a = by_label(result)["group=a"]["metrics"]["selection_rate"]
    assert a["ratio"] == pytest.approx(1.25) and a["flagged"] is False


def test_rows_that_are_not_production_labels_are_left_out(project, labeled_queue, make_items):
    load_rows(project, labeled_queue, [Row(segment={"locale": "en-US"}) for _ in range(40)])
    make_items(labeled_queue, 5)  # open items: not complete
    gold_set = GoldSet.objects.create(project=project, slug="g", name="g")
    version = GoldSetVersion.objects.create(gold_set=gold_set, number=1)
    gold = GoldItem.objects.create(version=version, key="k1", segment={"locale": "en-US"})
    QueueItem.objects.create(
        queue=labeled_queue,
        gold_item=gold,
        inclusion_probability=1,
        status=QueueItem.Status.COMPLETE,
        consensus={"verdict": "incorrect"},
    )

    result = run(project, {"source": {"queue": labeled_queue.pk}, "segments": ["locale"]})

    assert result["overall"]["n"] == 40
    assert result["overall"]["metrics"]["error_rate"]["value"] == 0.0
    assert any("5 items of the queue are not complete" in c for c in result["caveats"])


def test_missing_segment_values_and_model_version_filter(project, labeled_queue):
    rows = [Row(segment={"locale": "en-US"}) for _ in range(30)]
    rows += [Row(segment={}, verdict="incorrect") for _ in range(30)]
    rows += [
        Row(segment={"locale": "en-US"}, verdict="incorrect", model_version="v2") for _ in range(30)
    ]
    load_rows(project, labeled_queue, rows)

    result = run(
        project,
        {"source": {"queue": labeled_queue.pk, "model_version": "v1"}, "segments": ["locale"]},
    )

    segments = by_label(result)
    assert set(segments) == {"locale=en-US", "locale=∅"}
    assert segments["locale=∅"]["metrics"]["error_rate"]["value"] == 1.0
    assert segments["locale=en-US"]["metrics"]["error_rate"]["value"] == 0.0
    assert result["scope"]["model_version"] == "v1"


def test_feedback_rates_count_predictions_not_feedback(project, labeled_queue):
    rows = [
        Row(segment={"s": "a"}, feedback=[("dispute", None), ("dispute", None), ("rating", -1)]),
        Row(segment={"s": "a"}, feedback=[("rating", 1)]),
        Row(segment={"s": "a"}, feedback=[("report", None)]),
        Row(segment={"s": "a"}),
    ]
    load_rows(project, labeled_queue, rows)

    result = run(project, {"source": {"queue": labeled_queue.pk}, "segments": ["s"], "min_n": 1})

    metrics = result["overall"]["metrics"]
    assert metrics["dispute_rate"]["value"] == 0.25
    assert metrics["negative_feedback_rate"]["value"] == 0.5


# --- gold-set sources -------------------------------------------------------------------------


def _published_gold(project, items: list[dict[str, Any]]) -> GoldSetVersion:
    gold_set = GoldSet.objects.create(project=project, slug="loans-gold", name="Loans gold")
    version = GoldSetVersion.objects.create(gold_set=gold_set, number=1)
    GoldItem.objects.bulk_create(GoldItem(version=version, **item) for item in items)
    version.status = GoldSetVersion.Status.PUBLISHED
    version.item_count = len(items)
    version.checksum = "0" * 64
    version.published_at = timezone.now()
    version.save()
    return version


def test_gold_version_scored_against_a_model_version(project):
    # Items 0-39 are matched by key (external_id), 40-59 by identical input, 60-64 not at all.
    items = []
    for i in range(65):
        items.append(
            {
                "key": f"g{i}",
                "input": {"text": f"case {i}"},
                "expected_label": "approve" if i % 2 else "deny",
                "segment": {"band": "young" if i < 30 else "old"},
            }
        )
    _published_gold(project, items)
    now = timezone.now()
    predictions = []
    for i in range(60):
        wrong = i < 30 and i % 3 == 0  # the young band: 10 of 30 wrong
        expected = "approve" if i % 2 else "deny"
        label = ("deny" if expected == "approve" else "approve") if wrong else expected
        predictions.append(
            Prediction(
                project=project,
                external_id=f"g{i}" if i < 40 else f"eval-{i}",
                model_version="v9",
                input={"text": f"case {i}"},
                label=label,
                occurred_at=now,
                content_hash="x",
            )
        )
    # Another model version's predictions on the same keys must not be picked up.
    predictions.append(
        Prediction(
            project=project,
            external_id="other",
            model_version="v8",
            input={"text": "case 62"},
            label="approve",
            occurred_at=now,
            content_hash="x",
        )
    )
    Prediction.objects.bulk_create(predictions)

    result = run(
        project,
        {
            "source": {"goldset": "loans-gold", "version": 1, "model_version": "v9"},
            "segments": ["band"],
            "positive_label": "approve",
        },
    )

    segments = by_label(result)
    assert result["overall"]["n"] == 60
    assert segments["band=young"]["metrics"]["error_rate"]["value"] == pytest.approx(10 / 30)
    assert segments["band=old"]["metrics"]["error_rate"]["value"] == 0.0
    assert segments["band=old"]["metrics"]["accuracy"]["value"] == 1.0
    assert result["method"]["weighted"] is False
    assert result["scope"]["classes"] == ["approve", "deny"]
    assert any("5 of 65 gold items have no prediction" in c for c in result["caveats"])


# --- running through a worker -----------------------------------------------------------------


def test_large_sources_go_to_a_worker(
    project, labeled_queue, settings, django_capture_on_commit_callbacks
):
    from labeling.tasks import audit_run_task

    settings.REDRESS_AUDIT_INLINE_ROWS = 10
    load_rows(project, labeled_queue, _disparity_rows())

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        audit = audit_create(
            project=project,
            request=audit_request(
                {
                    "project": project.slug,
                    "source": {"queue": labeled_queue.pk},
                    "segments": ["locale"],
                }
            ),
        )

    assert audit.status == Audit.Status.PENDING and audit.result is None
    assert len(callbacks) == 1
    assert audit_run_task.apply(args=[audit.pk]).get() == "done"
    audit.refresh_from_db()
    assert audit.progress == 1.0
    assert audit.result["overall"]["n"] == 612
    # A second delivery changes nothing.
    finished = audit.finished_at
    assert audit_run(audit_id=audit.pk).finished_at == finished


def test_a_lost_audit_is_handed_back_keyed_on_its_attempt(
    project, labeled_queue, settings, django_capture_on_commit_callbacks
):
    from labeling.tasks import audits_recover_task

    settings.REDRESS_AUDIT_INLINE_ROWS = 10
    settings.REDRESS_AUDIT_STALE_SECONDS = 600
    settings.REDRESS_SAMPLING_STALE_SECONDS = 10**6  # not the audits' setting any more
    load_rows(project, labeled_queue, _disparity_rows())
    with django_capture_on_commit_callbacks(execute=False):
        audit = audit_create(
            project=project,
            request=audit_request(
                {
                    "project": project.slug,
                    "source": {"queue": labeled_queue.pk},
                    "segments": ["locale"],
                }
            ),
        )
    taken_over = []

    def stall_and_be_taken_over(fraction, stage):
        # Attempt 1 looks lost (started long ago): the sweep hands it back and a second
        # worker claims it (attempt 2), while attempt 1 is still computing.
        if taken_over:
            return
        Audit.objects.filter(pk=audit.pk).update(
            started_at=timezone.now() - timezone.timedelta(minutes=20)
        )
        with django_capture_on_commit_callbacks(execute=False) as sent:
            taken_over.append(audits_recover_task.apply().get())
        assert len(sent) == 1
        assert Audit.objects.filter(pk=audit.pk, status="pending").update(
            status="running", attempts=2, started_at=timezone.now()
        )

    first = audit_run(audit_id=audit.pk, on_progress=stall_and_be_taken_over)

    assert taken_over == [1]
    # Attempt 1 finished computing but wrote nothing over attempt 2's run.
    assert first.status == Audit.Status.RUNNING and first.attempts == 2 and first.result is None
    # A running audit younger than REDRESS_AUDIT_STALE_SECONDS is left alone.
    assert audits_recover_task.apply().get() == 0


def test_a_draft_gold_version_is_refused(project):
    gold_set = GoldSet.objects.create(project=project, slug="drafty", name="d")
    GoldSetVersion.objects.create(gold_set=gold_set, number=1)

    with pytest.raises(InvalidInput) as refused:
        audit_create(
            project=project,
            request=audit_request(
                {
                    "project": project.slug,
                    "source": {"goldset": "drafty", "version": 1, "model_version": "v1"},
                    "segments": ["band"],
                }
            ),
        )

    assert [(e.field, e.code) for e in refused.value.errors] == [
        ("source.version", "not_published")
    ]


# --- export sources ---------------------------------------------------------------------------


def test_an_export_is_audited_over_the_items_it_contains(project, labeled_queue):
    from labeling.models import Export

    load_rows(project, labeled_queue, _disparity_rows())
    load_rows(
        project,
        labeled_queue,
        [Row(segment={"locale": "de-DE"}, verdict="incorrect", model_version="v2")] * 50,
        prefix="v2",
    )
    export = Export.objects.create(
        project=project,
        queue=labeled_queue,
        format=Export.Format.JSONL,
        spec={"filter": {"model_version": "v1", "segment": {"locale": "de-DE"}}},
    )

    result = run(project, {"source": {"export": export.pk}, "segments": ["locale"]})

    assert result["overall"]["n"] == 200
    assert result["overall"]["metrics"]["error_rate"]["value"] == pytest.approx(0.30)
    assert [s["label"] for s in result["segments"]] == ["locale=de-DE"]
    assert result["scope"]["classes"] == CLASSES
    assert result["scope"]["source_label"] == f"export {export.pk}"

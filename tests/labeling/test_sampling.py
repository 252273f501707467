"""Sampling runs: exact allocations, recorded π, determinism, idempotency, and frequencies."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from scipy import stats

from feedback.models import DisputeEvent, Feedback, Prediction
from feedback.selectors import project_context
from feedback.services.intake import feedback_submit
from labeling.models import Queue, QueueItem, SamplingRun
from labeling.randomness import uniform
from labeling.services.sampling import allocate, sampling_run_execute

pytestmark = pytest.mark.django_db


def make_predictions(project, strata: dict[str, int], *, confidence=None, version="v1"):
    rows = []
    for locale, count in strata.items():
        for i in range(count):
            rows.append(
                Prediction(
                    project=project,
                    external_id=f"{locale}-{i}-{version}",
                    model_version=version,
                    segment={"locale": locale, "device": "ios" if i % 2 else "web"},
                    confidence=confidence(i) if confidence else 0.8,
                    occurred_at="2026-11-20T10:00:00Z",
                    content_hash="x",
                )
            )
    Prediction.objects.bulk_create(rows)


def make_queue(project, **policy) -> Queue:
    return Queue.objects.create(project=project, name=f"q{Queue.objects.count()}", **policy)


def run(queue, seed=7) -> SamplingRun:
    from labeling.services.sampling import policy_of

    drawn = SamplingRun.objects.create(queue=queue, seed=seed, policy=policy_of(queue))
    return sampling_run_execute(run_id=drawn.pk)


# --- allocation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "n", "allocation", "minimum", "expected"),
    [
        ({"a": 600, "b": 300, "c": 100}, 100, "proportional", 0, {"a": 60, "b": 30, "c": 10}),
        ({"a": 500, "b": 300, "c": 200}, 7, "proportional", 0, {"a": 4, "b": 2, "c": 1}),
        ({"a": 600, "b": 300, "c": 100}, 90, "equal", 0, {"a": 30, "b": 30, "c": 30}),
        ({"a": 600, "b": 300, "c": 10}, 90, "equal", 0, {"a": 40, "b": 40, "c": 10}),
        ({"a": 900, "b": 90, "c": 10}, 100, "minimum", 20, {"a": 70, "b": 20, "c": 10}),
        ({"a": 900, "b": 60, "c": 40}, 100, "minimum", 5, {"a": 89, "b": 6, "c": 5}),
        ({"a": 10, "b": 5}, 100, "proportional", 0, {"a": 10, "b": 5}),
        ({"a": 100, "b": 100, "c": 100}, 30, "minimum", 20, {"a": 10, "b": 10, "c": 10}),
    ],
)
def test_allocations_are_exact_integers(counts, n, allocation, minimum, expected):
    quota = allocate(counts, n, allocation, minimum)

    assert quota == expected
    assert sum(quota.values()) == min(n, sum(counts.values()))
    assert all(quota[s] <= counts[s] for s in counts)


# --- draws -----------------------------------------------------------------------------------


def test_all_takes_everything_with_pi_one(project):
    make_predictions(project, {"de": 5, "en": 3})
    queue = make_queue(project, strategy="all")

    drawn = run(queue)

    assert drawn.status == "done"
    assert drawn.population == {"": 8} and drawn.sampled == {"": 8}
    assert set(QueueItem.objects.values_list("inclusion_probability", flat=True)) == {1.0}


def test_uniform_draw_records_pi_and_is_deterministic(project):
    make_predictions(project, {"de": 100})
    queue = make_queue(project, strategy="uniform", size=10)

    first = run(queue, seed=11)
    chosen = set(QueueItem.objects.values_list("prediction_id", flat=True))
    assert first.sampled == {"": 10}
    assert set(QueueItem.objects.values_list("inclusion_probability", flat=True)) == {0.1}
    # the sample is the 10 smallest u(seed, id): recomputed here in Python
    ids = list(Prediction.objects.values_list("id", flat=True))
    assert chosen == set(sorted(ids, key=lambda i: (uniform(11, i), i))[:10])

    QueueItem.objects.all().delete()
    run(queue, seed=11)
    assert set(QueueItem.objects.values_list("prediction_id", flat=True)) == chosen
    QueueItem.objects.all().delete()
    run(queue, seed=12)
    assert set(QueueItem.objects.values_list("prediction_id", flat=True)) != chosen


def test_rate_draws_round_rate_times_population(project):
    make_predictions(project, {"de": 50})
    queue = make_queue(project, strategy="uniform", rate=0.1)

    assert run(queue).sampled == {"": 5}


def test_rerunning_a_finished_run_changes_nothing(project):
    make_predictions(project, {"de": 30})
    queue = make_queue(project, strategy="uniform", size=5)
    drawn = run(queue)

    again = sampling_run_execute(run_id=drawn.pk)

    assert again.status == "done"
    assert QueueItem.objects.count() == 5


def test_an_item_is_never_queued_twice(project):
    make_predictions(project, {"de": 30})
    queue = make_queue(project, strategy="uniform", size=20)

    run(queue, seed=1)
    second = run(queue, seed=2)

    assert second.population == {"": 10}  # only what is not queued yet
    assert QueueItem.objects.count() == 30
    assert QueueItem.objects.values("prediction").distinct().count() == 30


def test_stratified_draw_is_exact_per_stratum(project):
    make_predictions(project, {"de-DE": 60, "en-US": 30, "fr-FR": 10})
    queue = make_queue(project, strategy="stratified", size=20, strata=["locale"])

    drawn = run(queue)

    assert drawn.population == {"locale=de-DE": 60, "locale=en-US": 30, "locale=fr-FR": 10}
    assert drawn.sampled == {"locale=de-DE": 12, "locale=en-US": 6, "locale=fr-FR": 2}
    pis = dict(QueueItem.objects.values_list("stratum", "inclusion_probability").distinct())
    assert pis == {"locale=de-DE": 0.2, "locale=en-US": 0.2, "locale=fr-FR": 0.2}
    # every item's stratum is its prediction's
    for item in QueueItem.objects.select_related("prediction"):
        assert item.stratum == f"locale={item.prediction.segment['locale']}"


def test_stratified_minimum_gives_small_segments_enough(project):
    make_predictions(project, {"de-DE": 90, "en-US": 5, "fr-FR": 25})
    queue = make_queue(
        project,
        strategy="stratified",
        size=30,
        strata=["locale"],
        allocation="minimum",
        min_per_stratum=10,
    )

    drawn = run(queue)

    assert drawn.sampled == {"locale=de-DE": 15, "locale=en-US": 5, "locale=fr-FR": 10}
    pis = dict(QueueItem.objects.values_list("stratum", "inclusion_probability").distinct())
    assert pis["locale=en-US"] == 1.0
    assert math.isclose(pis["locale=de-DE"], 15 / 90)
    assert math.isclose(pis["locale=fr-FR"], 10 / 25)


def test_two_strata_keys_and_missing_values(project):
    make_predictions(project, {"de": 8})
    Prediction.objects.create(
        project=project,
        external_id="bare",
        segment={},
        occurred_at="2026-11-20T10:00:00Z",
        content_hash="x",
    )
    queue = make_queue(project, strategy="stratified", size=9, strata=["locale", "device"])

    drawn = run(queue)

    assert drawn.population == {
        "locale=de|device=ios": 4,
        "locale=de|device=web": 4,
        "locale=∅|device=∅": 1,
    }


def test_uncertainty_probabilities_are_proportional_to_one_minus_confidence(project):
    # confidences 0.0 .. 0.99: weights 1 - c
    make_predictions(project, {"x": 100}, confidence=lambda i: i / 100)
    queue = make_queue(project, strategy="uncertainty", size=20)

    run(queue, seed=3)

    items = QueueItem.objects.select_related("prediction")
    ratios = {
        round(item.inclusion_probability / (1 - item.prediction.confidence), 9) for item in items
    }
    assert len(ratios) == 1  # one scale c for every item (no caps at this size)
    scale = ratios.pop()
    assert math.isclose(scale * sum(1 - i / 100 for i in range(100)), 20, rel_tol=1e-9)


def test_uncertainty_caps_probabilities_at_one(project):
    make_predictions(project, {"x": 10}, confidence=lambda i: 0.0 if i < 2 else 0.95)
    queue = make_queue(project, strategy="uncertainty", size=4)

    run(queue, seed=1)

    capped = QueueItem.objects.filter(prediction__confidence=0.0)
    assert capped.count() == 2
    assert set(capped.values_list("inclusion_probability", flat=True)) == {1.0}
    rest = QueueItem.objects.filter(prediction__confidence=0.95)
    for pi in rest.values_list("inclusion_probability", flat=True):
        assert math.isclose(pi, 2 / 8)  # the other 8 share the remaining expected 2


def test_inclusion_frequencies_over_many_seeds_match_pi(project):
    """Chi-square goodness of fit on inclusion counts over 300 seeds (fixed, so not flaky)."""
    make_predictions(project, {"de": 24, "en": 6})
    queue = make_queue(
        project, strategy="stratified", size=10, strata=["locale"], allocation="equal"
    )
    seeds = range(300)
    counts: Counter[int] = Counter()
    pis: dict[int, float] = {}
    for seed in seeds:
        run(queue, seed=seed)
        for prediction_id, pi in QueueItem.objects.values_list(
            "prediction_id", "inclusion_probability"
        ):
            counts[prediction_id] += 1
            pis[prediction_id] = pi
        QueueItem.objects.all().delete()

    ids = list(Prediction.objects.values_list("id", flat=True))
    observed = [counts[i] for i in ids]
    expected = [len(seeds) * pis[i] for i in ids]
    assert {round(pis[i], 6) for i in ids} == {round(5 / 24, 6), round(5 / 6, 6)}
    # Each item is a binomial(300, π); sum of squared standardised residuals ~ chi2(30).
    statistic = sum(
        (o - e) ** 2 / (e * (1 - e / len(seeds))) for o, e in zip(observed, expected, strict=True)
    )
    assert stats.chi2.sf(statistic, df=len(ids)) > 0.001


def test_uncertainty_inclusion_frequencies_match_pi(project):
    make_predictions(project, {"x": 20}, confidence=lambda i: i / 20)
    queue = make_queue(project, strategy="uncertainty", size=6)
    seeds = range(300)
    counts: Counter[int] = Counter()
    for seed in seeds:
        run(queue, seed=seed)
        counts.update(QueueItem.objects.values_list("prediction_id", flat=True))
        QueueItem.objects.all().delete()

    scale = 6 / sum(1 - i / 20 for i in range(20))
    for prediction in Prediction.objects.all():
        pi = min(1.0, scale * (1 - prediction.confidence))
        if pi == 0:
            assert counts[prediction.pk] == 0
            continue
        sd = math.sqrt(len(seeds) * pi * (1 - pi)) or 1
        assert abs(counts[prediction.pk] - len(seeds) * pi) < 4 * sd


def test_filters_narrow_the_population(project):
    make_predictions(project, {"de-DE": 4, "en-US": 4})
    make_predictions(project, {"de-DE": 3}, version="v2")
    queue = make_queue(
        project, strategy="all", filter={"model_version": "v2", "segment": {"locale": "de-DE"}}
    )

    assert run(queue).sampled == {"": 3}


def test_feedback_source_takes_predictions_with_matching_feedback(project):
    make_predictions(project, {"de": 6})
    context = project_context(project=project)
    feedback_submit(
        context=context,
        items=[
            {"prediction": "de-0-v1", "kind": "report", "categories": ["unsafe"]},
            {"prediction": "de-1-v1", "kind": "report", "categories": ["biased"]},
            {"prediction": "de-2-v1", "kind": "rating", "rating": -1},
        ],
    )
    queue = make_queue(
        project,
        strategy="all",
        source="feedback",
        filter={"kinds": ["report"], "categories": ["unsafe"]},
    )

    run(queue)

    assert list(QueueItem.objects.values_list("prediction__external_id", flat=True)) == ["de-0-v1"]


def test_a_disputes_queue_takes_every_open_dispute_first(project):
    make_predictions(project, {"de": 4})
    context = project_context(project=project)
    results = feedback_submit(
        context=context,
        items=[
            {"prediction": "de-0-v1", "kind": "dispute"},
            {"prediction": "de-1-v1", "kind": "dispute"},
            {"prediction": "de-1-v1", "kind": "dispute"},
            {"prediction": "de-2-v1", "kind": "report"},
        ],
    )
    queue = make_queue(project, strategy="uniform", size=1, source="disputes")

    drawn = run(queue)

    assert drawn.sampled == {"": 2}  # every open dispute, whatever the strategy says
    items = QueueItem.objects.order_by("prediction__external_id")
    assert [i.priority for i in items] == [QueueItem.PRIORITY_DISPUTE] * 2
    assert [i.inclusion_probability for i in items] == [1.0, 1.0]
    assert items[1].feedback_id == results[1].obj.pk  # the first dispute on that prediction
    disputes = Feedback.objects.filter(kind="dispute")
    assert set(disputes.values_list("status", flat=True)) == {"in_review"}
    assert DisputeEvent.objects.filter(to_status="in_review").count() == 3


def test_an_impossible_policy_fails_the_run_with_its_reason(project):
    make_predictions(project, {"de": 3})
    queue = make_queue(project, strategy="stratified", size=2)  # no strata

    drawn = run(queue)

    assert drawn.status == "failed"
    assert "strata" in drawn.error
    assert QueueItem.objects.count() == 0


def test_a_missed_prefilter_threshold_falls_back_to_the_same_sample(project, monkeypatch):
    import labeling.services.sampling as sampling

    make_predictions(project, {"de": 80, "en": 40})
    queue = make_queue(project, strategy="stratified", size=30, strata=["locale"])
    run(queue, seed=5)
    expected = set(QueueItem.objects.values_list("prediction_id", flat=True))
    QueueItem.objects.all().delete()
    # Thresholds far too low: every stratum comes up short and is ranked in full.
    monkeypatch.setattr(sampling, "THRESHOLD_SIGMAS", -50.0)

    drawn = run(queue, seed=5)

    assert drawn.sampled == {"locale=de": 20, "locale=en": 10}
    assert set(QueueItem.objects.values_list("prediction_id", flat=True)) == expected

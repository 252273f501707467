"""Majority vote and Dawid-Skene: hand cases, synthetic raters with known truth, and crowd-kit.

Plain unit tests: no database.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Hashable

import numpy as np
import pytest

from labeling.consensus import MajorityVote, dawid_skene, majority_vote

# --------------------------------------------------------------------------------------------
# Majority vote
# --------------------------------------------------------------------------------------------


def test_majority_vote_clear_winner():
    winner, agreement, tie = majority_vote(["correct", "incorrect", "correct"])

    assert winner == "correct"
    assert agreement == pytest.approx(2 / 3, abs=1e-12)
    assert tie is False


def test_majority_vote_unanimous():
    assert majority_vote(["unsure"] * 4) == MajorityVote("unsure", 1.0, False)


def test_majority_vote_two_way_tie_goes_to_adjudication():
    assert majority_vote(["a", "b", "b", "a"]) == MajorityVote(None, 0.5, True)


def test_majority_vote_three_way_tie():
    result = majority_vote(["a", "b", "c"])

    assert result.winner is None
    assert result.tie is True
    assert result.agreement == pytest.approx(1 / 3, abs=1e-12)


def test_majority_vote_tie_for_second_place_is_not_a_tie():
    assert majority_vote(["a", "a", "a", "b", "c"]) == MajorityVote("a", 0.6, False)


def test_majority_vote_single_none_and_empty():
    assert majority_vote(["a"]) == MajorityVote("a", 1.0, False)
    assert majority_vote(["a", None, "b", "b"]) == MajorityVote("b", 2 / 3, False)
    assert majority_vote([]) == MajorityVote(None, 0.0, False)
    assert majority_vote([None]) == MajorityVote(None, 0.0, False)


# --------------------------------------------------------------------------------------------
# Dawid-Skene: synthetic raters with known accuracies
# --------------------------------------------------------------------------------------------

ACCURACIES = (0.9, 0.85, 0.8, 0.6, 0.55)
CLASSES = ("cat", "dog", "fox")
PRIORS = (0.5, 0.3, 0.2)


def simulate(
    seed: int, *, n_items: int = 500, per_item: int | None = None
) -> tuple[list[tuple[int, str, str]], list[str], dict[str, float]]:
    """Raters of known accuracy; a wrong answer is uniform over the other classes.

    Returns the ratings, the true class of each item and each rater's accuracy in this sample.
    With ``per_item`` each item gets that many distinct raters at random, else all of them.
    """
    rng = np.random.default_rng(seed)
    n_classes = len(CLASSES)
    truth = rng.choice(n_classes, size=n_items, p=PRIORS)
    ratings: list[tuple[int, str, str]] = []
    right: Counter[str] = Counter()
    given: Counter[str] = Counter()
    for item in range(n_items):
        raters = (
            range(len(ACCURACIES))
            if per_item is None
            else rng.choice(len(ACCURACIES), size=per_item, replace=False)
        )
        for r in raters:
            correct = rng.random() < ACCURACIES[r]
            answer = truth[item]
            if not correct:  # one of the other classes, drawn only for a wrong answer
                answer = (answer + rng.integers(1, n_classes)) % n_classes
            ratings.append((item, f"r{r}", CLASSES[answer]))
            right[f"r{r}"] += int(correct)
            given[f"r{r}"] += 1
    return ratings, [CLASSES[t] for t in truth], {r: right[r] / given[r] for r in given}


def votes_by_item(ratings: list[tuple[int, str, str]]) -> dict[Hashable, list[str]]:
    votes: dict[Hashable, list[str]] = defaultdict(list)
    for item, _, value in ratings:
        votes[item].append(value)
    return votes


def majority_accuracy(ratings: list[tuple[int, str, str]], truth: list[str]) -> float:
    """Expected accuracy of majority vote with ties broken uniformly at random.

    Fairer to majority vote than counting every tie as a miss: a tie that holds the true class
    scores 1 / (number of tied classes).
    """
    score = 0.0
    for item, votes in votes_by_item(ratings).items():
        counts = Counter(votes)
        top = max(counts.values())
        tied = [value for value, count in counts.items() if count == top]
        score += (truth[item] in tied) / len(tied)
    return score / len(truth)


def label_accuracy(labels: dict[Hashable, Hashable], truth: list[str]) -> float:
    return sum(labels[item] == value for item, value in enumerate(truth)) / len(truth)


@pytest.fixture(scope="module")
def full_panel():
    """500 items, each labeled by all five raters (seed fixed)."""
    return simulate(7)


def test_dawid_skene_beats_majority_vote_with_full_panel(full_panel):
    ratings, truth, _ = full_panel

    result = dawid_skene(ratings)

    assert result.converged is True
    ds = label_accuracy(result.labels, truth)
    mv = majority_accuracy(ratings, truth)
    assert ds >= mv
    assert ds >= 0.95  # seed 7: 0.964 against 0.933 for majority vote


def test_dawid_skene_beats_majority_vote_with_three_of_five():
    ratings, truth, _ = simulate(7, per_item=3)

    result = dawid_skene(ratings)

    assert label_accuracy(result.labels, truth) >= majority_accuracy(ratings, truth)


def test_dawid_skene_recovers_rater_accuracies(full_panel):
    ratings, _, sample_accuracy = full_panel

    result = dawid_skene(ratings)

    for r, accuracy in enumerate(ACCURACIES):
        estimate = result.accuracy[f"r{r}"]
        assert estimate == pytest.approx(accuracy, abs=0.05)
        # and tighter against what the raters actually did in this sample
        assert estimate == pytest.approx(sample_accuracy[f"r{r}"], abs=0.02)
    # confusion diagonals tell the raters apart in the same order
    diagonal_mean = np.einsum("rkk->r", result.confusion) / len(CLASSES)
    assert list(np.argsort(-diagonal_mean)) == [0, 1, 2, 3, 4]


def test_dawid_skene_recovers_class_priors(full_panel):
    ratings, truth, _ = full_panel

    result = dawid_skene(ratings)

    assert result.classes == CLASSES
    observed = [truth.count(c) / len(truth) for c in CLASSES]
    np.testing.assert_allclose(result.priors, observed, atol=0.03)


def test_dawid_skene_result_shapes_and_normalisation(full_panel):
    ratings, _, _ = full_panel

    result = dawid_skene(ratings)

    assert result.posteriors.shape == (500, 3)
    assert result.confusion.shape == (5, 3, 3)
    assert result.raters == ("r0", "r1", "r2", "r3", "r4")
    np.testing.assert_allclose(result.posteriors.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(result.confusion.sum(axis=2), 1.0, atol=1e-12)
    assert result.priors.sum() == pytest.approx(1.0, abs=1e-12)
    map_labels = [CLASSES[k] for k in result.posteriors.argmax(axis=1)]
    assert [result.labels[u] for u in result.units] == map_labels
    assert set(result.distribution(0)) == set(CLASSES)
    assert sum(result.distribution(0).values()) == pytest.approx(1.0, abs=1e-12)
    assert result.confusion_for("r3").shape == (3, 3)
    assert np.isfinite(result.log_likelihood)
    assert result.log_likelihood < 0


def test_dawid_skene_is_deterministic(full_panel):
    ratings, _, _ = full_panel

    first = dawid_skene(ratings)
    second = dawid_skene(list(ratings))

    np.testing.assert_array_equal(first.posteriors, second.posteriors)
    np.testing.assert_array_equal(first.confusion, second.confusion)
    assert first.iterations == second.iterations


def test_dawid_skene_stops_at_max_iter(full_panel):
    ratings, _, _ = full_panel

    result = dawid_skene(ratings, max_iter=2)

    assert result.iterations == 2
    assert result.converged is False


def test_dawid_skene_unanimous_items():
    ratings = [(u, r, "yes" if u % 2 else "no") for u in range(10) for r in ("a", "b", "c")]

    result = dawid_skene(ratings)

    assert result.converged is True
    assert result.labels == {u: "yes" if u % 2 else "no" for u in range(10)}
    assert result.posteriors.max(axis=1).min() > 0.99
    assert result.accuracy["a"] == pytest.approx(1.0, abs=1e-3)


def test_dawid_skene_classes_argument():
    ratings = [(1, "a", "x"), (1, "b", "x"), (2, "a", "y"), (2, "b", "y")]

    result = dawid_skene(ratings, classes=["y", "never", "x"])

    assert result.classes == ("y", "never", "x")
    assert result.posteriors.shape == (2, 3)
    assert result.labels == {1: "x", 2: "y"}
    assert result.posteriors[:, 1].max() < 0.01
    with pytest.raises(ValueError, match="not in categories"):
        dawid_skene(ratings, classes=["x"])


def test_dawid_skene_refuses_bad_arguments():
    ratings = [(1, "a", "x"), (1, "b", "y")]
    with pytest.raises(ValueError, match="init"):
        dawid_skene(ratings, init="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="smoothing"):
        dawid_skene(ratings, smoothing=0)
    with pytest.raises(ValueError, match="more than once"):
        dawid_skene([(1, "a", "x"), (1, "a", "y")])


def test_dawid_skene_empty_input():
    result = dawid_skene([], classes=["x", "y"])

    assert result.units == ()
    assert result.posteriors.shape == (0, 2)
    assert result.labels == {}
    assert result.iterations == 0


# --------------------------------------------------------------------------------------------
# Dawid-Skene against crowd-kit (optional reference: skipped where it is not installed)
# --------------------------------------------------------------------------------------------


def crowdkit_fit(ratings: list[tuple[int, str, str]], **kwargs):
    crowdkit = pytest.importorskip("crowdkit.aggregation")
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(ratings, columns=["task", "worker", "label"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # crowd-kit's own pandas deprecation warnings
        return crowdkit.DawidSkene(**kwargs).fit(frame)


@pytest.mark.parametrize("per_item", [None, 3])
def test_dawid_skene_labels_match_crowdkit(per_item):
    # Defaults on both sides: ours smooths with a 0.01 pseudo-count and stops on posterior
    # change < 1e-6, crowd-kit clips at 1e-10 and stops on ELBO change < 1e-5. Same data, same
    # (majority) start: the MAP labels must agree.
    ratings, _, _ = simulate(7, per_item=per_item)

    ours = dawid_skene(ratings)
    theirs = crowdkit_fit(ratings)

    same = sum(theirs.labels_[u] == ours.labels[u] for u in ours.units)
    assert same / len(ours.units) >= 0.99


def test_dawid_skene_posteriors_match_crowdkit_at_the_same_fixed_point(full_panel):
    # With smoothing 1e-10 (crowd-kit clips probabilities at its _EPS = 1e-10 instead) and
    # both sides run to convergence, the two EM runs reach the same fixed point: posteriors,
    # priors and confusion matrices agree to 1e-6 (observed ~1e-10; what is left comes from
    # the different stopping rules, posterior change here and ELBO change there).
    # Posteriors are not compared at the default smoothing: a pseudo-count of 0.01 lifts a
    # confusion cell a rater never used from 1e-10 to ~1e-4, i.e. by ~14 in log space, which
    # moves the posteriors of the few items carrying such an answer (by up to 0.1 in seeded
    # runs) while leaving MAP labels alone: the test above checks those.
    ratings, _, _ = full_panel
    theirs = crowdkit_fit(ratings, n_iter=2000, tol=1e-14)
    classes = list(CLASSES)

    ours = dawid_skene(ratings, smoothing=1e-10, tol=1e-12, max_iter=5000)

    assert ours.converged is True
    theirs_posteriors = theirs.probas_.loc[list(ours.units), classes].to_numpy()
    np.testing.assert_allclose(ours.posteriors, theirs_posteriors, atol=1e-6)
    np.testing.assert_allclose(ours.priors, theirs.priors_.loc[classes].to_numpy(), atol=1e-6)
    for r, rater in enumerate(ours.raters):
        # crowd-kit: errors_.loc[(worker, answer), truth]; ours: confusion[r, truth, answer]
        theirs_confusion = theirs.errors_.loc[rater].reindex(classes, fill_value=0.0)
        np.testing.assert_allclose(
            ours.confusion[r], theirs_confusion.loc[classes, classes].to_numpy().T, atol=1e-6
        )

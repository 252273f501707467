"""Consensus over several reviewers' labels: majority vote and Dawid-Skene.

DESIGN.md, "QueueItem / Assignment / Label": when an item is complete its consensus is computed
(majority; ties go to adjudication; Dawid-Skene for queues that choose it). Pure Python + numpy,
no Django: callers pass plain values, ratings as ``(unit_id, rater_id, value)`` triples with
the same rules as :mod:`labeling.agreement` (``None`` values skipped, one rating per unit per
rater).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from labeling.agreement import EncodedRatings, Rating, encode_ratings

FloatArray = npt.NDArray[np.float64]

__all__ = ["DawidSkeneResult", "MajorityVote", "dawid_skene", "majority_vote"]


# --------------------------------------------------------------------------------------------
# Majority vote
# --------------------------------------------------------------------------------------------


class MajorityVote(NamedTuple):
    """Outcome of :func:`majority_vote`; unpacks as ``winner, agreement, tie``."""

    winner: Hashable | None
    agreement: float
    tie: bool


def majority_vote(values: Iterable[Hashable]) -> MajorityVote:
    """The value most reviewers gave one item.

    ``values`` holds one vote per reviewer (hashable, compared with ``==``); ``None`` votes are
    skipped. ``agreement`` is the share of votes for the most voted value. On a tie for first
    place ``winner`` is ``None`` and ``tie`` is ``True`` (the item goes to adjudication), and
    ``agreement`` is still the share of each tied value (0.5 for 2 against 2). No votes at all
    gives ``(None, 0.0, False)``.
    """
    counts = Counter(value for value in values if value is not None)
    total = sum(counts.values())
    if total == 0:
        return MajorityVote(None, 0.0, False)
    ranked = counts.most_common(2)
    top_value, top_count = ranked[0]
    tie = len(ranked) > 1 and ranked[1][1] == top_count
    return MajorityVote(None if tie else top_value, top_count / total, tie)


# --------------------------------------------------------------------------------------------
# Dawid-Skene
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DawidSkeneResult:
    """Fitted Dawid-Skene model.

    Arrays are indexed by position in ``units``, ``raters`` and ``classes``:

    * ``posteriors[u, k]``: probability that unit ``u``'s true class is ``classes[k]``; rows sum
      to 1, computed from the reported ``priors`` and ``confusion``.
    * ``priors[k]``: estimated share of class ``k``.
    * ``confusion[r, k, l]``: probability that rater ``r`` answers ``classes[l]`` when the truth
      is ``classes[k]`` (rows sum to 1).
    * ``labels``: the most probable class of each unit (first class in ``classes`` order on an
      exact tie).
    * ``accuracy``: per rater, the expected share of their labels that are correct,
      ``mean over their ratings (u, l) of posteriors[u, l]``.
    * ``log_likelihood``: log-probability of the observed labels under the reported parameters.
    """

    units: tuple[Hashable, ...]
    raters: tuple[Hashable, ...]
    classes: tuple[Hashable, ...]
    posteriors: FloatArray
    priors: FloatArray
    confusion: FloatArray
    labels: dict[Hashable, Hashable]
    accuracy: dict[Hashable, float]
    iterations: int
    converged: bool
    log_likelihood: float

    def distribution(self, unit: Hashable) -> dict[Hashable, float]:
        """Posterior distribution of one unit as ``{class: probability}``."""
        row = self.posteriors[self.units.index(unit)]
        return dict(zip(self.classes, row.tolist(), strict=True))

    def confusion_for(self, rater: Hashable) -> FloatArray:
        """Confusion matrix of one rater (rows: true class, columns: answer)."""
        return self.confusion[self.raters.index(rater)]


def _soft_majority(encoded: EncodedRatings) -> FloatArray:
    """Each unit's vote shares per class: the initial posteriors of Dawid & Skene (1979)."""
    counts = encoded.value_counts().astype(np.float64)
    return counts / counts.sum(axis=1, keepdims=True)


def _m_step(
    encoded: EncodedRatings, posteriors: FloatArray, smoothing: float
) -> tuple[FloatArray, FloatArray]:
    """Class priors and confusion matrices that maximise the expected complete-data
    log-likelihood given ``posteriors``, each count raised by the ``smoothing`` pseudo-count."""
    n_units, n_classes = posteriors.shape
    n_raters = len(encoded.raters)
    priors = (posteriors.sum(axis=0) + smoothing) / (n_units + n_classes * smoothing)
    # counts[r, k, l] = sum over rater r's ratings with answer l of P(unit's truth = k)
    answer = encoded.rater * n_classes + encoded.value
    counts = np.empty((n_raters, n_classes, n_classes))
    for k in range(n_classes):
        counts[:, k, :] = np.bincount(
            answer, weights=posteriors[encoded.unit, k], minlength=n_raters * n_classes
        ).reshape(n_raters, n_classes)
    counts += smoothing
    confusion = counts / counts.sum(axis=2, keepdims=True)
    return priors, confusion


def _e_step(
    encoded: EncodedRatings, priors: FloatArray, confusion: FloatArray
) -> tuple[FloatArray, float]:
    """Posteriors of each unit's true class, and the log-likelihood of the observed labels."""
    n_units, n_classes = len(encoded.units), priors.size
    log_confusion = np.log(confusion)
    log_joint = np.empty((n_units, n_classes))
    for k in range(n_classes):
        log_joint[:, k] = np.log(priors[k]) + np.bincount(
            encoded.unit,
            weights=log_confusion[encoded.rater, k, encoded.value],
            minlength=n_units,
        )
    # log-sum-exp per unit, shifted by the row maximum so that exp never underflows to 0/0
    shift = log_joint.max(axis=1, keepdims=True)
    joint = np.exp(log_joint - shift)
    evidence = joint.sum(axis=1, keepdims=True)
    log_likelihood = float((np.log(evidence) + shift).sum())
    return joint / evidence, log_likelihood


def dawid_skene(
    ratings: Iterable[Rating],
    classes: Sequence[Hashable] | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    init: Literal["majority"] = "majority",
    *,
    smoothing: float = 0.01,
) -> DawidSkeneResult:
    """Estimate true classes and rater confusion matrices with EM (Dawid & Skene 1979).

    Inputs:

    * ``ratings``: ``(unit_id, rater_id, value)`` triples (see :mod:`labeling.agreement`).
    * ``classes``: the possible classes in the order used by the result's arrays; a class
      nobody chose gets a column too. By default the observed values, sorted when orderable.
      A value outside ``classes`` raises ``ValueError``.
    * ``max_iter``: at most this many EM rounds (each an M-step then an E-step).
    * ``tol``: converged once no posterior probability moves by ``tol`` or more in a round.
    * ``init``: ``"majority"``, the only option, starts from each unit's vote shares (D&S's
      own initialisation); a uniform start would sit on a symmetric fixed point.
    * ``smoothing``: pseudo-count added to every confusion-matrix cell and every class count
      in the M-step (additive smoothing; EM then finds the MAP estimate under a Dirichlet
      prior of ``1 + smoothing``). It keeps probabilities off 0, so one unusual answer cannot
      veto a class through ``log 0``, and a rater's row for a class they never saw is uniform
      rather than undefined. At the default 0.01, a rater with 20 labels of a class moves by
      less than 0.05 percentage points. Must be > 0.

    Deterministic: no randomness, and ties between classes resolve to the first class.
    """
    if init != "majority":
        raise ValueError(f"init must be 'majority', not {init!r}")
    if smoothing <= 0:
        raise ValueError("smoothing must be > 0")
    if max_iter < 1:
        raise ValueError("max_iter must be >= 1")
    encoded = encode_ratings(ratings, categories=classes)
    n_units, n_classes = len(encoded.units), len(encoded.categories)
    if n_units == 0:
        return DawidSkeneResult(
            units=(),
            raters=(),
            classes=encoded.categories,
            posteriors=np.empty((0, n_classes)),
            priors=np.full(n_classes, 1.0 / n_classes) if n_classes else np.empty(0),
            confusion=np.empty((0, n_classes, n_classes)),
            labels={},
            accuracy={},
            iterations=0,
            converged=True,
            log_likelihood=0.0,
        )

    posteriors = _soft_majority(encoded)
    converged = False
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        priors, confusion = _m_step(encoded, posteriors, smoothing)
        updated, log_likelihood = _e_step(encoded, priors, confusion)
        change = float(np.abs(updated - posteriors).max())
        posteriors = updated
        if change < tol:
            converged = True
            break

    map_class = posteriors.argmax(axis=1)
    labels = {
        unit: encoded.categories[k]
        for unit, k in zip(encoded.units, map_class.tolist(), strict=True)
    }
    n_raters = len(encoded.raters)
    correct = np.bincount(
        encoded.rater, weights=posteriors[encoded.unit, encoded.value], minlength=n_raters
    )
    given = np.bincount(encoded.rater, minlength=n_raters)
    accuracy = dict(zip(encoded.raters, (correct / given).tolist(), strict=True))
    return DawidSkeneResult(
        units=encoded.units,
        raters=encoded.raters,
        classes=encoded.categories,
        posteriors=posteriors,
        priors=priors,
        confusion=confusion,
        labels=labels,
        accuracy=accuracy,
        iterations=iterations,
        converged=converged,
        log_likelihood=log_likelihood,
    )

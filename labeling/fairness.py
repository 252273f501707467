"""Statistics of segment audits: Hájek estimates, Kish effective n, Wilson and Newcombe
intervals, and the flag rules. Pure functions over plain numbers; no Django.

Every audited figure is a proportion ``p = Σ w·y / Σ w`` over the rows of a denominator (the
decided items for the error rate, the items whose true class is the positive one for the FNR,
…), with ``w = 1/π`` (the inverse inclusion probability recorded by sampling) or ``w = 1``
when unweighted. That is the Hájek estimator: a ratio of two Horvitz-Thompson totals, which
needs no population size and is less variable than Horvitz-Thompson itself when the weights
vary.

Uncertainty. Unequal weights cost precision: Kish's effective sample size
``n_eff = (Σ w)² / Σ w²`` is the size of a simple random sample with the same variance of the
mean (for outcomes unrelated to the weights). The interval is Wilson's score interval with
``n = n_eff``: exact Wilson when unweighted (``n_eff = n``), the usual design-effect adjusted
Wilson otherwise. Wilson keeps its coverage near 0 and 1 where the Wald interval collapses, so a
segment with 0 errors in 40 still gets an honest upper bound.

A difference ``p₁ - p₂`` gets Newcombe's hybrid score interval (method 10 of Newcombe 1998),
built from the two Wilson intervals ``(l₁, u₁)``, ``(l₂, u₂)``::

    low  = d - sqrt((p₁ - l₁)² + (u₂ - p₂)²)
    high = d + sqrt((u₁ - p₁)² + (p₂ - l₂)²)

so it agrees with the Wilson bounds shown beside it and keeps good coverage for small n. It
assumes the two estimates independent. Against the default reference, *overall* (every audited
row, the segment included: the usual convention of fairness toolkits, fairlearn's
``difference(method="to_overall")`` among them), the two are positively correlated, which makes
the true variance of the difference smaller than the independent formula says: the interval is
conservative there, the safe side for a flag.

Flags. A figure is compared only when both it and the reference rest on at least ``min_n``
rows. It is flagged when the interval of the difference excludes zero *and* the difference is
at least ``tolerance`` in size (a difference must be both real and large enough to matter), and
the selection rate also when its ratio to the reference is under 4/5 (the "four-fifths rule" of
disparate impact, with ``positive_label`` as the favourable outcome).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

__all__ = [
    "FOUR_FIFTHS",
    "Comparison",
    "Estimate",
    "Sums",
    "compare",
    "estimate",
    "hajek",
    "kish_effective_n",
    "newcombe_interval",
    "wilson_interval",
    "z_value",
]

FOUR_FIFTHS = 0.8


@dataclass(frozen=True, slots=True)
class Sums:
    """What SQL hands back for one figure of one segment.

    ``n``, ``sw`` and ``sww`` are the count, Σw and Σw² over the rows of the denominator;
    ``k`` and ``swk`` the count and Σw over those of them where the event happened.
    """

    n: int
    sw: float
    sww: float
    k: int
    swk: float


@dataclass(frozen=True, slots=True)
class Estimate:
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    weighted_n: float
    effective_n: float


@dataclass(frozen=True, slots=True)
class Comparison:
    reference: float | None
    difference: float | None
    diff_low: float | None
    diff_high: float | None
    ratio: float | None
    flagged: bool
    reasons: tuple[str, ...]


@lru_cache(maxsize=32)
def z_value(confidence: float) -> float:
    """The two-sided normal quantile for ``confidence`` (1.959963… for 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence!r}")
    # The standard library's quantile (Wichura's AS241, ~1e-16): scipy is not a runtime
    # dependency, and importing it cost every web and worker process ~70 MB.
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def kish_effective_n(sum_w: float, sum_w2: float) -> float:
    """Kish's effective sample size ``(Σw)² / Σw²``; 0 for no rows."""
    if sum_w2 <= 0:
        return 0.0
    return sum_w * sum_w / sum_w2


def hajek(sum_wy: float, sum_w: float) -> float | None:
    """The Hájek (ratio) estimate ``Σ w·y / Σ w``; None without rows."""
    if sum_w <= 0:
        return None
    # Float sums can overshoot by an ulp; a proportion stays in [0, 1].
    return min(1.0, max(0.0, sum_wy / sum_w))


def wilson_interval(p: float, n: float, confidence: float) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``p`` observed on ``n`` (possibly effective,
    so not necessarily whole) rows. Same formula as statsmodels' ``proportion_confint(count=p·n,
    nobs=n, method="wilson")``."""
    if n <= 0:
        raise ValueError("a Wilson interval needs n > 0")
    z = z_value(confidence)
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def newcombe_interval(
    p1: float, ci1: tuple[float, float], p2: float, ci2: tuple[float, float]
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for ``p1 - p2`` from the two Wilson intervals."""
    (l1, u1), (l2, u2) = ci1, ci2
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, low), min(1.0, high)


def estimate(sums: Sums, *, confidence: float, min_n: int) -> Estimate:
    """The Hájek estimate with its Wilson interval on the effective n.

    Below ``min_n`` rows the value and interval are suppressed (None): too few to say anything
    a reader should act on, and small cells are where people are easiest to single out.
    """
    n_eff = kish_effective_n(sums.sw, sums.sww)
    value = hajek(sums.swk, sums.sw)
    if value is None or sums.n < min_n or n_eff <= 0:
        return Estimate(None, None, None, sums.n, sums.sw, n_eff)
    low, high = wilson_interval(value, n_eff, confidence)
    return Estimate(value, low, high, sums.n, sums.sw, n_eff)


def compare(
    segment: Estimate,
    reference: Estimate,
    *,
    tolerance: float,
    four_fifths: bool = False,
) -> Comparison:
    """Difference and ratio of a segment's estimate to the reference's, and whether to flag.

    ``four_fifths`` applies the selection-rate rule (ratio under 0.8) on top of the difference
    rule. Nothing is compared, or flagged, when either side is suppressed.
    """
    if (
        segment.value is None
        or reference.value is None
        or segment.ci_low is None
        or segment.ci_high is None
        or reference.ci_low is None
        or reference.ci_high is None
    ):
        return Comparison(reference.value, None, None, None, None, False, ())
    difference = segment.value - reference.value
    low, high = newcombe_interval(
        segment.value,
        (segment.ci_low, segment.ci_high),
        reference.value,
        (reference.ci_low, reference.ci_high),
    )
    ratio = segment.value / reference.value if reference.value > 0 else None
    reasons: list[str] = []
    # A small epsilon: 0.15 - 0.10 is 0.04999… in floating point, and a reader who set a
    # tolerance of 0.05 means that difference to count.
    if (low > 0 or high < 0) and abs(difference) >= tolerance - 1e-12:
        reasons.append("difference")
    if four_fifths and ratio is not None and ratio < FOUR_FIFTHS:
        reasons.append("four_fifths")
    return Comparison(reference.value, difference, low, high, ratio, bool(reasons), tuple(reasons))

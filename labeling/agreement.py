"""Inter-rater agreement for nominal labels: Krippendorff's alpha, Cohen's kappa, percent agreement.

DESIGN.md, "Quality": per queue we report Krippendorff's alpha (nominal), pairwise Cohen's kappa
and percent agreement. This module is pure Python + numpy (no Django), so selectors and tasks
read labels from the database and hand them over as plain data:

    ratings = [(unit_id, rater_id, value), ...]

* ``unit_id``: the thing being labeled (a queue item's pk); ``rater_id``: who labeled it (a
  reviewer's pk); ``value``: the nominal label (a verdict or a ``true_label`` string). All three
  must be hashable; values are compared with ``==`` only (nominal level).
* A ``value`` of ``None`` means "not rated" and the triple is skipped, so a nullable column can
  be passed as it is.
* A rater rates a unit at most once (the database has one label per item per reviewer): a
  repeated ``(unit_id, rater_id)`` raises ``ValueError`` rather than being silently counted
  twice. Pass the current label, not its history.

Every statistic returns ``None`` when it is undefined for the data (no pairable ratings, or no
variation to measure agreement against) rather than ``nan`` or an exception: "no figure yet" is
a normal state for a young queue.

The work is vectorised over the ratings (one ``bincount`` per statistic), so 100k labels take
milliseconds, not a Python loop per unit.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import numpy.typing as npt

Rating = tuple[Hashable, Hashable, Hashable]
"""One label: ``(unit_id, rater_id, value)``."""

IntArray = npt.NDArray[np.int64]

__all__ = [
    "EncodedRatings",
    "PairKappa",
    "Rating",
    "RatingsMatrix",
    "cohen_kappa",
    "encode_ratings",
    "krippendorff_alpha_nominal",
    "mean_pairwise_kappa",
    "pairwise_cohen_kappa",
    "percent_agreement",
    "ratings_matrix",
]


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EncodedRatings:
    """Ratings as integer codes, one entry per (non-missing) rating.

    ``unit[i]``, ``rater[i]`` and ``value[i]`` index into ``units``, ``raters`` and
    ``categories``. ``units`` keep the order of first appearance; ``raters`` and ``categories``
    are sorted when their ids are mutually orderable (else order of first appearance), or follow
    the ``categories`` argument of :func:`encode_ratings`.
    """

    units: tuple[Hashable, ...]
    raters: tuple[Hashable, ...]
    categories: tuple[Hashable, ...]
    unit: IntArray
    rater: IntArray
    value: IntArray

    @property
    def n_ratings(self) -> int:
        return int(self.unit.size)

    def value_counts(self) -> IntArray:
        """Units x categories matrix: how many raters gave each category to each unit."""
        n_units, n_categories = len(self.units), len(self.categories)
        flat = np.bincount(self.unit * n_categories + self.value, minlength=n_units * n_categories)
        return flat.reshape(n_units, n_categories)


def _encode_column(column: list[Hashable], *, sort: bool) -> tuple[tuple[Hashable, ...], IntArray]:
    index: dict[Hashable, int] = {}
    # setdefault evaluates len(index) before inserting, so new keys get 0, 1, 2, ...
    codes = np.fromiter(
        (index.setdefault(x, len(index)) for x in column), dtype=np.int64, count=len(column)
    )
    labels = list(index)
    if not sort:
        return tuple(labels), codes
    try:
        ordered = sorted(labels)  # type: ignore[type-var]
    except TypeError:  # ids of mixed, unorderable types: keep first appearance
        return tuple(labels), codes
    rank = np.empty(len(labels), dtype=np.int64)
    rank[[index[label] for label in ordered]] = np.arange(len(labels), dtype=np.int64)
    return tuple(ordered), rank[codes]


def encode_ratings(
    ratings: Iterable[Rating], *, categories: Sequence[Hashable] | None = None
) -> EncodedRatings:
    """Encode ``(unit_id, rater_id, value)`` triples as integer codes.

    ``categories``, when given, fixes the category order (and admits categories nobody chose);
    a value outside it raises ``ValueError``. Triples whose value is ``None`` are skipped. A
    rater rating the same unit twice raises ``ValueError``.
    """
    unit_col: list[Hashable] = []
    rater_col: list[Hashable] = []
    value_col: list[Hashable] = []
    for unit, rater, value in ratings:
        if value is None:
            continue
        unit_col.append(unit)
        rater_col.append(rater)
        value_col.append(value)

    units, unit_codes = _encode_column(unit_col, sort=False)
    raters, rater_codes = _encode_column(rater_col, sort=True)
    if categories is None:
        cats, value_codes = _encode_column(value_col, sort=True)
    else:
        cats = tuple(categories)
        position = {category: i for i, category in enumerate(cats)}
        if len(position) != len(cats):
            raise ValueError(f"categories contain duplicates: {list(cats)!r}")
        unknown = {v for v in value_col if v not in position}
        if unknown:
            raise ValueError(f"values {sorted(map(repr, unknown))} are not in categories {cats!r}")
        value_codes = np.fromiter(
            (position[v] for v in value_col), dtype=np.int64, count=len(value_col)
        )

    encoded = EncodedRatings(units, raters, cats, unit_codes, rater_codes, value_codes)
    _refuse_duplicates(encoded)
    return encoded


def _refuse_duplicates(encoded: EncodedRatings) -> None:
    key = encoded.unit * max(len(encoded.raters), 1) + encoded.rater
    unique, counts = np.unique(key, return_counts=True)
    if unique.size != key.size:
        first = int(unique[np.argmax(counts > 1)])
        unit, rater = divmod(first, max(len(encoded.raters), 1))
        raise ValueError(
            f"rater {encoded.raters[rater]!r} rated unit {encoded.units[unit]!r} more than once"
        )


@dataclass(frozen=True, slots=True)
class RatingsMatrix:
    """Units x raters matrix of category codes; ``-1`` where the rater did not rate the unit."""

    units: tuple[Hashable, ...]
    raters: tuple[Hashable, ...]
    categories: tuple[Hashable, ...]
    codes: IntArray

    def values(self) -> npt.NDArray[np.object_]:
        """The same matrix holding the category values themselves, ``None`` where missing."""
        lookup = np.array([*self.categories, None], dtype=object)
        return lookup[self.codes]  # code -1 picks the trailing None


def ratings_matrix(
    ratings: Iterable[Rating], *, categories: Sequence[Hashable] | None = None
) -> RatingsMatrix:
    """Build the dense units x raters matrix (missing = ``-1``) from ``(unit, rater, value)``.

    Same input rules as :func:`encode_ratings`. Meant for inspection, export and tests; the
    statistics below work on the sparse triples and never build it.
    """
    encoded = encode_ratings(ratings, categories=categories)
    codes = np.full((len(encoded.units), len(encoded.raters)), -1, dtype=np.int64)
    codes[encoded.unit, encoded.rater] = encoded.value
    return RatingsMatrix(encoded.units, encoded.raters, encoded.categories, codes)


# --------------------------------------------------------------------------------------------
# Krippendorff's alpha
# --------------------------------------------------------------------------------------------


def krippendorff_alpha_nominal(ratings: Iterable[Rating]) -> float | None:
    """Krippendorff's alpha for nominal data, from ``(unit_id, rater_id, value)`` triples.

    Coincidence-matrix formula (Krippendorff 2011, "Computing Krippendorff's alpha-reliability"):
    only units with at least two ratings are pairable; with ``n_uc`` the number of ratings of
    category ``c`` in unit ``u``, ``m_u`` the unit's ratings, ``n_c`` the pairable ratings of
    category ``c`` and ``n`` all pairable ratings,

        D_o = sum_u (m_u² - sum_c n_uc²) / (m_u - 1)     (off-diagonal coincidences)
        D_e = (n² - sum_c n_c²) / (n - 1)
        alpha = 1 - D_o / D_e

    Returns ``None`` when alpha is undefined, exactly where the ``krippendorff`` package raises
    ``ValueError`` or returns ``nan``: no unit has two ratings, or every pairable rating has the
    same value (``D_e = 0``). In particular perfect agreement on a single category is ``None``,
    not 1.0: with no variation there is nothing to be reliable about.
    """
    encoded = encode_ratings(ratings)
    counts = encoded.value_counts().astype(np.float64)
    per_unit = counts.sum(axis=1)
    pairable = per_unit >= 2
    counts, per_unit = counts[pairable], per_unit[pairable]
    n_c = counts.sum(axis=0)
    n = n_c.sum()
    expected = n * n - np.dot(n_c, n_c)  # (n - 1) · D_e
    if n < 2 or expected == 0:
        return None
    observed = ((per_unit * per_unit - (counts * counts).sum(axis=1)) / (per_unit - 1)).sum()
    return float(1.0 - (n - 1) * observed / expected)


# --------------------------------------------------------------------------------------------
# Percent agreement
# --------------------------------------------------------------------------------------------


def percent_agreement(ratings: Iterable[Rating]) -> float | None:
    """Pairwise percent agreement, from ``(unit_id, rater_id, value)`` triples.

    The share of agreeing pairs among all pairs of ratings of the same unit, pooled over units:
    ``sum_u sum_c C(n_uc, 2) / sum_u C(m_u, 2)``. A unit with ``m`` ratings contributes
    ``m(m-1)/2`` pairs, so units with more ratings weigh more (this is not the mean of per-unit
    agreements). Units with a single rating have no pair and do not count. ``None`` when there
    is no pair at all. A fraction in [0, 1], not a percentage.
    """
    counts = encode_ratings(ratings).value_counts()
    per_unit = counts.sum(axis=1)
    pairs = int((per_unit * (per_unit - 1)).sum()) // 2
    if pairs == 0:
        return None
    agreeing = int((counts * (counts - 1)).sum()) // 2
    return agreeing / pairs


# --------------------------------------------------------------------------------------------
# Cohen's kappa
# --------------------------------------------------------------------------------------------


def _kappa(n: IntArray, agree: IntArray, chance: IntArray) -> list[float | None]:
    """Kappa from integer counts: ``n`` common units, ``agree`` equal labels and
    ``chance = sum_c a_c·b_c`` (products of the two raters' marginals).

    ``1 - (1 - p_o) / (1 - p_e)`` multiplied through by ``n²`` so that the only rounding is the
    final division (the form scikit-learn uses). Undefined (``None``) where ``p_e = 1``: both
    raters used one and the same category throughout.
    """
    numerator = n * (n - agree)
    denominator = n * n - chance
    return [
        None if den == 0 else 1.0 - int(num) / int(den)
        for num, den in zip(numerator.tolist(), denominator.tolist(), strict=True)
    ]


def _as_unit_values(
    pairs: Mapping[Hashable, Hashable] | Iterable[tuple[Hashable, Hashable]],
) -> dict[Hashable, Hashable]:
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    result: dict[Hashable, Hashable] = {}
    for unit, value in items:
        if value is None:
            continue
        if unit in result:
            raise ValueError(f"unit {unit!r} is rated more than once by the same rater")
        result[unit] = value
    return result


def cohen_kappa(
    pairs_a: Mapping[Hashable, Hashable] | Iterable[tuple[Hashable, Hashable]],
    pairs_b: Mapping[Hashable, Hashable] | Iterable[tuple[Hashable, Hashable]],
) -> float | None:
    """Cohen's kappa between two raters over the units both rated.

    Each argument is one rater's labels, as ``{unit_id: value}`` or ``(unit_id, value)`` pairs;
    ``None`` values are skipped and a repeated unit raises ``ValueError``. Units only one of
    them rated are ignored. Returns ``None`` when there is no common unit or when chance
    agreement is 1 (both used a single, identical category), where scikit-learn's
    ``cohen_kappa_score`` gives ``nan``.
    """
    a = _as_unit_values(pairs_a)
    b = _as_unit_values(pairs_b)
    common = [unit for unit in a if unit in b]
    if not common:
        return None
    index: dict[Hashable, int] = {}
    va = np.array([index.setdefault(a[unit], len(index)) for unit in common], dtype=np.int64)
    vb = np.array([index.setdefault(b[unit], len(index)) for unit in common], dtype=np.int64)
    agree = int(np.count_nonzero(va == vb))
    size = len(index)
    chance = int(np.dot(np.bincount(va, minlength=size), np.bincount(vb, minlength=size)))
    n = np.array([len(common)], dtype=np.int64)
    return _kappa(n, np.array([agree]), np.array([chance]))[0]


class PairKappa(TypedDict):
    """Cohen's kappa of one pair of raters and ``n``, the number of units both rated."""

    kappa: float | None
    n: int


def _within_unit_pairs(encoded: EncodedRatings) -> tuple[IntArray, IntArray]:
    """Indices ``(i, j)`` of every pair of ratings of the same unit, with ``rater[i] <
    rater[j]``.

    Ratings sorted by (unit, rater) put a unit's ratings side by side, so pairing each rating
    with the one ``d`` places later, for ``d`` up to the largest number of ratings per unit,
    yields every pair exactly once. The loop runs (max ratings per unit - 1) times, each step
    vectorised over all ratings.
    """
    order = np.lexsort((encoded.rater, encoded.unit))
    unit = encoded.unit[order]
    if unit.size < 2:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    max_per_unit = int(np.bincount(unit).max())
    firsts, seconds = [], []
    for d in range(1, max_per_unit):
        same = np.flatnonzero(unit[:-d] == unit[d:])
        firsts.append(order[same])
        seconds.append(order[same + d])
    if not firsts:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(firsts), np.concatenate(seconds)


def _pairwise_counts(
    encoded: EncodedRatings,
) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray]:
    """Per pair of raters with common units: ``(rater_a, rater_b, n, agree, chance)``."""
    i, j = _within_unit_pairs(encoded)
    n_raters, n_categories = len(encoded.raters), len(encoded.categories)
    rater_a, rater_b = encoded.rater[i], encoded.rater[j]
    value_a, value_b = encoded.value[i], encoded.value[j]
    pair_key, pair = np.unique(rater_a * n_raters + rater_b, return_inverse=True)
    n_pairs = pair_key.size
    n = np.bincount(pair, minlength=n_pairs)
    agree = np.bincount(pair, weights=(value_a == value_b), minlength=n_pairs).astype(np.int64)
    size = n_pairs * n_categories
    marginal_a = np.bincount(pair * n_categories + value_a, minlength=size)
    marginal_b = np.bincount(pair * n_categories + value_b, minlength=size)
    chance = (marginal_a * marginal_b).reshape(n_pairs, n_categories).sum(axis=1)
    first, second = np.divmod(pair_key, n_raters)
    return first, second, n, agree, chance


def pairwise_cohen_kappa(
    ratings: Iterable[Rating],
) -> dict[tuple[Hashable, Hashable], PairKappa]:
    """Cohen's kappa for every pair of raters with at least one common unit.

    Input: ``(unit_id, rater_id, value)`` triples (rules as in :func:`encode_ratings`). Keys are
    ``(rater_a, rater_b)`` with ``rater_a < rater_b`` when rater ids are orderable (else in
    order of first appearance), each pair once; pairs with no common unit are absent. Each value
    is ``{"kappa": float | None, "n": common units}``, kappa as :func:`cohen_kappa` computes it
    over those units (``None`` where undefined).
    """
    encoded = encode_ratings(ratings)
    first, second, n, agree, chance = _pairwise_counts(encoded)
    kappas = _kappa(n, agree, chance)
    raters = encoded.raters
    return {
        (raters[a], raters[b]): PairKappa(kappa=kappa, n=int(count))
        for a, b, count, kappa in zip(
            first.tolist(), second.tolist(), n.tolist(), kappas, strict=True
        )
    }


def mean_pairwise_kappa(ratings: Iterable[Rating], *, weighted: bool = True) -> float | None:
    """Mean of :func:`pairwise_cohen_kappa` over the pairs where kappa is defined.

    Weighted by the number of common units by default: in a queue where reviewers overlap
    unevenly, a pair that shared 2 items has a kappa of ±1 or so by chance and should not count
    as much as a pair that shared 2,000. ``weighted=False`` gives the plain mean (Light's kappa,
    Light 1971). ``None`` when no pair has a defined kappa.
    """
    pairs = [pair for pair in pairwise_cohen_kappa(ratings).values() if pair["kappa"] is not None]
    if not pairs:
        return None
    kappas = np.array([pair["kappa"] for pair in pairs], dtype=np.float64)
    weights = np.array([pair["n"] if weighted else 1 for pair in pairs], dtype=np.float64)
    return float(np.dot(kappas, weights) / weights.sum())

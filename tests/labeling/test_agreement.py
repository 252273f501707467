"""Agreement statistics against reference implementations (krippendorff, scikit-learn).

Plain unit tests: no database. Reference data is built here from raters x units matrices
independently of ``labeling.agreement``'s own encoding, so an encoding bug cannot hide in both.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Hashable, Sequence

import krippendorff
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score

from labeling.agreement import (
    cohen_kappa,
    encode_ratings,
    krippendorff_alpha_nominal,
    mean_pairwise_kappa,
    pairwise_cohen_kappa,
    percent_agreement,
    ratings_matrix,
)

CATEGORIES = ("correct", "incorrect", "unsure", "spam", "other")

Matrix = Sequence[Sequence[Hashable | None]]  # raters x units, None = missing


def triples(matrix: Matrix) -> list[tuple[int, str, Hashable]]:
    """(unit, rater, value) for every rating of a raters x units matrix."""
    return [
        (unit, f"rater-{rater}", value)
        for rater, row in enumerate(matrix)
        for unit, value in enumerate(row)
        if value is not None
    ]


def reliability_data(matrix: Matrix) -> np.ndarray:
    """The matrix in the krippendorff package's format: float codes, nan for missing."""
    values = sorted({v for row in matrix for v in row} - {None})
    codes = {value: i for i, value in enumerate(values)}
    return np.array(
        [[np.nan if v is None else codes[v] for v in row] for row in matrix], dtype=float
    )


def reference_alpha(matrix: Matrix) -> float | None:
    """krippendorff.alpha, with "undefined" (ValueError or nan) as None."""
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            value = krippendorff.alpha(
                reliability_data=reliability_data(matrix), level_of_measurement="nominal"
            )
    except ValueError:
        return None
    return None if math.isnan(value) else float(value)


def assert_alpha_matches_reference(matrix: Matrix) -> float | None:
    ours = krippendorff_alpha_nominal(triples(matrix))
    expected = reference_alpha(matrix)
    if expected is None:
        assert ours is None
    else:
        assert ours is not None
        assert ours == pytest.approx(expected, abs=1e-9)
    return ours


def random_matrix(
    rng: np.random.Generator, *, n_raters: int, n_units: int, n_categories: int, missing: float
) -> list[list[str | None]]:
    """Raters who mostly agree with a hidden truth, with some ratings missing."""
    truth = rng.integers(0, n_categories, size=n_units)
    skill = rng.uniform(0.3, 0.95, size=n_raters)
    noise = rng.integers(0, n_categories, size=(n_raters, n_units))
    keep = rng.random((n_raters, n_units)) < skill[:, None]
    codes = np.where(keep, truth[None, :], noise)
    absent = rng.random((n_raters, n_units)) < missing
    return [
        [None if absent[r, u] else CATEGORIES[codes[r, u]] for u in range(n_units)]
        for r in range(n_raters)
    ]


# --------------------------------------------------------------------------------------------
# Krippendorff's alpha
# --------------------------------------------------------------------------------------------


def test_alpha_perfect_agreement_is_one():
    matrix = [["a", "b", "c", "a"], ["a", "b", "c", "a"], ["a", "b", None, "a"]]

    assert assert_alpha_matches_reference(matrix) == pytest.approx(1.0, abs=1e-12)


def test_alpha_systematic_disagreement_is_negative():
    # N units, one rater always "a", the other always "b": alpha = (1 - N) / N
    matrix = [["a"] * 5, ["b"] * 5]

    assert assert_alpha_matches_reference(matrix) == pytest.approx(-0.8, abs=1e-12)


def test_alpha_swapped_labels():
    # o_ab = o_ba = 4, n_a = n_b = 4, n = 8: alpha = 1 - 7 * 8 / (64 - 32)
    matrix = [["a", "b", "a", "b"], ["b", "a", "b", "a"]]

    assert assert_alpha_matches_reference(matrix) == pytest.approx(-0.75, abs=1e-12)


def test_alpha_with_missing_values():
    matrix = [
        ["yes", "no", None, "yes", "no", "yes"],
        ["yes", None, "no", "yes", "yes", None],
        [None, "no", "no", "no", "yes", "yes"],
    ]

    assert assert_alpha_matches_reference(matrix) is not None


def test_alpha_textbook_example_krippendorff_2011():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: four
    # observers, twelve units, values 1-5 with gaps; nominal alpha = 0.743.
    n = None
    matrix = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ]

    alpha = assert_alpha_matches_reference(matrix)

    assert alpha == pytest.approx(113 / 152, abs=1e-12)
    assert round(alpha, 3) == 0.743


def test_alpha_wikipedia_example():
    # Three coders, fifteen units (Wikipedia "Krippendorff's alpha"): nominal alpha = 0.691
    n = None
    matrix = [
        [n, n, n, n, n, 3, 4, 1, 2, 1, 1, 3, 3, n, 3],
        [1, n, 2, 1, 3, 3, 4, 3, n, n, n, n, n, n, n],
        [n, n, 2, 1, 3, 4, 4, n, 2, 1, 1, 3, 3, n, 4],
    ]

    assert assert_alpha_matches_reference(matrix) == pytest.approx(56 / 81, abs=1e-12)


def test_alpha_undefined_for_a_single_category():
    # no variation at all: the krippendorff package refuses ("more than one value")
    assert assert_alpha_matches_reference([["a", "a", "a"], ["a", "a", None]]) is None


def test_alpha_undefined_when_only_an_unpairable_rating_differs():
    # the lone "b" has no partner in its unit, so D_e = 0 (the package returns nan)
    assert assert_alpha_matches_reference([["a", "a", "b"], ["a", "a", None]]) is None


def test_alpha_undefined_without_a_pairable_unit():
    assert assert_alpha_matches_reference([["a", None], [None, "b"]]) is None
    assert krippendorff_alpha_nominal([]) is None


@pytest.mark.parametrize("seed", range(40))
def test_alpha_matches_reference_on_seeded_random_matrices(seed):
    rng = np.random.default_rng(seed)
    matrix = random_matrix(
        rng,
        n_raters=int(rng.integers(2, 8)),
        n_units=int(rng.integers(5, 300)),
        n_categories=int(rng.integers(2, 6)),
        missing=float(rng.uniform(0.0, 0.6)),
    )

    assert assert_alpha_matches_reference(matrix) is not None


@st.composite
def matrices(draw: st.DrawFn) -> list[list[str | None]]:
    n_raters = draw(st.integers(2, 5))
    n_units = draw(st.integers(1, 25))
    values = st.sampled_from(CATEGORIES[: draw(st.integers(2, 5))])
    cell = st.one_of(st.none(), values)
    return [draw(st.lists(cell, min_size=n_units, max_size=n_units)) for _ in range(n_raters)]


@settings(max_examples=300, deadline=None)
@given(matrices())
def test_alpha_matches_reference_on_generated_matrices(matrix):
    assert_alpha_matches_reference(matrix)


def test_alpha_matches_reference_at_queue_scale():
    # 50k units x 5 raters, 30% missing: the size the module is vectorised for
    rng = np.random.default_rng(12345)
    matrix = random_matrix(rng, n_raters=5, n_units=50_000, n_categories=3, missing=0.3)

    alpha = assert_alpha_matches_reference(matrix)

    assert alpha is not None
    assert 0.3 < alpha < 0.9


def test_alpha_ignores_order_and_none_values():
    matrix = [["a", "b", "a", "c"], ["a", "b", "b", "c"], ["a", None, "b", None]]
    ratings = triples(matrix)
    shuffled = [ratings[i] for i in np.random.default_rng(0).permutation(len(ratings))]

    assert krippendorff_alpha_nominal(shuffled) == pytest.approx(
        krippendorff_alpha_nominal(ratings), abs=1e-12
    )
    assert krippendorff_alpha_nominal([*ratings, (0, "rater-9", None)]) == pytest.approx(
        krippendorff_alpha_nominal(ratings), abs=1e-12
    )


def test_duplicate_rating_is_refused():
    with pytest.raises(ValueError, match="rater 'r1' rated unit 'u1' more than once"):
        krippendorff_alpha_nominal([("u1", "r1", "a"), ("u1", "r2", "a"), ("u1", "r1", "b")])


# --------------------------------------------------------------------------------------------
# Encoding helpers
# --------------------------------------------------------------------------------------------


def test_ratings_matrix_is_units_by_raters_with_gaps():
    m = ratings_matrix([("u2", 7, "no"), ("u1", 3, "yes"), ("u1", 7, "no"), ("u3", 3, None)])

    assert m.units == ("u2", "u1")
    assert m.raters == (3, 7)
    assert m.categories == ("no", "yes")
    assert m.codes.tolist() == [[-1, 0], [1, 0]]
    assert m.values().tolist() == [[None, "no"], ["yes", "no"]]


def test_encode_ratings_with_given_categories():
    encoded = encode_ratings([(1, "r", "b")], categories=["a", "b", "c"])

    assert encoded.categories == ("a", "b", "c")
    assert encoded.value_counts().tolist() == [[0, 1, 0]]
    with pytest.raises(ValueError, match="not in categories"):
        encode_ratings([(1, "r", "z")], categories=["a", "b"])


# --------------------------------------------------------------------------------------------
# Percent agreement
# --------------------------------------------------------------------------------------------


def test_percent_agreement_pools_pairs_over_units():
    ratings = [
        # u1: a, a, b -> 3 pairs, 1 agreeing
        ("u1", "r1", "a"),
        ("u1", "r2", "a"),
        ("u1", "r3", "b"),
        # u2: a, a -> 1 pair, agreeing
        ("u2", "r1", "a"),
        ("u2", "r2", "a"),
        # u3: a single rating has no pair
        ("u3", "r1", "c"),
    ]

    assert percent_agreement(ratings) == pytest.approx(2 / 4, abs=1e-12)


def test_percent_agreement_counts_every_pair_in_a_unit():
    # a, a, b, b: 6 pairs, 2 agreeing; c, c, c: 3 pairs, 3 agreeing
    ratings = [("u1", r, v) for r, v in enumerate("aabb")] + [("u2", r, "c") for r in range(3)]

    assert percent_agreement(ratings) == pytest.approx(5 / 9, abs=1e-12)


def test_percent_agreement_extremes_and_undefined():
    assert percent_agreement([("u1", 1, "a"), ("u1", 2, "a")]) == 1.0
    assert percent_agreement([("u1", 1, "a"), ("u1", 2, "b"), ("u2", 1, "a")]) == 0.0
    assert percent_agreement([("u1", 1, "a"), ("u2", 1, "b")]) is None
    assert percent_agreement([]) is None


# --------------------------------------------------------------------------------------------
# Cohen's kappa
# --------------------------------------------------------------------------------------------


def reference_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """sklearn's cohen_kappa_score, with "undefined" (nan) as None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns on a single label: that case is tested
        value = cohen_kappa_score(list(a), list(b), replace_undefined_by=np.nan)
    return None if math.isnan(value) else float(value)


def assert_kappa_matches_reference(a: Sequence[Hashable], b: Sequence[Hashable]) -> None:
    ours = cohen_kappa(list(enumerate(a)), list(enumerate(b)))
    expected = reference_kappa(a, b)
    if expected is None:
        assert ours is None
    else:
        assert ours is not None
        assert ours == pytest.approx(expected, abs=1e-9)


def test_kappa_textbook_two_by_two():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o = 0.7, p_e = 0.5, kappa = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15

    assert cohen_kappa(dict(enumerate(a)), dict(enumerate(b))) == pytest.approx(0.4, abs=1e-12)
    assert_kappa_matches_reference(a, b)


@pytest.mark.parametrize("seed", range(200))
def test_kappa_matches_sklearn_on_random_pairs(seed):
    rng = np.random.default_rng(seed)
    n_units = int(rng.integers(1, 150))
    n_categories = int(rng.integers(2, 6))
    a = rng.integers(0, n_categories, size=n_units)
    follow = rng.random(n_units) < rng.uniform(0, 1)
    b = np.where(follow, a, rng.integers(0, n_categories, size=n_units))

    assert_kappa_matches_reference([CATEGORIES[i] for i in a], [CATEGORIES[i] for i in b])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(CATEGORIES[:4]), st.sampled_from(CATEGORIES[:4])),
        min_size=1,
        max_size=40,
    )
)
def test_kappa_matches_sklearn_on_generated_pairs(pairs):
    a, b = zip(*pairs, strict=True)

    assert_kappa_matches_reference(a, b)


def test_kappa_uses_only_common_units_and_skips_none():
    a = {"u1": "x", "u2": "y", "u3": "x", "u4": "y", "only-a": "x", "u5": None}
    b = [("u1", "x"), ("u2", "y"), ("u3", "y"), ("u4", "y"), ("only-b", "y"), ("u5", "x")]

    assert cohen_kappa(a, b) == pytest.approx(
        reference_kappa(["x", "y", "x", "y"], ["x", "y", "y", "y"]), abs=1e-12
    )


def test_kappa_undefined_cases():
    assert cohen_kappa({"u1": "x"}, {"u2": "x"}) is None  # no common unit
    assert cohen_kappa({"u1": "x", "u2": "x"}, {"u1": "x", "u2": "x"}) is None  # p_e = 1
    assert cohen_kappa({"u1": "x", "u2": "y"}, {"u1": "x", "u2": "y"}) == 1.0
    with pytest.raises(ValueError, match="more than once"):
        cohen_kappa([("u1", "x"), ("u1", "y")], {"u1": "x"})


def four_raters_with_gaps() -> list[list[str | None]]:
    """Raters x units; rater 3 never shares a unit with rater 2."""
    rng = np.random.default_rng(2024)
    matrix = random_matrix(rng, n_raters=4, n_units=120, n_categories=3, missing=0.35)
    for unit in range(120):
        if unit < 60:
            matrix[3][unit] = None
        else:
            matrix[2][unit] = None
    return matrix


def test_pairwise_kappa_matches_sklearn_for_every_pair():
    matrix = four_raters_with_gaps()

    result = pairwise_cohen_kappa(triples(matrix))

    expected_pairs = {
        (f"rater-{i}", f"rater-{j}") for i, j in itertools.combinations(range(4), 2)
    } - {("rater-2", "rater-3")}
    assert set(result) == expected_pairs
    for i, j in itertools.combinations(range(4), 2):
        common = [u for u in range(120) if matrix[i][u] is not None and matrix[j][u] is not None]
        if not common:
            continue
        pair = result[(f"rater-{i}", f"rater-{j}")]
        assert pair["n"] == len(common)
        expected = reference_kappa([matrix[i][u] for u in common], [matrix[j][u] for u in common])
        assert expected is not None
        assert pair["kappa"] == pytest.approx(expected, abs=1e-9)


def test_pairwise_kappa_small_hand_case():
    ratings = [
        ("u1", "ann", "x"),
        ("u1", "bob", "x"),
        ("u2", "ann", "y"),
        ("u2", "bob", "y"),
        ("u3", "bob", "x"),
        ("u3", "cid", "x"),
        ("u4", "cid", "z"),
    ]

    result = pairwise_cohen_kappa(ratings)

    assert result == {
        ("ann", "bob"): {"kappa": 1.0, "n": 2},
        ("bob", "cid"): {"kappa": None, "n": 1},  # one shared unit, both "x": p_e = 1
    }


def test_mean_pairwise_kappa_weighting():
    matrix = four_raters_with_gaps()
    pairs = [p for p in pairwise_cohen_kappa(triples(matrix)).values() if p["kappa"] is not None]
    weighted = sum(p["kappa"] * p["n"] for p in pairs) / sum(p["n"] for p in pairs)
    plain = sum(p["kappa"] for p in pairs) / len(pairs)

    assert mean_pairwise_kappa(triples(matrix)) == pytest.approx(weighted, abs=1e-12)
    assert mean_pairwise_kappa(triples(matrix), weighted=False) == pytest.approx(plain, abs=1e-12)
    assert weighted != pytest.approx(plain, abs=1e-6)  # the data set tells the two apart


def test_mean_pairwise_kappa_undefined():
    assert mean_pairwise_kappa([("u1", "a", "x"), ("u1", "b", "x")]) is None
    assert mean_pairwise_kappa([]) is None

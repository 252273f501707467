"""The interval and test formulas the metrics and alerts use (checked against statsmodels)."""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the 97.5 % normal quantile


def wilson(x: float, n: float, z: float = Z95) -> tuple[float, float] | tuple[None, None]:
    """Wilson score interval of x successes in n trials (statsmodels' ``method='wilson'``)."""
    if n <= 0:
        return None, None
    p = x / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(xa: float, na: float, xb: float, nb: float) -> tuple[float, float] | tuple[None, None]:
    """Newcombe's hybrid score interval of pb - pa (from the two Wilson intervals)."""
    if na <= 0 or nb <= 0:
        return None, None
    pa, pb = xa / na, xb / nb
    la, ua = wilson(xa, na)
    lb, ub = wilson(xb, nb)
    d = pb - pa
    return d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2), d + math.sqrt(
        (ub - pb) ** 2 + (pa - la) ** 2
    )


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def two_proportion_p(xa: float, na: float, xb: float, nb: float) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test (``proportions_ztest``)."""
    z = _pooled_z(xa, na, xb, nb)
    return None if z is None else 2 * _normal_sf(abs(z))


def _pooled_z(xa, na, xb, nb) -> float | None:
    if na <= 0 or nb <= 0:
        return None
    pooled = (xa + xb) / (na + nb)
    se = math.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    if se == 0:
        return None
    return (xb / nb - xa / na) / se


def one_sided_p(xa: float, na: float, xb: float, nb: float, margin: float = 0.0) -> float | None:
    """p-value of H0: pb - pa <= margin against pb - pa > margin. margin 0: the pooled z-test
    (``proportions_ztest(alternative='larger')``); otherwise the Wald test at the estimated
    proportions (``test_proportions_2indep(method='wald', value=margin)``)."""
    if na <= 0 or nb <= 0:
        return None
    if margin == 0:
        z = _pooled_z(xa, na, xb, nb)
        return None if z is None else _normal_sf(z)
    pa, pb = xa / na, xb / nb
    se = math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    if se == 0:
        return None
    return _normal_sf((pb - pa - margin) / se)


def interval(numerator: float, denominator: float, n_effective: float | None = None) -> dict:
    """value, ci_low, ci_high for a rate (a weighted rate: Wilson at Kish's effective n)."""
    if denominator <= 0:
        return {"value": None, "ci_low": None, "ci_high": None}
    value = numerator / denominator
    shown = min(value, 1.0)  # several complaints about one prediction: the interval caps at 1
    n = denominator if n_effective is None else n_effective
    low, high = wilson(shown * n, n) if n > 0 else (None, None)
    return {"value": value, "ci_low": low, "ci_high": high}

"""The Concordance Correlation Coefficient, the metric of the paper and of its challenges."""

from __future__ import annotations

import numpy as np


def ccc(x, y) -> float:
    """Concordance Correlation Coefficient of two equally long series (eq. 1 of the paper).

    ``ccc = 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2)`` with population (biased, 1/N)
    variances and covariance, computed in float64 after centring, with the difference of the
    means taken as the mean of the differences (no cancellation for series with a large common
    mean) and a common power-of-two scale (no overflow or underflow for any finite input).

    Returns NaN when the denominator is zero: both series constant and equal, a case where
    concordance is undefined. A constant series against a different constant gives 0.

    Raises:
        ValueError: the series differ in length, are empty, or hold NaN or infinity.
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"ccc needs series of equal length, got {a.size} and {b.size}")
    if a.size == 0:
        raise ValueError("ccc of empty series is undefined")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("ccc inputs must be finite (no NaN or infinity)")
    # Scale both series by one power of two (exact) so that squares neither overflow nor
    # underflow; CCC is invariant to a common scale.
    scale = max(np.abs(a).max(), np.abs(b).max())
    if scale > 0:
        exponent = int(np.frexp(scale)[1])  # 2**exponent itself overflows near the float64 max
        a, b = np.ldexp(a, -exponent), np.ldexp(b, -exponent)
    # Deviations from the mean, exactly zero for a constant series (the rounded mean of a
    # constant series can differ from its value in the last bit).
    da = a - a.mean() if np.ptp(a) else np.zeros_like(a)
    db = b - b.mean() if np.ptp(b) else np.zeros_like(b)
    # The difference of the means as the mean of the differences: for two series with a large
    # common offset, a.mean() - b.mean() would keep only the rounding error of the offset.
    mean_difference = np.mean(a - b)
    covariance = np.mean(da * db)
    denominator = np.mean(da * da) + np.mean(db * db) + mean_difference**2
    if denominator == 0.0:
        return float("nan")
    return float(2.0 * covariance / denominator)

"""The Concordance Correlation Coefficient, the metric of the paper and of its challenges."""

from __future__ import annotations

import numpy as np


def ccc(x, y) -> float:
    """Concordance Correlation Coefficient of two equally long series (eq. 1 of the paper).

    ``ccc = 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2)`` with population (biased, 1/N)
    variances and covariance, computed in float64 after centring (no cancellation for series
    with a large mean).

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
    mean_a, mean_b = a.mean(), b.mean()
    da, db = a - mean_a, b - mean_b
    covariance = np.mean(da * db)
    denominator = np.mean(da * da) + np.mean(db * db) + (mean_a - mean_b) ** 2
    if denominator == 0.0:
        return float("nan")
    return float(2.0 * covariance / denominator)

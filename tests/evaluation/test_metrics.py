"""``affbatch.ccc``: the Concordance Correlation Coefficient of the paper's eq. (1).

Checked against two references written here: a straightforward float64 transcription of
eq. (1) with population (1/N) moments, and an exact rational one (``fractions.Fraction`` on the
exact binary values of the inputs) for cases where rounding matters.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import affbatch
from affbatch import ccc


def ccc_reference(x, y) -> float:
    """Eq. (1): 2 s_xy / (s_x^2 + s_y^2 + (mean_x - mean_y)^2), population moments, float64."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(x)
    mean_x = sum(x) / n
    mean_y = sum(y) / n
    s_xy = sum((xi - mean_x) * (yi - mean_y) for xi, yi in zip(x, y, strict=True)) / n
    s_x2 = sum((xi - mean_x) ** 2 for xi in x) / n
    s_y2 = sum((yi - mean_y) ** 2 for yi in y) / n
    return 2 * s_xy / (s_x2 + s_y2 + (mean_x - mean_y) ** 2)


def ccc_exact(x, y) -> Fraction:
    """Eq. (1) in exact rational arithmetic on the exact values of the float64 inputs."""
    xs = [Fraction(float(v)) for v in np.asarray(x, dtype=np.float64)]
    ys = [Fraction(float(v)) for v in np.asarray(y, dtype=np.float64)]
    n = len(xs)
    mean_x = sum(xs) / n
    mean_y = sum(ys) / n
    s_xy = sum((a - mean_x) * (b - mean_y) for a, b in zip(xs, ys, strict=True)) / n
    s_x2 = sum((a - mean_x) ** 2 for a in xs) / n
    s_y2 = sum((b - mean_y) ** 2 for b in ys) / n
    return 2 * s_xy / (s_x2 + s_y2 + (mean_x - mean_y) ** 2)


def pearson(x, y) -> float:
    return float(np.corrcoef(np.asarray(x, np.float64), np.asarray(y, np.float64))[0, 1])


def test_public_api():
    assert affbatch.ccc is ccc
    assert "ccc" in affbatch.__all__


def test_returns_python_float():
    value = ccc(np.arange(5.0), np.arange(5.0) ** 2)
    assert type(value) is float


# ---------------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------------


def test_hand_computed_three_points():
    # x = [1,2,3], y = [1,2,4]: means 2 and 7/3; deviations [-1,0,1] and [-4/3,-1/3,5/3].
    # s_xy = (4/3 + 0 + 5/3) / 3 = 1;  s_x^2 = 2/3;  s_y^2 = (16 + 1 + 25) / 27 = 14/9;
    # (mean_x - mean_y)^2 = 1/9;  CCC = 2 / (6/9 + 14/9 + 1/9) = 2 / (7/3) = 6/7.
    assert ccc_exact([1, 2, 3], [1, 2, 4]) == Fraction(6, 7)
    assert ccc([1, 2, 3], [1, 2, 4]) == pytest.approx(6 / 7, abs=1e-15, rel=0)
    assert ccc([1.0, 2.0, 3.0], [1.0, 2.0, 4.0]) == pytest.approx(6 / 7, abs=1e-15, rel=0)


def test_hand_computed_two_points():
    # x = [0,1], y = [0,2]: s_xy = 1/2, s_x^2 = 1/4, s_y^2 = 1, (1/2 - 1)^2 = 1/4 -> 1 / 1.5 = 2/3
    assert ccc_exact([0, 1], [0, 2]) == Fraction(2, 3)
    assert ccc([0, 1], [0, 2]) == pytest.approx(2 / 3, abs=1e-15, rel=0)


def test_hand_computed_population_not_sample_variance():
    # x = [0,2], y = [2,0]: s_xy = -1, s_x^2 = s_y^2 = 1, equal means -> -2/2 = -1 exactly.
    # Also x = [0,2], y = [1,1]: s_xy = 0 -> 0. And x = [0,2], y = [0,4]: population moments give
    # s_xy = 2, s_x^2 = 1, s_y^2 = 4, (1-2)^2 = 1 -> 4/6 = 2/3; with sample (1/(N-1)) moments it
    # would be 8/(2+8+1) = 8/11.
    assert ccc([0, 2], [2, 0]) == -1.0
    assert ccc([0, 2], [1, 1]) == 0.0
    assert ccc([0, 2], [0, 4]) == pytest.approx(2 / 3, abs=1e-15, rel=0)
    assert ccc_exact([0, 2], [0, 4]) == Fraction(2, 3)


def test_hand_computed_mean_shift_only():
    # y = x + 1 with x = [-1, 0, 1]: s_xy = s_x^2 = s_y^2 = 2/3, shift^2 = 1 -> (4/3) / (7/3) = 4/7
    assert ccc([-1, 0, 1], [0, 1, 2]) == pytest.approx(4 / 7, abs=1e-15, rel=0)


# ---------------------------------------------------------------------------------------------
# Random data against the references
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 7, 100, 1001, 10_000])
def test_random_against_reference(n):
    rng = np.random.default_rng(n)
    x = rng.uniform(-1, 1, n)
    y = 0.6 * x + rng.normal(0.1, 0.4, n)
    got = ccc(x, y)
    assert got == pytest.approx(ccc_reference(x, y), rel=1e-12, abs=1e-14)
    assert -1.0 <= got <= 1.0
    assert got < pearson(x, y)  # a mean shift and a scale difference both cost concordance


@pytest.mark.parametrize("n", [2, 5, 64])
def test_random_against_exact(n):
    rng = np.random.default_rng(1000 + n)
    x = rng.normal(size=n)
    y = rng.normal(size=n) + 0.5 * x
    assert ccc(x, y) == pytest.approx(float(ccc_exact(x, y)), rel=1e-13, abs=1e-15)


def test_symmetric():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=50), rng.normal(0.3, 2.0, size=50)
    assert ccc(x, y) == pytest.approx(ccc(y, x), rel=1e-15, abs=0)


def test_invariant_to_common_shift_and_scale_but_not_to_one_sided():
    rng = np.random.default_rng(6)
    x = rng.normal(size=200)
    y = 0.8 * x + rng.normal(0.2, 0.5, size=200)
    base = ccc(x, y)
    assert ccc(3.0 * x + 7.0, 3.0 * y + 7.0) == pytest.approx(base, rel=1e-12)
    # Pearson is invariant to a shift or scale of one series; CCC is not.
    assert ccc(x, y + 0.5) < base - 1e-3
    assert ccc(x, 2.0 * y) != pytest.approx(base, abs=1e-3)


# ---------------------------------------------------------------------------------------------
# Special series
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 10, 1000])
def test_perfectly_concordant_is_one(n):
    x = np.random.default_rng(n).uniform(-1, 1, n)
    assert ccc(x, x) == 1.0
    assert ccc(x.tolist(), x.copy()) == 1.0


def test_negated_zero_mean_is_minus_one():
    x = np.array([-3.0, -1.0, 0.0, 1.0, 3.0])  # zero mean exactly, symmetric
    assert ccc(x, -x) == -1.0
    r = np.random.default_rng(7).uniform(-1, 1, 500)
    sym = np.concatenate([r, -r])  # zero mean up to rounding
    assert ccc(sym, -sym) == pytest.approx(-1.0, abs=1e-15)


def test_negated_non_zero_mean_is_above_minus_one():
    x = np.array([1.0, 2.0, 3.0])  # mean 2: s_xy = -2/3, var 2/3 each, (2 - -2)^2 = 16
    assert ccc(x, -x) == pytest.approx((-4 / 3) / (4 / 3 + 16), abs=1e-15, rel=0)


def test_shifted_series_is_below_pearson():
    x = np.sin(np.linspace(0, 6, 300))
    y = x + 0.3
    assert pearson(x, y) == pytest.approx(1.0, abs=1e-12)
    # s_xy = s_x^2 = s_y^2 = v, shift 0.3 -> 2v / (2v + 0.09)
    v = float(np.var(x))
    assert ccc(x, y) == pytest.approx(2 * v / (2 * v + 0.09), rel=1e-12)
    assert ccc(x, y) < pearson(x, y) - 0.05


@pytest.mark.parametrize("offset", [1e6, -1e6, 1e9])
def test_huge_common_offset_is_numerically_stable(offset):
    rng = np.random.default_rng(8)
    small_x = rng.uniform(-1, 1, 2000)
    small_y = 0.7 * small_x + rng.normal(0.05, 0.3, 2000)
    x = small_x + offset
    y = small_y + offset
    exact = float(ccc_exact(x, y))
    # A one-pass E[xy] - E[x]E[y] formula loses everything here; centring first does not.
    assert ccc(x, y) == pytest.approx(exact, rel=1e-9, abs=1e-12)
    # The offset itself changes nothing but the rounding of the inputs.
    assert ccc(x, y) == pytest.approx(ccc(small_x, small_y), rel=1e-6)
    assert ccc(x, x) == 1.0


def test_float32_inputs_are_computed_in_float64():
    rng = np.random.default_rng(9)
    x = rng.uniform(-1, 1, 5000).astype(np.float32)
    y = (0.5 * x + rng.normal(0, 0.5, 5000)).astype(np.float32)
    got = ccc(x, y)
    assert type(got) is float
    assert got == pytest.approx(ccc_reference(x.astype(np.float64), y.astype(np.float64)), rel=1e-12)
    # Mixed precision is fine too.
    assert ccc(x, y.astype(np.float64)) == got


def test_lists_tuples_and_ints():
    assert ccc([1, 2, 3], (1, 2, 4)) == ccc(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=30), rng.normal(size=30)
    assert ccc(x.tolist(), y.tolist()) == ccc(x, y)


def test_bounded_in_minus_one_one():
    rng = np.random.default_rng(11)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        x, y = rng.normal(size=n) * rng.uniform(0.01, 10), rng.normal(size=n) + rng.normal()
        assert -1.0 <= ccc(x, y) <= 1.0


# ---------------------------------------------------------------------------------------------
# Degenerate series and invalid input
# ---------------------------------------------------------------------------------------------


def test_constant_against_different_constant_is_zero():
    assert ccc([0.2, 0.2, 0.2], [0.5, 0.5, 0.5]) == 0.0
    assert ccc(np.full(10, -1.0), np.full(10, 1.0)) == 0.0


@pytest.mark.parametrize("value", [0.1, 0.4, 1 / 3, -0.7, 1e6 + 0.1, 5e-324])
def test_constant_series_whose_float_mean_is_rounded(value):
    # e.g. np.mean([0.4, 0.4, 0.4]) is 0.4000000000000001: the deviations must still be zero.
    for n in (3, 7, 10, 1001):
        x = np.full(n, value)
        assert math.isnan(ccc(x, x.copy()))
        assert ccc(x, x + 1.0) == 0.0
        assert ccc(x, np.linspace(-1, 1, n)) == 0.0


@pytest.mark.parametrize("scale", [1e200, 1e-200, 1e300, 5e307, 2.0**-1000, 2.0**1022])
def test_extreme_magnitudes_neither_overflow_nor_underflow(scale):
    rng = np.random.default_rng(12)
    x = rng.uniform(-1, 1, 300)
    y = 0.5 * x + rng.normal(0.2, 0.4, 300)
    expected = ccc_reference(x, y)
    got = ccc(x * scale, y * scale)
    assert got == pytest.approx(expected, rel=1e-12)
    assert ccc(x * scale, x * scale) == 1.0


def test_values_near_the_float64_maximum():
    rng = np.random.default_rng(13)
    x = rng.uniform(-1, 1, 100)
    y = 0.5 * x + rng.normal(0.2, 0.4, 100)
    top = max(np.abs(x).max(), np.abs(y).max())
    big = 1.7e308 / top
    assert ccc(x * big, y * big) == pytest.approx(ccc_reference(x, y), rel=1e-12)
    assert ccc([1.7e308, -1.7e308, 0.0], [1.7e308, -1.7e308, 0.0]) == 1.0
    assert ccc([1.7e308, 1.7e308], [-1.7e308, -1.7e308]) == 0.0
    # The smallest subnormals.
    assert ccc([5e-324, 0.0], [5e-324, 0.0]) == 1.0
    assert ccc([5e-324, 1e-323], [1e-323, 5e-324]) == -1.0


def test_constant_against_varying_series_is_zero():
    assert ccc([0.3, 0.3, 0.3], [0.1, 0.2, 0.9]) == 0.0


def test_both_constant_and_equal_is_nan():
    assert math.isnan(ccc([0.4, 0.4, 0.4], [0.4, 0.4, 0.4]))
    assert math.isnan(ccc(np.zeros(5), np.zeros(5)))


def test_length_one():
    assert ccc([0.5], [0.2]) == 0.0  # no variance, means differ
    assert math.isnan(ccc([0.5], [0.5]))


def test_length_two():
    assert ccc([0.0, 1.0], [0.0, 1.0]) == 1.0
    assert ccc([0.0, 1.0], [1.0, 0.0]) == -1.0  # equal means, s_xy = -1/4, variances 1/4


@pytest.mark.parametrize("x,y", [([], []), (np.array([]), np.array([]))])
def test_empty_raises(x, y):
    with pytest.raises(ValueError, match="empty"):
        ccc(x, y)


@pytest.mark.parametrize("x,y", [([1, 2, 3], [1, 2]), ([1.0], []), (np.zeros(10), np.zeros(11))])
def test_unequal_lengths_raise(x, y):
    with pytest.raises(ValueError, match="equal length"):
        ccc(x, y)


@pytest.mark.parametrize(
    "x,y",
    [
        ([1.0, float("nan"), 3.0], [1.0, 2.0, 3.0]),
        ([1.0, 2.0, 3.0], [1.0, 2.0, float("nan")]),
        ([1.0, float("inf"), 3.0], [1.0, 2.0, 3.0]),
        ([1.0, 2.0, 3.0], [float("-inf"), 2.0, 3.0]),
        (np.array([1.0, np.nan], np.float32), np.array([1.0, 2.0], np.float32)),
    ],
)
def test_non_finite_raises(x, y):
    with pytest.raises(ValueError, match="finite"):
        ccc(x, y)


def test_inputs_are_not_modified():
    x = np.array([1.0, 2.0, 3.0])
    y = np.array([1.0, 2.0, 4.0])
    ccc(x, y)
    assert x.tolist() == [1.0, 2.0, 3.0] and y.tolist() == [1.0, 2.0, 4.0]

"""Calibration of the std and risk-controlling intervals (issue 18), against closed forms and
synthetic data with a known error scale."""

from __future__ import annotations

import math

import numpy as np
import pytest

from microdiff import calibration as C


def test_hoeffding_bentkus_p_value_matches_the_closed_forms() -> None:
    # no loss at all: Hoeffding gives (1 − α)^n, Bentkus e·(1 − α)^n: the minimum is the first
    assert C.hoeffding_bentkus_p(0.0, 50, 0.1) == pytest.approx(0.9 ** 50, rel=1e-9)
    # risk 0.05 of n = 200 at α = 0.1: both bounds by hand
    h = 0.05 * math.log(0.05 / 0.1) + 0.95 * math.log(0.95 / 0.9)
    cdf = sum(math.comb(200, k) * 0.1 ** k * 0.9 ** (200 - k) for k in range(0, 11))
    assert C.hoeffding_bentkus_p(0.05, 200, 0.1) == pytest.approx(min(math.exp(-200 * h), math.e * cdf),
                                                                  rel=1e-9)
    # a risk above α is never evidence against "risk > α"
    assert C.hoeffding_bentkus_p(0.2, 1000, 0.1) == pytest.approx(1.0)


def _known_scale(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.05, 0.5, n)  # the true error scale per pixel
    return sigma, rng.normal(0.0, sigma)


def test_fit_recovers_a_known_error_scale() -> None:
    sigma, error = _known_scale(200_000, 0)
    wide = C.fit_std_calibration(3.0 * sigma, error)  # std 3× too wide (our simulated case)
    assert wide.slope == pytest.approx(1 / 3, rel=0.05) and abs(wide.offset) < 0.01
    shifted = C.fit_std_calibration(sigma + 0.2, error)  # an additive bias
    assert shifted.slope == pytest.approx(1.0, rel=0.05) and shifted.offset == pytest.approx(-0.2, abs=0.01)
    rmv, rmse, counts = C.calibration_bins(wide.apply(3.0 * sigma), error, bins=10)
    assert np.all((rmse / rmv > 0.9) & (rmse / rmv < 1.1))
    assert counts.sum() == 190_000 and np.ptp(counts) <= 1  # 95 % of the pixels, equal counts
    before = C.calibration_bins(3.0 * sigma, error, bins=10)
    assert np.all(before[1] / before[0] < 0.4)


def test_an_uninformative_std_is_rescaled_to_the_overall_error() -> None:
    rng = np.random.default_rng(1)
    error = rng.normal(0.0, 0.3, 50_000)
    std = rng.uniform(1.0, 2.0, 50_000)  # unrelated to the error
    cal = C.fit_std_calibration(std, error)
    assert np.sqrt(np.mean(cal.apply(std) ** 2)) == pytest.approx(0.3, rel=0.1)
    flat = C.fit_std_calibration(np.full(1000, 2.0), rng.normal(0.0, 0.5, 1000))
    assert flat.offset == 0.0 and flat.slope == pytest.approx(0.25, rel=0.1)


def test_interval_controls_miscoverage_over_random_splits() -> None:
    """Exchangeable units with heavy-tailed errors (Student t, 3 degrees of freedom) and an
    informative but mis-scaled std: over 100 random calibration/test splits, the test
    miscoverage is ≤ α in at least 1 − δ of them, and the interval is not trivially wide."""
    rng = np.random.default_rng(2)
    alpha, delta = 0.1, 0.1
    units = []
    for _ in range(200):
        sigma = rng.uniform(0.05, 0.5, (16, 16))
        units.append((2.0 * sigma, sigma * rng.standard_t(3, (16, 16))))
    held, missed = 0, []
    for split in range(100):
        order = np.random.default_rng(100 + split).permutation(200)
        lam = C.fit_interval([units[i] for i in order[:100]], alpha, delta)
        test = [units[i] for i in order[100:]]
        miss = float(np.mean([C.miscoverage(s, e, lam) for s, e in test]))
        missed.append(miss)
        held += miss <= alpha
    assert held >= 90
    assert np.mean(missed) > alpha / 3  # the bound is not vacuous


def test_interval_refuses_too_few_units_and_tiles_refuse_small_images() -> None:
    sigma, error = _known_scale(64, 3)
    few = [(sigma[i:i + 8], error[i:i + 8]) for i in range(0, 64, 8)]  # 8 units
    with pytest.raises(ValueError, match="cannot certify"):
        C.fit_interval(few, 0.1, 0.1)
    with pytest.raises(ValueError, match="alpha and delta"):
        C.fit_interval(few, 0.0, 0.1)
    tiles = C.tile_units(np.ones((40, 70)), np.zeros((40, 70)), 16)
    assert len(tiles) == 2 * 4 and tiles[0][0].shape == (16, 16)
    with pytest.raises(ValueError, match="no 16×16"):
        C.tile_units(np.ones((8, 70)), np.zeros((8, 70)), 16)

"""Calibration of the std and conformal intervals (issue 18), against closed forms and
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
    shifted = C.fit_std_calibration(sigma + 0.2, error, form="affine")  # an additive bias
    assert shifted.slope == pytest.approx(1.0, rel=0.05) and shifted.offset == pytest.approx(-0.2, abs=0.01)
    rmv, rmse, counts = C.calibration_bins(wide.apply(3.0 * sigma), error, bins=10)
    assert np.all((rmse / rmv > 0.9) & (rmse / rmv < 1.1))
    assert counts.sum() == 190_000 and np.ptp(counts) <= 1  # 95 % of the pixels, equal counts
    before = C.calibration_bins(3.0 * sigma, error, bins=10)
    assert np.all(before[1] / before[0] < 0.4)


def test_scale_form_is_the_geometric_mean_of_the_bins_ratios() -> None:
    """Ten bins of 100 pixels with std b + 1 and |error| = r_b·std exactly: each bin's RMSE /
    RMV is r_b, and the scale form's factor is their geometric mean (1 here, where the
    arithmetic mean would be 1.275 and the pooled RMS ratio 1.29); the affine form fits the
    line through the bins instead."""
    ratios = np.array([0.5, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 4.0, 0.25, 1.0])
    std = np.repeat(np.arange(1.0, 11.0), 100)
    signs = np.tile([1.0, -1.0], 500)
    error = signs * np.repeat(ratios, 100) * std
    rmv, rmse, _ = C.calibration_bins(std, error, bins=10, keep=1.0)
    np.testing.assert_allclose(rmse / rmv, ratios)
    cal = C.fit_std_calibration(std, error, keep=1.0)
    assert cal.slope == pytest.approx(1.0, rel=1e-9) and cal.offset == 0.0
    double = C.fit_std_calibration(0.5 * std, error, keep=1.0)  # the std halved: k doubles
    assert double.slope == pytest.approx(2.0, rel=1e-9)
    slope, offset = np.polyfit(np.arange(1.0, 11.0), ratios * np.arange(1.0, 11.0), 1)
    line = C.fit_std_calibration(std, error, keep=1.0, form="affine")
    assert (line.slope, line.offset) == (pytest.approx(slope), pytest.approx(offset))
    with pytest.raises(ValueError, match="form must be"):
        C.fit_std_calibration(std, error, form="quadratic")


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


def test_unit_score_is_the_order_statistic_that_leaves_alpha_outside() -> None:
    std = np.ones(100)
    error = np.arange(1.0, 101.0)  # ratios 1 … 100
    score = float(C.unit_scores([(std, error)], 0.1)[0])
    assert score == 90.0  # 10 of 100 pixels (91 … 100) outside: exactly α
    assert C.miscoverage(std, error, score) == pytest.approx(0.1)
    assert C.miscoverage(std, error, score - 1e-6) > 0.1  # any smaller factor leaves more outside
    assert float(C.unit_scores([(2 * std, error)], 0.1)[0]) == 45.0  # ratios, not errors


def _images(n: int, rng: np.random.Generator, pixels: int = 256) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exchangeable images whose std is mis-scaled by an image-specific factor (the errors of
    one image are correlated through it) and whose errors are heavy-tailed."""
    out = []
    for _ in range(n):
        sigma = rng.uniform(0.05, 0.5, pixels)
        out.append((sigma, rng.lognormal(0.0, 0.4) * sigma * rng.standard_t(3, pixels)))
    return out


def test_conformal_interval_holds_for_a_new_unit_with_the_promised_probability() -> None:
    """Over 3000 draws of 19 calibration images and one new image, the new image's
    miscoverage is ≤ α with probability in [1 − δ, 1 − δ + 1/(n + 1)] (= [0.90, 0.95]): a
    rank one too low or one too high leaves that band."""
    rng = np.random.default_rng(4)
    alpha, delta, n, trials = 0.1, 0.1, 19, 3000
    held = 0
    for _ in range(trials):
        imgs = _images(n + 1, rng)
        lam = C.fit_interval_conformal(imgs[:n], alpha, delta)
        held += C.miscoverage(*imgs[n], lam) <= alpha
    rate = held / trials
    assert 0.90 - 0.015 <= rate <= 0.95 + 0.015  # ± 2.7 binomial std
    assert 0.90 - 0.015 <= rate <= 0.90 + 0.015  # continuous scores: exactly ⌈(n+1)(1−δ)⌉/(n+1) = 0.90


def test_conformal_interval_needs_enough_units() -> None:
    rng = np.random.default_rng(5)
    assert C.min_conformal_units(0.1) == 9 and C.min_conformal_units(0.05) == 19
    C.fit_interval_conformal(_images(9, rng), 0.1, 0.1)  # rank ⌈10 · 0.9⌉ = 9 ≤ 9
    with pytest.raises(C.Uncertifiable, match="at least 9"):
        C.fit_interval_conformal(_images(8, rng), 0.1, 0.1)
    with pytest.raises(ValueError, match="alpha and delta"):
        C.fit_interval_conformal(_images(9, rng), 0.1, 1.0)


def test_fit_takes_images_as_units_when_there_are_enough() -> None:
    rng = np.random.default_rng(6)
    maps = [(s.reshape(16, 16), e.reshape(16, 16)) for s, e in _images(12, rng)]
    auto = C.fit(maps, samples=8, steps=20, source="synthetic", unit="auto")
    assert auto.unit == "image" and auto.units == 12 and auto.interval_method == "conformal"
    calibrated = [(auto.std.apply(s), e) for s, e in maps]
    assert auto.interval_factor == C.fit_interval_conformal(calibrated, 0.1, 0.1)
    few = C.fit(maps[:8], tile=8, samples=8, steps=20, source="synthetic", unit="auto")  # 8 < 9: tiles
    assert C.fit(maps, tile=8, samples=8, steps=20, source="synthetic").unit == "tile"  # the default
    assert few.unit == "tile" and few.units == 32 and few.interval_factor is not None
    assert "new 8×8 tile" in few.promise() and "new image" in auto.promise()
    forced = C.fit(maps[:8], unit="image", samples=8, steps=20, source="synthetic")
    assert forced.interval_factor is None and "cannot certify" in forced.promise()
    with pytest.raises(ValueError, match="unit must be"):
        C.fit(maps, unit="pixel", samples=8, steps=20, source="synthetic")


def test_std_targets_match_their_closed_forms_on_gaussian_and_laplace_errors() -> None:
    rng = np.random.default_rng(7)
    sigma = rng.uniform(0.05, 0.5, 400_000)  # the error's RMS per pixel, given as the std
    gauss = rng.normal(0.0, sigma)
    for target in C.STD_TARGETS:  # Gaussian: RMS, 68.27 % quantile and their mean coincide
        cal = C.fit_std_calibration(sigma, gauss, target=target)
        assert cal.slope == pytest.approx(1.0, rel=0.03) and abs(cal.offset) < 0.005
    laplace = rng.laplace(0.0, sigma / math.sqrt(2))  # scale b = RMS/√2
    q = math.log(1 / (1 - C.ONE_SIGMA)) / math.sqrt(2)  # P(|e| ≤ q·RMS) = 0.6827 for a Laplace
    expected = {"rms": 1.0, "coverage": q, "balanced": math.sqrt(q)}
    for target, slope in expected.items():
        cal = C.fit_std_calibration(sigma, laplace, target=target)
        assert cal.slope == pytest.approx(slope, rel=0.03) and abs(cal.offset) < 0.005, target
        inside = float(np.mean(np.abs(laplace) <= cal.apply(sigma)))
        assert inside == pytest.approx(1 - math.exp(-math.sqrt(2) * slope), abs=0.01), target
    assert 0.72 < 1 - math.exp(-math.sqrt(2) * math.sqrt(q)) < 0.73  # balanced: ±1σ between the two
    with pytest.raises(ValueError, match="target must be"):
        C.calibration_bins(sigma, gauss, target="mad")


def test_binned_form_follows_a_curved_error_scale_the_line_cannot() -> None:
    """The true error scale g(s) = 0.5·s + 0.3·s² of a std s: the binned map's calibrated
    std equals g within 3 % at points inside the bins' range, and each bin's RMSE / RMV is
    within 3 % of 1; the scale form, one factor, is off by more than 10 % at both ends."""
    rng = np.random.default_rng(2)
    std = rng.uniform(0.05, 1.0, 400_000)
    truth = 0.5 * std + 0.3 * std ** 2
    error = rng.normal(0.0, truth)
    cal = C.fit_std_calibration(std, error, form="binned")
    assert cal.knots is not None and len(cal.knots[0]) == 10
    probe = np.array([0.15, 0.3, 0.5, 0.7, 0.9])
    np.testing.assert_allclose(cal.apply(probe), 0.5 * probe + 0.3 * probe ** 2, rtol=0.03)
    rmv, rmse, _ = C.calibration_bins(cal.apply(std), error)
    np.testing.assert_allclose(rmse / rmv, 1.0, atol=0.03)
    scale = C.fit_std_calibration(std, error).apply(np.array([0.1, 0.95]))
    true_ends = np.array([0.053, 0.74075])
    assert np.all(np.abs(scale / true_ends - 1) > 0.1)


def test_binned_knots_are_isotonic_and_extrapolate_in_proportion() -> None:
    """Bins (RMV 1, 2, 3, 4) with scales (2, 6, 4, 16): the violating pair (6, 4) pools to the
    RMS of its scales, √26 (the pooled bins' RMSE; the arithmetic mean 5 would be 2 % low). Equal
    RMVs merge into one knot, the RMS of their scales, weighted by their count when pooled: (2, 2)
    at RMV 1 then 1 at RMV 2 pool to √((2·2² + 1²)/3) = √3. Below the first knot the map is
    s·y₀/x₀, above the last s·y₋₁/x₋₁, linear in between."""
    x, y = C.binned_knots(np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 6.0, 4.0, 16.0]))
    r = math.sqrt(26.0)
    assert x == (1.0, 2.0, 3.0, 4.0) and y == pytest.approx((2.0, r, r, 16.0))
    merged = C.binned_knots(np.array([1.0, 1.0, 2.0]), np.array([1.0, 3.0, 4.0]))
    assert merged == ((1.0, 2.0), pytest.approx((math.sqrt(5.0), 4.0)))
    pooled = C.binned_knots(np.array([1.0, 1.0, 2.0]), np.array([2.0, 2.0, 1.0]))
    assert pooled == ((1.0, 2.0), pytest.approx((math.sqrt(3.0), math.sqrt(3.0))))
    assert C.binned_knots(np.array([2.0, 2.0]), np.array([1.0, 3.0])) is None
    m = C.StdCalibration(knots=(x, y))
    np.testing.assert_allclose(m.apply(np.array([0.5, 1.5, 2.5, 3.5, 8.0])),
                               [1.0, (2.0 + r) / 2, r, (r + 16.0) / 2, 32.0])


def test_binned_fit_keeps_a_factor_and_ignores_empty_or_broken_bins() -> None:
    """The binned form stores the scale form's factor as its slope (a summary of the map); bins
    with a zero or non-finite error scale give no knot; one distinct knot falls back to that
    factor."""
    sigma, error = _known_scale(50_000, 5)
    binned = C.fit_std_calibration(2.0 * sigma, error, form="binned")
    assert binned.slope == pytest.approx(C.fit_std_calibration(2.0 * sigma, error).slope, rel=1e-12)
    broken = error.copy()
    broken[np.argsort(sigma)[40_000]] = np.nan  # in the ninth of the ten bins (95 % of the pixels)
    broken[np.argsort(sigma)[:5000]] = 0.0  # the lowest bin has no error at all
    knots = C.fit_std_calibration(2.0 * sigma, broken, form="binned").knots
    assert knots is not None and len(knots[0]) == 8 and np.all(np.isfinite(knots[1])) and knots[1][0] > 0
    flat = C.fit_std_calibration(np.full(1000, 2.0), np.random.default_rng(3).normal(0, 0.5, 1000),
                                 form="binned")
    assert flat.knots is None and flat.slope == pytest.approx(0.25, rel=0.1)


def test_binned_calibration_round_trips_and_malformed_knots_are_refused() -> None:
    sigma, error = _known_scale(10 * 64 * 64, 4)
    maps = list(zip(3.0 * sigma.reshape(10, 64, 64), error.reshape(10, 64, 64), strict=True))
    cal = C.fit(maps, samples=0, steps=1, source="synthetic", form="binned")
    assert cal.form == "binned" and cal.std.knots is not None
    assert C.Calibration.from_dict(cal.to_dict()) == cal
    # readers from before the knots know only "binned-linear": they refuse the curve, not misapply it
    assert cal.to_dict()["method"] == C.BINNED_METHOD != "binned-linear"
    assert C.Calibration.from_dict(cal.to_dict() | {"method": "binned-linear"}) == cal  # 2026-12-07 bundles
    with pytest.raises(ValueError, match="needs its knots"):
        C.Calibration.from_dict(cal.to_dict() | {"knots": None})
    assert cal.describe_map().startswith("binned (10 knots, 0.3")
    for knots in ([[0.1, 0.2], [0.1]], [[0.1], [0.1]], [[0.2, 0.1], [0.1, 0.2]], [[0.1, 0.2], [0.2, 0.1]],
                  [[0.1, float("nan")], [0.1, 0.2]], [[0.0, 0.1], [0.1, 0.2]], [[0.1, 0.2], [0.0, 0.0]]):
        with pytest.raises(ValueError, match="two equal lists"):
            C.Calibration.from_dict(cal.to_dict() | {"knots": knots})
    with pytest.raises(ValueError, match="two lists of knots"):
        C.Calibration.from_dict(cal.to_dict() | {"knots": [[0.1, 0.2]]})

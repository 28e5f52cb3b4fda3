"""The estimate's per-image gain and offset (microdiff.intensity_calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from microdiff import intensity_calibration as ic


def _estimate(rng: np.random.Generator, peak: float, size: int = 48) -> np.ndarray:
    """A sparse positive 2-D map whose 99.8th percentile scales with ``peak``."""
    img = rng.gamma(0.3, 0.1, (size, size))
    return peak * img / np.percentile(img, 99.8)


def _true_gain(estimate: np.ndarray) -> tuple[float, float]:
    """The relation the fit must recover: brighter peaks, smaller gain (as measured)."""
    hi = float(np.percentile(estimate, 99.8))
    return 1.6 - 0.6 * hi, 0.01 + 0.02 * hi


def test_image_gain_is_the_least_squares_line() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=(20, 30))
    g, c = ic.image_gain(e, 1.3 * e + 0.2)
    assert g == pytest.approx(1.3) and c == pytest.approx(0.2)
    # against an independent solve of the normal equations, with noise
    t = 0.7 * e - 0.1 + rng.normal(0, 0.3, e.shape)
    a = np.stack([e.ravel(), np.ones(e.size)], 1)
    ref = np.linalg.lstsq(a, t.ravel(), rcond=None)[0]
    np.testing.assert_allclose(ic.image_gain(e, t), ref, rtol=1e-10)
    assert ic.image_gain(np.ones((4, 4)), np.full((4, 4), 3.0)) == (1.0, 2.0)  # flat: offset only


def test_features_are_one_percentiles_and_mean() -> None:
    e = np.arange(1000, dtype=float).reshape(10, 100)
    f = ic.image_features(e)
    np.testing.assert_allclose(f, [1.0, np.percentile(e, 99.8), np.percentile(e, 1), e.mean()])


def test_fit_recovers_a_gain_that_depends_on_the_estimate() -> None:
    rng = np.random.default_rng(1)
    estimates = [_estimate(rng, rng.uniform(0.7, 1.3)) for _ in range(64)]
    targets = []
    for e in estimates:
        g, c = _true_gain(e)
        targets.append(g * e + c + rng.normal(0, 0.005, e.shape))
    fit = ic.fit_intensity(estimates, targets)
    assert fit is not None and fit.images == 64
    for peak in (0.8, 1.0, 1.2):  # new images inside the fitted range
        e = _estimate(rng, peak)
        np.testing.assert_allclose(fit.params(e), _true_gain(e), atol=0.01)
        mean, std, samples = fit.apply(e, np.full_like(e, 0.1), np.stack([e, 2 * e]))
        g, c = fit.params(e)
        np.testing.assert_allclose(mean, g * e + c, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(std, 0.1 * g, rtol=1e-5)  # the std scales, no offset
        np.testing.assert_allclose(samples[1], 2 * g * e + c, rtol=1e-5, atol=1e-6)


def test_features_outside_the_fitted_range_are_clipped() -> None:
    rng = np.random.default_rng(2)
    estimates = [_estimate(rng, rng.uniform(0.9, 1.1)) for _ in range(40)]
    fit = ic.fit_intensity(estimates, [(_true_gain(e)[0]) * e + _true_gain(e)[1] for e in estimates])
    assert fit is not None
    far = _estimate(rng, 50.0)  # a linear map would give a gain of 1.6 − 0.6·50 < 0
    g, _ = fit.params(far)
    edge = np.clip(ic.image_features(far), fit.low, fit.high)
    assert g == pytest.approx(float(np.clip(edge @ np.array(fit.gain), *ic.GAIN_BOUNDS)))
    assert ic.GAIN_BOUNDS[0] <= g <= ic.GAIN_BOUNDS[1]


def test_too_few_images_fit_nothing_and_mismatch_is_refused() -> None:
    rng = np.random.default_rng(3)
    few = [_estimate(rng, 1.0) for _ in range(ic.MIN_IMAGES - 1)]
    assert ic.fit_intensity(few, few) is None
    with pytest.raises(ValueError, match="matching"):
        ic.fit_intensity(few, few[:-1])


def test_round_trip_and_old_calibrations_read_without_it() -> None:
    from microdiff.calibration import fit

    rng = np.random.default_rng(4)
    estimates = [_estimate(rng, rng.uniform(0.8, 1.2)) for _ in range(ic.MIN_IMAGES)]
    corr = ic.fit_intensity(estimates, [1.1 * e for e in estimates])
    assert ic.IntensityCalibration.from_dict(corr.to_dict()) == corr
    bad = corr.to_dict() | {"features": ["constant", "max"]}
    with pytest.raises(ValueError, match="features"):
        ic.IntensityCalibration.from_dict(bad)
    maps = [(np.full((32, 32), 0.1), rng.normal(0, 0.1, (32, 32))) for _ in range(4)]
    cal = fit(maps, tile=16, samples=2, steps=3, source="test")
    with_ic = type(cal).from_dict(cal.to_dict() | {"intensity": corr.to_dict()})
    assert with_ic.intensity == corr and type(cal).from_dict(with_ic.to_dict()) == with_ic
    old = cal.to_dict()
    del old["intensity"]
    assert type(cal).from_dict(old).intensity is None


def test_fit_maps_fits_the_std_to_the_corrected_errors() -> None:
    """Errors that are only a per-image gain the estimate predicts: after the correction the
    std map shrinks to the remaining noise."""
    from microdiff.calibrate_files import fit_maps

    rng = np.random.default_rng(5)
    maps = []
    for _ in range(48):
        e = _estimate(rng, rng.uniform(0.7, 1.3), 64)
        g, c = _true_gain(e)
        target = g * e + c + rng.normal(0, 0.002, e.shape)  # error (1 − g)·e − c: a gain error
        maps.append((np.full_like(e, 0.01), e, target))
    plain = fit_maps(maps, tile=16, samples=2, steps=3, source="t")
    corrected = fit_maps(maps, intensity=True, tile=16, samples=2, steps=3, source="t")
    assert plain.intensity is None and corrected.intensity is not None
    assert plain.form == "scale" and corrected.form == "binned"  # form auto: the curve after a gain
    one = np.array([0.01])
    assert corrected.std.apply(one)[0] < 0.5 * plain.std.apply(one)[0]
    assert corrected.std.apply(one)[0] == pytest.approx(0.002, rel=0.3)  # the remaining noise


def test_fit_maps_fits_the_std_map_on_the_gain_corrected_std() -> None:
    """Errors left after the gain with a spread of half the corrected std g·s: the binned map
    fitted on (g·s, error) is f(u) ≈ u / 2. Fitted on the uncorrected s instead, it would be
    ≈ g·s / 2, off by the gains (1.24–1.48 here)."""
    from microdiff.calibrate_files import fit_maps

    rng = np.random.default_rng(8)
    maps = []
    for _ in range(48):
        e = _estimate(rng, rng.uniform(0.2, 0.6), 64)
        g, c = _true_gain(e)
        std = rng.uniform(0.005, 0.03, e.shape)
        maps.append((std, e, g * e + c + rng.normal(0, 1, e.shape) * 0.5 * g * std))
    cal = fit_maps(maps, intensity=True, tile=16, samples=2, steps=3, source="t")
    assert cal.form == "binned" and cal.std.knots is not None and len(cal.std.knots[0]) >= 5
    x, y = (np.asarray(k) for k in cal.std.knots)
    assert x.min() > 1.2 * 0.005 and x.max() < 1.5 * 0.03  # the knots sit on the corrected std g·s
    np.testing.assert_allclose(y / x, 0.5, rtol=0.1)


def test_predictor_applies_it_per_channel_and_to_samples() -> None:
    from microdiff.predictor import _intensity_corrected

    rng = np.random.default_rng(6)
    estimates = [_estimate(rng, rng.uniform(0.8, 1.2), 32) for _ in range(ic.MIN_IMAGES)]
    corr = ic.fit_intensity(estimates, [_true_gain(e)[0] * e + _true_gain(e)[1] for e in estimates])
    mean = np.stack([_estimate(rng, 0.85, 32), _estimate(rng, 1.15, 32)]).astype(np.float32)  # C = 2
    std = np.full_like(mean, 0.05)
    k = 3
    samples = np.stack([mean + 0.01 * i for i in range(k)]).reshape(k * 2, 32, 32)  # [K·C]: k-major
    before = mean.copy()
    out = _intensity_corrected(corr, {"mean": mean, "std": std, "samples": samples, "std_raw": std})
    for c in range(2):
        g, off = corr.params(mean[c])
        np.testing.assert_allclose(out["mean"][c], g * mean[c] + off, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["std"][c], 0.05 * g, rtol=1e-5)
        for i in range(k):
            np.testing.assert_allclose(out["samples"][i * 2 + c], g * (mean[c] + 0.01 * i) + off,
                                       rtol=1e-5, atol=1e-6)
    assert out["std_raw"] is std and np.array_equal(mean, before)  # the input is not modified in place


def test_only_targets_normalised_per_image_get_the_correction() -> None:
    """A phase target keeps its units (rad): its scale is no per-image unknown to correct."""
    from microdiff.data.tasks import Task

    assert Task().target_self_normalised and not Task(kind="qpi-2shot").target_self_normalised

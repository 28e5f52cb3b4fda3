"""MS-SSIM, NRMSE, FRC resolution and the uncertainty metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from microdiff import metrics

rng = np.random.default_rng(0)


def test_nrmse_and_ms_ssim_basics() -> None:
    target = gaussian_filter(rng.random((128, 128)), 2)
    assert metrics.nrmse(target, target) == pytest.approx(0, abs=1e-12)
    assert metrics.ms_ssim(target, target) == pytest.approx(1.0)
    noisy = [target + rng.normal(0, s * target.std(), target.shape) for s in (0.1, 0.5, 1.0)]
    scores = [metrics.ms_ssim(n, target) for n in noisy]
    assert scores[0] > scores[1] > scores[2]
    errs = [metrics.nrmse(n, target, match=False) for n in noisy]
    assert errs[0] < errs[1] < errs[2]


def test_single_scale_ms_ssim_is_gaussian_ssim() -> None:
    target = gaussian_filter(rng.random((64, 64)), 1.5)
    pred = target + rng.normal(0, 0.3 * target.std(), target.shape)
    dr = metrics.data_range(target)
    ref = structural_similarity(target, pred, data_range=dr, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    ours = metrics.ms_ssim(pred, target, match=False, scales=1)
    assert ours == pytest.approx(ref, abs=2e-3)


def test_frc_resolution_finds_the_band_limit() -> None:
    """Two noisy views of a signal band-limited at k_c: the FRC falls near k_c."""
    n, px = 256, 0.03
    f = np.fft.fftfreq(n, d=px)
    k = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    kc = 8.0  # cycles/µm, below Nyquist (16.7)
    signal = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * (k < kc)).real
    a = signal + rng.normal(0, 0.02 * signal.std() * 10, signal.shape)
    b = signal + rng.normal(0, 0.02 * signal.std() * 10, signal.shape)
    res = metrics.frc_resolution(a, b, px)
    assert 1 / kc * 0.9 < res < 1 / kc * 1.25
    assert metrics.frc_resolution(a, a, px) == pytest.approx(2 * px)


def test_uncertainty_metrics() -> None:
    sigma = rng.uniform(0.1, 2.0, 20000)
    error = rng.normal(0, sigma)
    assert metrics.coverage(sigma, error, 1) == pytest.approx(0.683, abs=0.01)
    assert metrics.coverage(sigma, error, 2) == pytest.approx(0.954, abs=0.01)
    assert metrics.spearman_std_error(sigma, error) > 0.3
    assert metrics.spearman_std_error(np.abs(error), error) == pytest.approx(1.0)
    assert metrics.ause(np.abs(error), error) == pytest.approx(0.0, abs=1e-12)
    informative, random = metrics.ause(sigma, error), metrics.ause(rng.random(20000), error)
    assert 0 < informative < random

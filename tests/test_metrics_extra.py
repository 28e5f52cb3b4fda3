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


def test_spectral_resolution_of_a_gaussian_blur_is_closed_form() -> None:
    """A Gaussian blur of std σ multiplies the power spectrum by G(f) = exp(−4π²σ²f²); the
    ratio is taken relative to its value over the lowest sixteenth of the rings, which for a
    white target is c = Σ k·G(f_k) / Σ k over those rings k. The spectral resolution is then
    1/f½ with G(f½) = c/2, i.e. f½ = √(ln(2/c))/(2πσ) (to a ring); the target's own spectrum
    (or a calibrated sample's) reaches Nyquist, at any intensity scale."""
    n, px, sigma = 256, 0.03, 0.05  # µm
    f = np.fft.fftfreq(n, d=px)
    k = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    target = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * (k < 12.0)).real
    blurred = np.fft.ifft2(np.fft.fft2(target) * np.exp(-2 * np.pi ** 2 * sigma ** 2 * k ** 2)).real
    ring = 1 / (n * px)
    rings = np.arange(1, n // 2 // 16 + 1)
    c = np.sum(rings * np.exp(-4 * np.pi ** 2 * sigma ** 2 * (rings * ring) ** 2)) / rings.sum()
    f_half = np.sqrt(np.log(2 / c)) / (2 * np.pi * sigma)
    res = metrics.spectral_resolution(3.0 * blurred + 1.0, target, px)
    assert 1 / (f_half + 1.5 * ring) <= res <= 1 / (f_half - 1.5 * ring)
    freq, ratio = metrics.power_ratio_curve(blurred, target, px)
    inside = (freq > 1.0) & (freq < 10.0)
    assert np.allclose(ratio[inside], np.exp(-4 * np.pi ** 2 * sigma ** 2 * freq[inside] ** 2) / c, rtol=0.15)
    assert metrics.spectral_resolution(0.5 * target, target, px) == pytest.approx(2 * px)
    # a "sample": the target's coarse part (< 3 cycles/µm) plus independent finer detail
    fine = np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * ((k >= 3.0) & (k < 12.0))).real
    other = np.fft.ifft2(np.fft.fft2(target) * (k < 3.0)).real + fine
    assert metrics.spectral_resolution(other, target, px) < metrics.spectral_resolution(blurred, target, px)
    # FRC, by contrast, sees that the invented detail is not the target's (and the blur's is)
    assert metrics.frc_resolution(other, target, px) > 0.9 / 3.0
    assert metrics.frc_resolution(blurred, target, px) < 0.1


def test_a_posterior_sample_is_sharper_but_correlates_less_than_the_mean() -> None:
    """Toy posterior y = m + r (r independent of the data): one sample s = m + r' has the
    target's spectrum (spectral resolution finer than the blurred mean's) and, in expectation,
    a lower FRC against y than m at every frequency (the same cross-power, more power)."""
    n, px = 256, 0.03
    f = np.fft.fftfreq(n, d=px)
    k = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    def field(cut: float, lo: float = 0.0) -> np.ndarray:
        return np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * ((k < cut) & (k >= lo))).real
    mean = field(6.0)
    y, sample = mean + field(12.0, 6.0), mean + field(12.0, 6.0)
    assert metrics.spectral_resolution(sample, y, px) < 0.5 * metrics.spectral_resolution(mean, y, px)
    _, frc_mean = metrics.frc_curve(mean, y, px)
    freq, frc_sample = metrics.frc_curve(sample, y, px)
    low = freq < 5.0
    assert np.mean(frc_sample[low]) < np.mean(frc_mean[low])

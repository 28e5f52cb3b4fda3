"""Image quality metrics with an explicit data range (scikit-image underneath).

Predictions are first matched to the target by the affine intensity fit that CARE uses
(least squares ``a·pred + b ≈ target``), so methods whose output has another intensity
scale (e.g. a bicubic-upsampled widefield image) are compared fairly.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def affine_fit(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising ‖a·pred + b − target‖² (a = 0 for a constant prediction)."""
    p = pred.astype(np.float64).ravel()
    t = target.astype(np.float64).ravel()
    var = p.var()
    a = 0.0 if var == 0 else float(np.mean((p - p.mean()) * (t - t.mean())) / var)
    return a, float(t.mean() - a * p.mean())


def affine_match(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``a·pred + b`` with (a, b) from :func:`affine_fit`."""
    a, b = affine_fit(pred, target)
    return (a * pred.astype(np.float64) + b).reshape(pred.shape)


def data_range(target: np.ndarray) -> float:
    """The target's max − min (the explicit data range used by PSNR and SSIM)."""
    return float(target.max() - target.min())


def psnr(pred: np.ndarray, target: np.ndarray, match: bool = True) -> float:
    """PSNR in dB of a 2-D image against the target, over the target's data range."""
    p = affine_match(pred, target) if match else pred
    return float(peak_signal_noise_ratio(target.astype(np.float64), p, data_range=data_range(target)))


def ssim(pred: np.ndarray, target: np.ndarray, match: bool = True) -> float:
    """SSIM of a 2-D image against the target, over the target's data range."""
    p = affine_match(pred, target) if match else pred
    return float(structural_similarity(target.astype(np.float64), p, data_range=data_range(target)))


def nrmse(pred: np.ndarray, target: np.ndarray, match: bool = True) -> float:
    """Root-mean-square error divided by the target's data range."""
    p = affine_match(pred, target) if match else pred.astype(np.float64)
    return float(np.sqrt(np.mean((p - target.astype(np.float64)) ** 2)) / max(data_range(target), 1e-12))


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli & Bovik 2003


def _ssim_terms(x: np.ndarray, y: np.ndarray, data_range: float) -> tuple[float, float]:
    """Mean luminance term and mean contrast-structure term, Gaussian window σ = 1.5."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(a, 1.5, truncate=3.5, mode="reflect")

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    lum = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
    cs = (2 * cxy + c2) / (vx + vy + c2)
    return float(lum.mean()), float(cs.mean())


def ms_ssim(pred: np.ndarray, target: np.ndarray, match: bool = True, scales: int = 5) -> float:
    """Multi-scale SSIM of 2-D images (Gaussian window; as many of the 5 standard scales as
    the image size allows, at least 22 px at the coarsest; weights renormalised)."""
    x = affine_match(pred, target) if match else pred.astype(np.float64)
    y = target.astype(np.float64)
    dr = data_range(target)
    n = max(1, min(scales, int(np.log2(min(y.shape) / 22)) + 1))
    w = np.asarray(MS_SSIM_WEIGHTS[:n])
    w = w / w.sum()
    value = 1.0
    for i in range(n):
        lum, cs = _ssim_terms(x, y, dr)
        value *= (max(cs, 1e-12) if i < n - 1 else max(lum * cs, 1e-12)) ** w[i]
        h, wd = (s // 2 * 2 for s in x.shape)
        x = x[:h, :wd].reshape(h // 2, 2, wd // 2, 2).mean((1, 3))
        y = y[:h, :wd].reshape(h // 2, 2, wd // 2, 2).mean((1, 3))
    return float(value)


def _ring_spectra(a: np.ndarray, b: np.ndarray, pixel_size: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per one-pixel-wide Fourier ring up to Nyquist of two square-cropped, mean-subtracted,
    Hann-windowed 2-D images: (frequencies in cycles per unit of ``pixel_size``, Σ Re(F_a F_b*),
    Σ |F_a|², Σ |F_b|²)."""
    n = min(a.shape + b.shape)
    a = a[:n, :n].astype(np.float64) - a[:n, :n].mean()
    b = b[:n, :n].astype(np.float64) - b[:n, :n].mean()
    win = np.hanning(n)[:, None] * np.hanning(n)[None, :]
    fa, fb = np.fft.fft2(a * win), np.fft.fft2(b * win)
    f = np.fft.fftfreq(n)
    ring = np.rint(np.sqrt(f[:, None] ** 2 + f[None, :] ** 2) * n).astype(int).ravel()
    k = np.arange(1, n // 2 + 1)
    cross = np.bincount(ring, (fa * fb.conj()).real.ravel())[k]
    power_a = np.bincount(ring, (np.abs(fa) ** 2).ravel())[k]
    power_b = np.bincount(ring, (np.abs(fb) ** 2).ravel())[k]
    return k / (n * pixel_size), cross, power_a, power_b


def frc_curve(a: np.ndarray, b: np.ndarray, pixel_size: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two square-cropped 2-D images: (frequencies in cycles per
    unit of ``pixel_size``, FRC per one-pixel-wide ring up to Nyquist)."""
    freq, cross, pa, pb = _ring_spectra(a, b, pixel_size)
    return freq, cross / np.maximum(np.sqrt(pa * pb), 1e-30)


def frc_resolution(a: np.ndarray, b: np.ndarray, pixel_size: float = 1.0, threshold: float = 1 / 7) -> float:
    """Resolution (units of ``pixel_size``) where the FRC first falls below ``threshold``
    (1/7 by default); the Nyquist limit 2·pixel_size if it never does."""
    k, frc = frc_curve(a, b, pixel_size)
    below = np.nonzero(frc < threshold)[0]
    return float(1 / k[below[0]]) if below.size else 2 * pixel_size


def power_ratio_curve(pred: np.ndarray, target: np.ndarray, pixel_size: float = 1.0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Ring power of ``pred`` over the target's, relative to the same ratio over the lowest
    sixteenth of the frequencies (at least two rings), so the intensity scale does not count:
    (frequencies in cycles per unit of ``pixel_size``, ratio per ring up to Nyquist). A blurred
    estimate falls below 1 where it loses detail; a calibrated posterior sample stays near 1
    at every frequency, since E|sample|² = E|mean|² + E|residual|² = E|target|².
    Each ring's powers are summed over it and its two neighbours on each side (five rings),
    which steadies the ratio of the few-pixel low rings."""
    freq, _, pp, pt = _ring_spectra(pred, target, pixel_size)
    low = max(2, len(freq) // 16)
    scale = pp[:low].sum() / max(pt[:low].sum(), 1e-30)
    box = np.ones(5)
    pp, pt = np.convolve(pp, box, mode="same"), np.convolve(pt, box, mode="same")
    return freq, pp / np.maximum(pt * scale, 1e-30)


def spectral_resolution(pred: np.ndarray, target: np.ndarray, pixel_size: float = 1.0,
                        threshold: float = 0.5) -> float:
    """Sharpness: the resolution (units of ``pixel_size``) where the ring power of ``pred``
    first falls below ``threshold`` × the target's (half by default); the Nyquist limit
    2·pixel_size if it never does. It says how fine the detail an image *shows* is, not
    whether that detail is right: read it with :func:`frc_resolution`, which does."""
    k, ratio = power_ratio_curve(pred, target, pixel_size)
    below = np.nonzero(ratio < threshold)[0]
    return float(1 / k[below[0]]) if below.size else 2 * pixel_size


def spearman_std_error(std: np.ndarray, error: np.ndarray) -> float:
    """Spearman rank correlation of the predicted std with the absolute error."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.ravel(std), np.abs(np.ravel(error))).statistic)


def coverage(std: np.ndarray, error: np.ndarray, k: float) -> float:
    """Fraction of pixels whose |error| ≤ k·std (a calibrated Gaussian: 0.683 at k=1, 0.954 at 2)."""
    return float(np.mean(np.abs(error) <= k * std))


def sparsification_curves(std: np.ndarray, error: np.ndarray, steps: int = 50
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(removed fractions in [0, 1), RMSE of the pixels left after removing the most uncertain
    first (by std), the same removing the largest errors first (the oracle))."""
    e = np.abs(np.ravel(error)).astype(np.float64)
    by_std, by_err = e[np.argsort(-np.ravel(std), kind="stable")], np.sort(e)[::-1]
    fractions = np.linspace(0, 1, steps, endpoint=False)
    n = e.size

    def curve(order: np.ndarray) -> np.ndarray:
        return np.array([np.sqrt(np.mean(order[int(f * n):] ** 2)) for f in fractions])

    return fractions, curve(by_std), curve(by_err)


def ause(std: np.ndarray, error: np.ndarray, steps: int = 50) -> float:
    """Area under the sparsification error curve: removing the most uncertain pixels first
    (by std) against the oracle order (by |error|), RMSE of the rest, integrated over the
    removed fraction in [0, 1). 0 when std ranks pixels exactly like the error."""
    _, by_std, oracle = sparsification_curves(std, error, steps)
    return float(np.mean(by_std - oracle))


def phase_metrics(pred: np.ndarray, target: np.ndarray, phase_range: float,
                  std: np.ndarray | None = None, pixel_size: float = 1.0) -> dict[str, float]:
    """Quality of a phase map ``pred`` ``[H, W]`` (rad) against ``target`` (rad) after
    removing the difference of their means (the mean phase is not recoverable from
    intensities): ``rmse_rad``, ``psnr`` and ``ssim`` over ``phase_range``, ``ms_ssim`` (over
    the target's range), ``nrmse`` (RMSE / range) and ``frc_resolution`` (units of
    ``pixel_size``); with the posterior ``std`` (rad) also Spearman(std, |error|), ±1σ/±2σ
    coverage and AUSE. No intensity scaling is fitted: radians are radians."""
    t = target.astype(np.float64)
    p = pred.astype(np.float64) - float(pred.mean()) + float(t.mean())
    err = p - t
    rmse = float(np.sqrt(np.mean(err**2)))
    row = {"rmse_rad": rmse, "psnr": float(20 * np.log10(phase_range / max(rmse, 1e-12))),
           "ssim": float(structural_similarity(t, p, data_range=phase_range)),
           "ms_ssim": ms_ssim(p, t, match=False), "nrmse": rmse / phase_range,
           "frc_resolution": frc_resolution(p, t, pixel_size)}
    if std is not None:
        row |= {"spearman_std_error": spearman_std_error(std, err), "coverage_1sigma": coverage(std, err, 1),
                "coverage_2sigma": coverage(std, err, 2), "ause": ause(std, err)}
    return row

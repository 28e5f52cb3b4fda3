"""Image-level models of the std (issue 18 probes; not in the package: measured negative).

Used by ``benchmarks/image_std.py``; see its section of docs/benchmarks.md for why none of
them shipped. Two models, both fitted on held-out pairs and needing no label at prediction:

* a per-image **error floor** (below);
* a per-image **std scale** ``σ → exp(β · f) · σ`` (:func:`fit_image_scale`), with β fitted
  either by the per-image Gaussian likelihood (an RMS match per image) or by least squares
  of each image's log 68.27 % quantile of |error| / σ (a coverage match per image).

The error floor:

The variance head (and the samples' spread) sees a patch; some of the error is shared by
the whole image. Targets are normalised per image by their own percentiles, so a sparse
image's estimate sits on a background offset its patches cannot know (the haze μ(x) puts
over microtubule backgrounds, docs/core.md), and a pixel-wise std of ≈ 0.006 there misses it,
while denser images need no such floor. So on held-out pairs the calibrated variance is

    σ_cal² = k² · σ² + τ²,   log τ = β · f,

with ``f`` the image's features ``[1, log RMS σ, log p99.8 of the estimate, mean of the
estimate, foreground fraction, log(RMS σ of the background / RMS σ)]`` (clipped at prediction
to the range the fit saw), and ``k``, ``β`` the Gaussian maximum-likelihood fit over a random
subsample of the held-out pixels. No label is needed at prediction. Maps are 2-D (one image,
one channel), in normalised target units; the std map of :mod:`microdiff.calibration` is
fitted after it, on the floored std. Checked when written: the likelihood's gradient
against central differences (rel. 1e-4), and on a toy with a known floor that depends on
the foreground fraction, k recovered within 5 % and τ within 25 %.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from microdiff.data.normalize import PERCENTILES

FEATURES = ("constant", "log rms std", f"log p{PERCENTILES[1]:g}", "mean", "foreground", "log background std")
FOREGROUND = 0.1  # a pixel is foreground above this fraction of the estimate's top percentile
BACKGROUND = 0.05  # ... and background below this fraction
LOG_FLOOR = 1e-6  # keeps the logarithms of dark estimates and zero stds finite
PIXELS_PER_IMAGE = 2000  # the likelihood's random subsample of each held-out image


def image_features(std: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """``[len(FEATURES)]`` float64 features of one image's 2-D std and estimate (see module)."""
    s = np.asarray(std, dtype=np.float64)
    e = np.asarray(estimate, dtype=np.float64)
    rms = np.sqrt(np.mean(s ** 2)) + LOG_FLOOR
    top = max(float(np.percentile(e, PERCENTILES[1])), LOG_FLOOR)
    background = e < BACKGROUND * top
    rms_bg = np.sqrt(np.mean(s[background] ** 2)) + LOG_FLOOR if background.any() else rms
    return np.array([1.0, np.log(rms), np.log(top), e.mean(), np.mean(e > FOREGROUND * top),
                     np.log(rms_bg / rms)])


@dataclass(frozen=True)
class ImageVariance:
    """σ_cal = √(k²σ² + exp(2 β·f)) with the features ``f`` clipped to [``low``, ``high``]."""

    log_k: float
    beta: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def floor(self, std: np.ndarray, estimate: np.ndarray) -> float:
        """τ: the error floor of one image (normalised target units)."""
        f = np.clip(image_features(std, estimate), self.low, self.high)
        return float(np.exp(f @ np.array(self.beta)))

    def apply(self, std: np.ndarray, estimate: np.ndarray) -> np.ndarray:
        """The floored 2-D std of one image, float32."""
        tau = self.floor(std, estimate)
        s = np.asarray(std, dtype=np.float64)
        return np.sqrt(np.exp(2 * self.log_k) * s ** 2 + tau ** 2).astype(np.float32)


def _negative_log_likelihood(theta: np.ndarray, std: np.ndarray, error: np.ndarray, feats: np.ndarray
                             ) -> tuple[float, np.ndarray]:
    """Mean Gaussian NLL (up to constants) of ``error`` under v = e^{2θ₀}·std² + e^{2 feats·θ₁:},
    and its gradient in θ; arrays are per pixel (``feats`` ``[n, F]``)."""
    a = np.exp(2 * theta[0]) * std ** 2
    c = np.exp(2 * (feats @ theta[1:]))
    v = a + c
    d = (1 / v - error ** 2 / v ** 2) / v.size
    grad = np.concatenate([[np.sum(d * 2 * a)], feats.T @ (d * 2 * c)])
    return float(np.mean(np.log(v) + error ** 2 / v)), grad


def fit_image_variance(stds: list[np.ndarray], estimates: list[np.ndarray], errors: list[np.ndarray],
                       pixels: int = PIXELS_PER_IMAGE, seed: int = 0) -> ImageVariance:
    """Fit k and β (see module) on held-out 2-D (std, estimate, error = estimate − target) maps
    by maximum likelihood over ``pixels`` random pixels per image (seeded)."""
    if not len(stds) == len(estimates) == len(errors):
        raise ValueError(f"need as many stds, estimates and errors, got {len(stds)}, {len(estimates)} "
                         f"and {len(errors)}")
    rng = np.random.default_rng(seed)
    per_image = np.stack([image_features(s, e) for s, e in zip(stds, estimates, strict=True)])
    s_px, e_px, f_px = [], [], []
    for s, err, f in zip(stds, errors, per_image, strict=True):
        idx = rng.choice(s.size, min(pixels, s.size), replace=False)
        s_px.append(np.ravel(s).astype(np.float64)[idx])
        e_px.append(np.ravel(err).astype(np.float64)[idx])
        f_px.append(np.repeat(f[None], idx.size, 0))
    std, err, feats = np.concatenate(s_px), np.concatenate(e_px), np.concatenate(f_px)
    theta = np.zeros(1 + len(FEATURES))
    theta[1] = np.log(np.median(std) + LOG_FLOOR)  # start: a floor at the typical std, k = 1
    res = minimize(_negative_log_likelihood, theta, args=(std, err, feats), jac=True, method="L-BFGS-B")
    return ImageVariance(float(res.x[0]), tuple(float(b) for b in res.x[1:]), tuple(per_image.min(0)),
                         tuple(per_image.max(0)))


def _per_image_nll_fit(feats: np.ndarray, mean_sq_ratio: np.ndarray, iterations: int = 50) -> np.ndarray:
    """β minimising Σᵢ 2β·fᵢ + mᵢ·exp(−2β·fᵢ) (the Gaussian NLL of every pixel of image i under
    σ → exp(β·fᵢ)·σ, up to constants, with mᵢ = mean (error / σ)² over its pixels): Newton."""
    beta = np.zeros(feats.shape[1])
    beta[0] = 0.5 * np.log(np.mean(mean_sq_ratio))
    for _ in range(iterations):
        w = mean_sq_ratio * np.exp(-2 * feats @ beta)
        hess = feats.T @ (feats * (4 * w)[:, None]) + 1e-6 * np.eye(beta.size)
        beta -= np.linalg.solve(hess, feats.T @ (2 - 2 * w))
    return beta


@dataclass(frozen=True)
class ImageScale:
    """σ → exp(β · f) · σ with the features ``f`` clipped to [``low``, ``high``]."""

    beta: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def apply(self, std: np.ndarray, estimate: np.ndarray) -> np.ndarray:
        f = np.clip(image_features(std, estimate), self.low, self.high)
        return (np.exp(f @ np.array(self.beta)) * np.asarray(std, dtype=np.float64)).astype(np.float32)


def fit_image_scale(stds: list[np.ndarray], estimates: list[np.ndarray], errors: list[np.ndarray],
                    target: str = "rms") -> ImageScale:
    """β of :class:`ImageScale` on held-out 2-D maps: ``target="rms"`` by the per-image
    likelihood, ``"coverage"`` by least squares of log q₆₈(|error| / σ) per image."""
    feats = np.stack([image_features(s, e) for s, e in zip(stds, estimates, strict=True)])
    ratios = [np.abs(np.ravel(err)) / np.maximum(np.ravel(s), LOG_FLOOR)
              for s, err in zip(stds, errors, strict=True)]
    if target == "rms":
        beta = _per_image_nll_fit(feats, np.array([np.mean(r ** 2) for r in ratios]))
    else:
        q = np.array([np.quantile(r, 0.6827) for r in ratios])
        beta = np.linalg.lstsq(feats, np.log(q), rcond=None)[0]
    return ImageScale(tuple(beta), tuple(feats.min(0)), tuple(feats.max(0)))

"""Image quality metrics with an explicit data range (scikit-image underneath).

Predictions are first matched to the target by the affine intensity fit that CARE uses
(least squares ``a·pred + b ≈ target``), so methods whose output has another intensity
scale (e.g. a bicubic-upsampled widefield image) are compared fairly.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def affine_match(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``a·pred + b`` with (a, b) minimising ‖a·pred + b − target‖²."""
    p = pred.astype(np.float64).ravel()
    t = target.astype(np.float64).ravel()
    var = p.var()
    a = 0.0 if var == 0 else float(np.mean((p - p.mean()) * (t - t.mean())) / var)
    b = float(t.mean() - a * p.mean())
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

"""A simple built-in generator of paired filament images (the demo's data).

Ground truth: smooth, persistent curvilinear filaments splatted on the target grid.
Target (SIM-like): the filaments blurred by a narrow Gaussian PSF.
Input (widefield-like): blurred by a PSF twice as wide, binned by the scale factor,
with Poisson shot noise at ``photons`` counts for the brightest pixels and Gaussian read
noise, then bicubic-upsampled back to the target grid (``x`` lives on the target grid).
Both are percentile-normalised per image (1st → 0, 99.8th → 1), as CARE does.

This is deliberately simple; the realistic BioSR-like simulator replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

SIGMA_TARGET = 1.0  # px on the target grid (SIM-like PSF)
SIGMA_WIDEFIELD = 2.0  # px on the target grid (widefield PSF, twice as wide)
READ_NOISE = 2.0  # counts


@dataclass
class PairedImages:
    """x: condition on the target grid ``[N, 1, S, S]``; y: target ``[N, 1, S, S]``;
    low: the observed low-resolution input ``[N, 1, S/scale, S/scale]``. float32, normalised."""

    x: torch.Tensor
    y: torch.Tensor
    low: torch.Tensor


def _filaments(rng: np.random.Generator, size: int) -> np.ndarray:
    """Splat 3–8 persistent random curves onto a ``[size, size]`` grid (bilinear)."""
    img = np.zeros((size, size), np.float64)
    for _ in range(int(rng.integers(3, 9))):
        n = int(rng.uniform(1.0, 3.0) * size * 2)  # points every 0.5 px
        theta = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.04, n))
        start = rng.uniform(0.1 * size, 0.9 * size, 2)  # every curve crosses the field
        pts = start + 0.5 * np.cumsum(np.stack([np.cos(theta), np.sin(theta)], 1), 0)
        brightness = rng.uniform(0.4, 1.0)
        i0 = np.floor(pts).astype(int)
        f = pts - i0
        for di in (0, 1):
            for dj in (0, 1):
                wgt = (f[:, 0] if di else 1 - f[:, 0]) * (f[:, 1] if dj else 1 - f[:, 1])
                r, c = i0[:, 0] + di, i0[:, 1] + dj
                ok = (r >= 0) & (r < size) & (c >= 0) & (c < size)
                np.add.at(img, (r[ok], c[ok]), brightness * wgt[ok])
    return img


def _normalise(img: np.ndarray, lo: float = 1.0, hi: float = 99.8) -> np.ndarray:
    p_lo, p_hi = np.percentile(img, [lo, hi])
    return (img - p_lo) / max(p_hi - p_lo, 1e-6)


def make_filament_pairs(
    n: int, size: int = 64, scale: int = 2, photons: float = 200.0, seed: int = 0
) -> PairedImages:
    """``n`` independent pairs, deterministic in ``seed``."""
    if size % scale:
        raise ValueError(f"size {size} must be a multiple of scale {scale}")
    rng = np.random.default_rng(seed)
    ys, lows = [], []
    for _ in range(n):
        structure = _filaments(rng, size)
        target = gaussian_filter(structure, SIGMA_TARGET)
        wide = gaussian_filter(structure, SIGMA_WIDEFIELD)
        wide = wide.reshape(size // scale, scale, size // scale, scale).mean((1, 3))
        expected = photons * wide / max(wide.max(), 1e-9) + 2.0  # + background counts
        counts = rng.poisson(expected) + rng.normal(0, READ_NOISE, expected.shape)
        ys.append(_normalise(target))
        lows.append(_normalise(counts))
    y = torch.from_numpy(np.stack(ys)[:, None]).float()
    low = torch.from_numpy(np.stack(lows)[:, None]).float()
    x = upsample(low, scale)
    return PairedImages(x=x, y=y, low=low)


def upsample(low: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling ``[N, C, h, w]`` → ``[N, C, h·scale, w·scale]``."""
    return F.interpolate(low, scale_factor=scale, mode="bicubic", align_corners=False)

"""Synthetic phase phantoms of adherent cells, the objects quantitative phase imaging is for.

A phantom is a few cells on a flat background: each cell a dome (optical thickness
``(1 − r²)^p``, r the distance to the centre in units of an irregular outline) with a
thicker nucleus, smooth internal texture and a few small granules, so it has what natural
images lack: large smooth bodies whose phase lives in the lowest frequencies, and a flat
background (the edges of the field carry no phase). Nothing here is fitted to a real
image; the parameter ranges are generic (cells 20–45 % of the field across).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def _outline(rng: np.random.Generator, theta: np.ndarray) -> np.ndarray:
    """An irregular outline's relative radius at angles ``theta``: 1 plus 2–5 low harmonics."""
    radius = np.ones_like(theta)
    for k in range(2, 6):
        radius += rng.uniform(0.0, 0.12 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return radius


def _dome(yy: np.ndarray, xx: np.ndarray, centre: tuple[float, float], radius: float, aspect: float,
          angle: float, power: float, rng: np.random.Generator) -> np.ndarray:
    """``(1 − r²)^power`` inside an irregular ellipse of mean ``radius`` (px), 0 outside."""
    dy, dx = yy - centre[0], xx - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = (c * dx + s * dy) / radius, (-s * dx + c * dy) / (radius * aspect)
    r = np.hypot(u, v) / _outline(rng, np.arctan2(v, u))
    return np.clip(1.0 - r**2, 0.0, None) ** power


def cell_phantom(size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``[size, size]`` phantom of 1–3 cells, values ≥ 0 with a zero background (unscaled:
    :func:`~microdiff.data.phase_truth.phase_map` maps it to the phase range)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = np.zeros((size, size))
    for _ in range(int(rng.integers(1, 4))):
        radius = rng.uniform(0.10, 0.225) * size
        margin = 1.1 * radius
        centre = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
        angle, aspect = rng.uniform(0, np.pi), rng.uniform(0.5, 1.0)
        body = _dome(yy, xx, centre, radius, aspect, angle, rng.uniform(0.4, 1.2), rng)
        offset = rng.uniform(-0.3, 0.3, size=2) * radius * aspect
        nucleus = _dome(yy, xx, (centre[0] + offset[0], centre[1] + offset[1]),
                        rng.uniform(0.3, 0.5) * radius, rng.uniform(0.7, 1.0), rng.uniform(0, np.pi),
                        rng.uniform(0.5, 1.0), rng)
        texture = gaussian_filter(rng.standard_normal((size, size)), rng.uniform(1.5, 4.0))
        texture /= texture.std() + 1e-12
        granules = np.zeros((size, size))
        for _ in range(int(rng.integers(0, 12))):
            gy, gx = centre[0] + rng.normal(0, 0.4 * radius), centre[1] + rng.normal(0, 0.4 * radius)
            granules += np.exp(-((yy - gy) ** 2 + (xx - gx) ** 2) / (2 * rng.uniform(1.0, 2.5) ** 2))
        cell = (body * (1 + rng.uniform(0.02, 0.08) * texture) + rng.uniform(0.2, 0.6) * nucleus
                + rng.uniform(0.0, 0.2) * granules * (body > 0))
        out += rng.uniform(0.6, 1.0) * cell
    return gaussian_filter(out, 0.7)

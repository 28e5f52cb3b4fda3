"""Microscope optics and camera noise for the simulator (numpy, float64).

Imaging is a multiplication by an optical transfer function (OTF) on a fine grid
followed by pixel integration (binning) onto the camera grid:

- widefield: the incoherent OTF of a circular pupil, cut-off k_c = 2 NA / λ (cycles/µm);
- SIM-like target: the same OTF shape with a cut-off ``sim_factor`` times wider
  (linear SIM extends the support to about twice the widefield one).

Noise (on the widefield only): Poisson shot noise on the expected photo-electrons,
Gaussian read noise, a constant camera offset.
"""

from __future__ import annotations

import numpy as np


def frequency_radius(n: int, px: float) -> np.ndarray:
    """|k| in cycles/µm on the FFT grid of an ``n × n`` image with pixel size ``px`` µm."""
    f = np.fft.fftfreq(n, d=px)
    return np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)


def circular_otf(k: np.ndarray, cutoff: float) -> np.ndarray:
    """Incoherent OTF of a circular pupil (1 at k = 0, 0 from ``cutoff`` on)."""
    r = np.clip(k / cutoff, 0.0, 1.0)
    return (2 / np.pi) * (np.arccos(r) - r * np.sqrt(1 - r**2))


def image_through(structure: np.ndarray, px: float, cutoff: float) -> np.ndarray:
    """Blur a fine-grid structure ``[n, n]`` by the OTF with the given cut-off."""
    otf = circular_otf(frequency_radius(structure.shape[0], px), cutoff)
    return np.fft.ifft2(np.fft.fft2(structure) * otf).real


def bin_pixels(img: np.ndarray, factor: int) -> np.ndarray:
    """Integrate ``factor × factor`` blocks (camera pixels), keeping the mean level."""
    n0, n1 = img.shape
    return img.reshape(n0 // factor, factor, n1 // factor, factor).mean(axis=(1, 3))


def camera(expected: np.ndarray, rng: np.random.Generator, read_noise: float, offset: float) -> np.ndarray:
    """Counts of a camera: Poisson(expected) + N(0, read_noise²) + offset (float64)."""
    return rng.poisson(np.clip(expected, 0, None)) + rng.normal(0.0, read_noise, expected.shape) + offset

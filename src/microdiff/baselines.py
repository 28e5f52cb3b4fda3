"""Classical baselines: bicubic upsampling, and Richardson–Lucy deconvolution with the
simulator's widefield PSF followed by bicubic upsampling.

Both work on the low-resolution input ``[h, w]`` (camera counts or any linear intensity)
and return an image on the target grid ``[h·s, w·s]`` (float64, up to an affine intensity
change: evaluation matches intensities affinely anyway).
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.restoration import richardson_lucy

from .data import optics
from .data.synthetic import SimulatorConfig, upsample

BASELINES = ("bicubic", "richardson-lucy")


def bicubic(low: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic upsampling of ``low`` ``[h, w]`` by ``scale``."""
    t = torch.from_numpy(np.asarray(low, np.float32))[None, None]
    return upsample(t, scale)[0, 0].numpy().astype(np.float64)


def widefield_psf(pixel_size_um: float, na: float | None = None, wavelength_um: float | None = None,
                  aberration: float | None = None, supersample: int = 4) -> np.ndarray:
    """The simulator's in-focus widefield PSF on a camera grid of ``pixel_size_um`` µm
    (OTF of a circular pupil damped by exp(−a (k/k_c)²), integrated over the pixel),
    normalised to sum 1; optics default to the middle of the simulator's ranges."""
    sim = SimulatorConfig()
    na = na if na is not None else float(np.mean(sim.na))
    wavelength_um = wavelength_um if wavelength_um is not None else float(np.mean(sim.wavelength_um))
    aberration = aberration if aberration is not None else float(np.mean(sim.aberration))
    cutoff = 2 * na / wavelength_um
    half = max(4, int(np.ceil(1.5 * wavelength_um / na / pixel_size_um)))  # ~2.5 Airy radii
    n = (2 * half + 1) * supersample
    k = optics.frequency_radius(n, pixel_size_um / supersample)
    otf = optics.circular_otf(k, cutoff) * np.exp(-aberration * (k / cutoff) ** 2)
    fine = np.fft.fftshift(np.fft.ifft2(otf).real)
    psf = optics.bin_pixels(fine, supersample)
    psf = np.clip(psf, 0, None)
    return psf / psf.sum()


def richardson_lucy_upsample(low: np.ndarray, scale: int, pixel_size_um: float | None = None,
                             iterations: int = 20) -> np.ndarray:
    """Background-subtracted (1st percentile) Richardson–Lucy deconvolution of ``low`` with
    :func:`widefield_psf` (pixel size: the simulator's widefield pixel when unknown), then
    bicubic upsampling by ``scale``."""
    img = np.asarray(low, np.float64)
    img = np.clip(img - np.percentile(img, 1), 0, None)
    peak = img.max()
    if peak <= 0:
        return bicubic(img, scale)
    psf = widefield_psf(pixel_size_um or SimulatorConfig().input_pixel_um)
    dec = richardson_lucy(img / peak, psf, num_iter=iterations, clip=False)
    return bicubic(dec * peak, scale)


def apply_baseline(name: str, low: np.ndarray, scale: int, pixel_size_um: float | None = None) -> np.ndarray:
    """The baseline ``name`` (one of :data:`BASELINES`) applied to ``low``."""
    if name == "bicubic":
        return bicubic(low, scale)
    if name == "richardson-lucy":
        return richardson_lucy_upsample(low, scale, pixel_size_um)
    raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")

"""The built-in microscopy simulator (BioSR-like widefield → SIM pairs) and the simple
filament generator (``data.generator=filaments``).

Simulator (:func:`simulate_pair`): a ground-truth structure (``structures.py``) on a grid
``supersample`` times finer than the target, imaged through a widefield OTF (cut-off
2NA/λ, damped by aberrations) plus out-of-focus haze and background, binned onto the
camera grid (``scale`` × the target pixel), with shot and read noise, camera gain and
offset; the target is the same structure through a SIM-like OTF about twice as wide
(no haze: optical sectioning), binned onto the target grid, noise-free, in in-focus
photo-electrons per widefield pixel. All parameters live in :class:`SimulatorConfig` as
ranges; each pair draws its own values, deterministically from its generator.

Simple filament generator (:func:`make_filament_pairs`, ``data.generator=filaments``):

Ground truth: smooth, persistent curvilinear filaments splatted on the target grid.
Target (SIM-like): the filaments blurred by a narrow Gaussian PSF.
Input (widefield-like): blurred by a PSF twice as wide, binned by the scale factor,
with Poisson shot noise at ``photons`` counts for the brightest pixels and Gaussian read
noise, then bicubic-upsampled back to the target grid (``x`` lives on the target grid).
Both are percentile-normalised per image (1st → 0, 99.8th → 1), as CARE does.

This is deliberately simple (the demo before the BioSR-like simulator existed); kept as a
fast, easy data source for experiments.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from ..options import STRUCTURES
from . import optics
from .normalize import PERCENTILES
from .structures import structure

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


def _normalise(img: np.ndarray, lo: float = PERCENTILES[0], hi: float = PERCENTILES[1]) -> np.ndarray:
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


# ----------------------------------------------------------------------------------------
# the BioSR-like simulator
# ----------------------------------------------------------------------------------------
COUNTS_LEVEL_1, COUNTS_LEVEL_9 = 15.0, 600.0  # BioSR's nine signal levels: mean counts above offset


def counts_for_level(level: int) -> float:
    """Mean camera counts above the offset for BioSR-like level 1..9 (geometric, 15–600)."""
    if not 1 <= level <= 9:
        raise ValueError(f"level must be 1..9, got {level}")
    return COUNTS_LEVEL_1 * (COUNTS_LEVEL_9 / COUNTS_LEVEL_1) ** ((level - 1) / 8)


@dataclass
class SimulatorConfig:
    """Simulator parameters; pairs of numbers are ranges drawn uniformly per image
    (``counts`` log-uniformly). Lengths in µm.

    counts: mean widefield camera counts above the offset (ADU; BioSR's levels span
        about 15–600).
    gain: ADU per photo-electron of the camera.
    haze: out-of-focus light as a multiple of the in-focus signal, blurred by a Gaussian
        of ``haze_sigma_um`` (widefield only: SIM's optical sectioning removes it).
    background: uniform background as a multiple of the in-focus signal.
    aberration: a: the widefield OTF is damped by exp(−a (k/k_c)²) (real objectives,
        sample-induced aberrations).
    Defaults calibrated on the power spectra of the real BioSR microtubule pair
    (docs/simulator.md).
    """

    target_pixel_um: float = 0.0313
    scale: int = 2
    supersample: int = 2
    na: tuple[float, float] = (1.3, 1.49)
    wavelength_um: tuple[float, float] = (0.488, 0.640)
    sim_factor: tuple[float, float] = (1.8, 2.0)
    counts: tuple[float, float] = (COUNTS_LEVEL_1, COUNTS_LEVEL_9)
    gain: float = 0.32
    haze: tuple[float, float] = (2.0, 4.0)
    haze_sigma_um: tuple[float, float] = (1.0, 2.0)
    background: tuple[float, float] = (1.0, 3.0)
    aberration: tuple[float, float] = (1.0, 2.0)
    read_noise: tuple[float, float] = (1.0, 3.0)
    offset: float = 100.0
    density: tuple[float, float] = (0.6, 1.4)
    pad_um: float = 1.0

    @property
    def input_pixel_um(self) -> float:
        return self.target_pixel_um * self.scale

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SimulatedPair:
    """low: widefield camera counts (ADU, offset included) ``[S/scale, S/scale]``;
    target: noise-free SIM-like image ``[S, S]`` in in-focus photo-electrons per widefield
    pixel (float32); structure: the ground truth before any optics, integrated onto the
    target grid (same units); params: the values drawn for this pair."""

    low: np.ndarray
    target: np.ndarray
    structure: np.ndarray
    params: dict


def simulate_pair(
    kind: str,
    size: int,
    rng: np.random.Generator,
    cfg: SimulatorConfig | None = None,
    level: int | None = None,
) -> SimulatedPair:
    """One widefield/SIM pair of ``kind`` (``mt, factin, ccp, er, mixed, any``) with a
    ``size × size`` target. ``level`` (1..9) fixes the mean counts; else they are drawn."""
    cfg = cfg or SimulatorConfig()
    if kind not in STRUCTURES:
        raise ValueError(f"unknown structure {kind!r}; choose one of {', '.join(STRUCTURES)}")
    block = cfg.supersample * cfg.scale
    if size % cfg.scale:
        raise ValueError(f"size {size} must be a multiple of the scale factor {cfg.scale}")

    def draw(r: tuple[float, float]) -> float:
        return float(rng.uniform(*r))

    p = {"na": draw(cfg.na), "wavelength_um": draw(cfg.wavelength_um),
         "sim_factor": draw(cfg.sim_factor), "haze": draw(cfg.haze),
         "haze_sigma_um": draw(cfg.haze_sigma_um), "background": draw(cfg.background),
         "aberration": draw(cfg.aberration), "read_noise": draw(cfg.read_noise),
         "density": draw(cfg.density),
         "counts": counts_for_level(level) if level else float(
             math.exp(rng.uniform(math.log(cfg.counts[0]), math.log(cfg.counts[1]))))}
    px = cfg.target_pixel_um / cfg.supersample
    pad = int(math.ceil(cfg.pad_um / px / block)) * block  # against FFT wrap-around
    n = size * cfg.supersample + 2 * pad
    truth = structure(kind, rng, n, px, p["density"])
    truth_ft = np.fft.fft2(truth)
    k = optics.frequency_radius(n, px)
    cutoff = 2 * p["na"] / p["wavelength_um"]
    in_focus = optics.circular_otf(k, cutoff) * np.exp(-p["aberration"] * (k / cutoff) ** 2)
    haze = np.exp(-2 * (np.pi * p["haze_sigma_um"] * k) ** 2)  # Gaussian blur, mean kept

    def image(transfer: np.ndarray, bin_by: int) -> np.ndarray:
        img = np.fft.ifft2(truth_ft * transfer).real[pad:-pad, pad:-pad]
        return optics.bin_pixels(img, bin_by)

    signal = image(in_focus, block)
    hazy = image(haze, block)
    sim = image(optics.circular_otf(k, p["sim_factor"] * cutoff), cfg.supersample)
    electrons = p["counts"] / cfg.gain / (1 + p["haze"] + p["background"])  # in-focus mean
    unit = electrons / max(float(signal.mean()), 1e-12)
    expected = unit * (signal + p["haze"] * hazy) + p["background"] * electrons
    low = cfg.gain * optics.camera(expected, rng, p["read_noise"], 0.0) + cfg.offset
    p |= {"kind": kind, "cutoff_per_um": cutoff, "input_pixel_um": cfg.input_pixel_um,
          "target_pixel_um": cfg.target_pixel_um, "in_focus_electrons": electrons}
    gt = optics.bin_pixels(truth[pad:-pad, pad:-pad], cfg.supersample) * unit
    return SimulatedPair(low.astype(np.float32), (sim * unit).astype(np.float32),
                         gt.astype(np.float32), p)

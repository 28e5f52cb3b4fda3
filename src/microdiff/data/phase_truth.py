"""Phase ground truth for QPI, and simulated (intensities, phase) pairs.

Phase maps ``φ = phase_range · minmax(image)`` rad (the paper: 3.5 rad) from three sources:

- ``natural``: random crops of the natural images that ship inside scikit-image's wheel
  (no download), rescaled, rotated and flipped at random;
- ``structures``: the simulator's microscopy structures (``mt``, ``factin``, ``ccp``,
  ``er``, ``mixed``), smoothed by one pixel;
- ``cells``: synthetic adherent cells (:mod:`~microdiff.data.cell_phantoms`): smooth domes
  with nuclei on a flat background; ``natural+cells``: either, half and half;
- a folder of images (``folder=``), each used as it is after min-max scaling.

scikit-image's ``cell`` image is a real quantitative phase image: it is never among the
training sources and :func:`cell_phase` returns it as held-out phase truth.

:func:`simulate_qpi` turns one phase map into the acquisition of ``qpi-2shot`` (the pair at
±Δz) or ``qpi-poly`` (one RGB shot) with the paper's noise, min-max normalised as in the
paper: ``[C, H, W]`` float32 in [0, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from ..errors import UserError
from ..options import PHASE_SOURCES, QPI_TASKS
from . import phase
from .cell_phantoms import cell_phantom
from .structures import DEFAULT_DENSITY, structure

NATURAL_IMAGES = ("astronaut", "brick", "camera", "cat", "chelsea", "clock", "coffee", "coins", "grass",
                  "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina",
                  "rocket", "text")
HELD_OUT_IMAGE = "cell"  # a real quantitative phase image: test only
_cache: dict[str, np.ndarray] = {}


def _gray01(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, np.float64)
    if img.ndim == 3:
        img = img[..., :3].mean(-1)
    return minmax01(img)


def minmax01(img: np.ndarray) -> np.ndarray:
    """``img`` scaled to [0, 1] (all zeros for a constant image)."""
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img, dtype=np.float64)


def natural_image(name: str) -> np.ndarray:
    """A scikit-image sample image as grey levels in [0, 1] ``[H, W]`` (float64)."""
    if name not in (*NATURAL_IMAGES, HELD_OUT_IMAGE):
        raise ValueError(f"unknown image {name!r}; choose one of {', '.join(NATURAL_IMAGES)}")
    if name not in _cache:
        import skimage.data

        _cache[name] = _gray01(getattr(skimage.data, name)())
    return _cache[name]


def cell_phase(phase_range: float = 3.5, size: int | None = None) -> np.ndarray:
    """scikit-image's real quantitative phase image of a cell as phase ``[H, W]`` rad
    (``phase_range`` · minmax); with ``size``, the ``size``² crop centred on the cell (the
    centre of its brightest 1 %), kept inside the image."""
    img = natural_image(HELD_OUT_IMAGE)
    if size is not None:
        h, w = img.shape
        if size > min(h, w):
            raise ValueError(f"size {size} exceeds the cell image ({h}x{w})")
        cy, cx = np.argwhere(img >= np.percentile(img, 99)).mean(0)
        t = int(np.clip(round(cy) - size // 2, 0, h - size))
        left = int(np.clip(round(cx) - size // 2, 0, w - size))
        img = minmax01(img[t:t + size, left:left + size])
    return phase_range * img


def _random_view(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (side 0.3–1 of the short side), resized to ``size``², rotated and
    flipped at random."""
    from skimage.transform import resize

    h, w = img.shape
    side = max(8, int(rng.uniform(0.3, 1.0) * min(h, w)))
    t, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = resize(img[t:t + side, left:left + side], (size, size), anti_aliasing=side > size)
    crop = np.rot90(crop, int(rng.integers(0, 4)))
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def phase_map(source: str, size: int, rng: np.random.Generator, phase_range: float = 3.5,
              kind: str = "mixed", pixel_um: float = 0.21) -> tuple[np.ndarray, dict]:
    """One phase map ``[size, size]`` rad from ``source`` and what was drawn for it."""
    if source == "natural+cells":  # half and half, drawn per map
        source = "cells" if rng.random() < 0.5 else "natural"
    if source == "cells":
        return phase_range * minmax01(cell_phantom(size, rng)), {"source": "cells"}
    if source == "natural":
        name = NATURAL_IMAGES[int(rng.integers(len(NATURAL_IMAGES)))]
        img = _random_view(natural_image(name), size, rng)
        info = {"source": f"natural:{name}"}
    elif source == "structures":
        img = gaussian_filter(structure(kind, rng, size, pixel_um, DEFAULT_DENSITY.get(kind, 1.0)), 1.0)
        info = {"source": f"structures:{kind}"}
    else:
        raise ValueError(f"unknown phase source {source!r}; choose one of {', '.join(PHASE_SOURCES)}")
    return phase_range * minmax01(img), info


def folder_phase_maps(folder: str | Path, phase_range: float = 3.5) -> list[tuple[str, np.ndarray]]:
    """Every image of a folder as a phase map (``phase_range`` · minmax), with its name."""
    from .io import IMAGE_SUFFIXES, read_image

    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return [(p.stem, phase_range * _gray01(np.squeeze(read_image(p).data))) for p in files]


@dataclass
class QPIConfig:
    """The acquisition of a QPI task (defaults: the paper's)."""

    task: str = "qpi-2shot"
    pixel_um: float = 0.21
    wavelength_um: float = 0.521  # qpi-2shot
    defocus_um: float = 1.0  # qpi-2shot: the pair at ±Δz
    noise: tuple[float, float] = (0.0, 0.2)  # ℓ ~ U(lo, hi); noise N(ℓ, ℓ²)
    centres_um: tuple[float, float, float] = (0.630, 0.550, 0.450)  # qpi-poly
    width_range_um: tuple[float, float] = (0.01, 0.1)  # qpi-poly, drawn per channel
    defocus_range_um: tuple[float, float] = (0.01, 3.0)  # qpi-poly, drawn per channel
    n_wavelengths: int = 50  # qpi-poly, over 0.4–0.7 µm

    def __post_init__(self) -> None:
        if self.task not in QPI_TASKS:
            raise ValueError(f"unknown QPI task {self.task!r}; choose one of {', '.join(QPI_TASKS)}")

    @property
    def channels(self) -> int:
        return 2 if self.task == "qpi-2shot" else 3

    def to_dict(self) -> dict:
        return asdict(self)


def simulate_qpi(phi: np.ndarray, cfg: QPIConfig, rng: np.random.Generator, normalize: bool = True
                 ) -> tuple[np.ndarray, dict]:
    """The noisy acquisition ``[C, H, W]`` float32 of the phase map ``phi`` ``[H, W]``
    (rad), min-max normalised (the paper's convention) or, ``normalize=False``, raw
    intensities (unit illumination, noise included); and the values drawn for it. Equal
    ``rng`` states give the same draws either way."""
    p = torch.from_numpy(np.ascontiguousarray(phi, dtype=np.float64))
    level = float(rng.uniform(*cfg.noise))
    if cfg.task == "qpi-2shot":
        clean = phase.two_shot(p, phase.TwoShotConfig(cfg.pixel_um, cfg.wavelength_um, cfg.defocus_um))
        info = {"noise": level}
    else:
        widths = tuple(float(w) for w in rng.uniform(*cfg.width_range_um, size=3))
        defocus = tuple(float(z) for z in rng.uniform(*cfg.defocus_range_um, size=3))
        poly = phase.PolychromaticConfig(cfg.pixel_um, cfg.centres_um, widths, defocus,
                                         n_wavelengths=cfg.n_wavelengths)
        clean = phase.polychromatic(p, poly)
        info = {"noise": level, "widths_um": widths, "defocus_um": defocus}
    noise_gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    noisy = phase.add_noise(clean[None], level, generator=noise_gen)
    out = phase.minmax(noisy) if normalize else noisy
    return out[0].numpy().astype(np.float32), info

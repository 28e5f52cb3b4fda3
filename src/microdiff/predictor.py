"""Prediction on images of any size, with uncertainty, in the input's intensity units.

``microdiff.load(MODEL)`` returns a :class:`Predictor`. ``predict`` normalises the image
by its own percentiles, upsamples it by the model's scale factor (bicubic), samples K
posterior samples tile by tile (overlapping tiles, smooth blending), and maps the
posterior mean and std back to the input's intensity units with the same percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_bundle
from .data.normalize import PercentileNormalizer
from .data.synthetic import upsample
from .data.tiling import apply_tiled
from .diffusion import CVDM
from .errors import ShapeError


@dataclass
class Prediction:
    """mean, std: ``[H·s, W·s]`` (or ``[C, H·s, W·s]``) float32 in input units;
    pixel_size_um: the input's pixel size divided by the scale factor (None if unknown)."""

    mean: np.ndarray
    std: np.ndarray
    pixel_size_um: float | None


class Predictor:
    """A loaded model plus what is needed to apply it to raw images."""

    def __init__(self, model: CVDM, meta: dict) -> None:
        self.model, self.meta = model, meta
        self.scale = int(meta["scale"])
        norm = meta["normalization"]
        self.percentiles = (float(norm["lo"]), float(norm["hi"]))

    @torch.no_grad()
    def predict(
        self,
        image: np.ndarray,
        axes: str = "YX",
        samples: int | None = None,
        steps: int | None = None,
        seed: int = 0,
        tile: int = 256,
        overlap: int = 32,
        pixel_size_um: float | None = None,
    ) -> Prediction:
        """Posterior mean and std of ``image`` (``axes`` ``"YX"`` or ``"CYX"``).

        ``samples``/``steps`` default to the bundle's sampling config; ``tile`` and
        ``overlap`` are on the output (target) grid; equal ``seed`` ⇒ equal output.
        """
        if axes not in ("YX", "CYX") or len(axes) != np.ndim(image):
            raise ShapeError(f"image of shape {np.shape(image)} with axes {axes!r}: use 'YX' or 'CYX'")
        chw = np.asarray(image, np.float32)[None] if axes == "YX" else np.asarray(image, np.float32)
        if chw.shape[0] != self.model.schedule.out_channels:
            raise ShapeError(f"the model expects {self.model.schedule.out_channels} channel(s), "
                             f"the image has {chw.shape[0]}")
        s = self.meta["sample"]
        samples, steps = samples or s["samples"], steps or s["steps"]
        norm = PercentileNormalizer(*self.percentiles).fit(chw, channel_axis=0)
        x = torch.from_numpy(norm.normalize(chw, channel_axis=0))
        x = upsample(x[None], self.scale)[0] if self.scale > 1 else x
        gen = torch.Generator().manual_seed(seed)

        def run(tiles: torch.Tensor) -> torch.Tensor:
            out = self.model.sample(tiles, steps=steps, samples=samples, generator=gen,
                                    sampler=s["sampler"], eta=s["eta"], grid=s["grid"], clip=s["clip"])
            return torch.cat([out.mean, out.std], dim=1)

        both = apply_tiled(run, x, tile=tile, overlap=overlap, batch=1).numpy()
        c = chw.shape[0]
        mean = norm.denormalize(both[:c], channel_axis=0)
        std = norm.denormalize_spread(both[c:], channel_axis=0)
        if axes == "YX":
            mean, std = mean[0], std[0]
        px = pixel_size_um / self.scale if pixel_size_um else None
        return Prediction(mean, std, px)


def load(folder: str | Path, device: str = "cpu") -> Predictor:
    """Load an inference bundle (see :mod:`microdiff.checkpoint`) as a :class:`Predictor`."""
    return Predictor(*load_bundle(folder, device))

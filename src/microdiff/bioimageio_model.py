"""The network a BioImage Model Zoo package runs: deterministic posterior mean and std.

``microdiff export MODEL --format bioimageio`` copies this file into the package as the
``pytorch_state_dict`` architecture. bioimageio.core (or any consumer) builds
``PosteriorMean(**kwargs)``, loads the state dict and calls it on a raw image tensor
``[B, C, Y, X]`` (input units, any size); it returns ``(mean, std)``, each
``[B, C_out, Y·s, X·s]`` float32 in the input's intensity units (rad for QPI), exactly
what ``microdiff predict`` writes for the same image, seed, samples and steps: the
prediction is deterministic (fixed seed, posterior mean of K samples, fixed steps).
It needs the ``microdiff`` package (declared in the package's environment file).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from microdiff.checkpoint import Bundle
from microdiff.models import build_model
from microdiff.predictor import Predictor


class PosteriorMean(nn.Module):
    """A microdiff model with its sampling fixed: ``forward(image) -> (mean, std)``.

    bundle: the model folder's ``bundle.json`` (config, scale, normalisation, task);
    samples, steps, seed: the posterior sampling (K samples, N steps, generator seed);
    tile, overlap: tiling on the output grid, as ``microdiff predict`` (default: the bundle's).
    """

    def __init__(self, bundle: dict, samples: int = 8, steps: int = 20, seed: int = 0,
                 tile: int | None = None, overlap: int | None = None) -> None:
        super().__init__()
        self.bundle = Bundle.from_dict(bundle)
        self.model = build_model(self.bundle.model)
        self.options = {"samples": samples, "steps": steps, "seed": seed, "tile": tile, "overlap": overlap}

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image ``[B, C, Y, X]`` → (mean, std) ``[B, C_out, Y·s, X·s]`` (input units)."""
        predictor = Predictor(self.model.eval(), self.bundle)
        single = predictor.in_channels == 1 and not predictor.task.is_phase
        means, stds = [], []
        for item in image.detach().float().cpu().numpy():
            data, axes = (item[0], "YX") if single else (item, "CYX")
            res = predictor.predict(data, axes=axes, **self.options)
            means.append(res.mean if res.mean.ndim == 3 else res.mean[None])
            stds.append(res.std if res.std.ndim == 3 else res.std[None])
        return torch.from_numpy(np.stack(means)), torch.from_numpy(np.stack(stds))

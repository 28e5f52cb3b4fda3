"""What differs between inverse problems at the data boundary: how raw arrays become
normalised pairs, how the model's output returns to physical units, the classical baseline
and the metrics. The diffusion code never sees any of it.

- ``sr`` (super-resolution, the default): input and target percentile-normalised per
  channel (CSBDeep), the condition is the input bicubic-upsampled to the target grid, the
  output returns to the *input's* intensity units; baseline: bicubic; metrics after CARE's
  affine intensity matching.
- ``qpi-2shot`` / ``qpi-poly`` (quantitative phase): the input is a stack of intensities
  (2 defocused shots / 3 colour channels) on the target's grid, min-max normalised as a
  whole (the CVDM paper's convention; ``input_norm="mean"``: divided by the stack's mean,
  which keeps the contrast (I₊ − I₋)/I₀ that sets the phase's scale, lost by min-max);
  the target is phase in radians, mapped to [0, 1] by
  the fixed ``phase_range``, so the output returns in radians whatever the input's scale;
  baseline: TIE (two-shot only); metrics in radians after removing the mean phase (no
  method can know it from intensities).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ShapeError
from .normalize import PercentileNormalizer

TASKS = ("sr", "qpi-2shot", "qpi-poly")
INPUT_NORMS = ("minmax", "mean")  # of QPI stacks
QPI_CHANNELS = {"qpi-2shot": 2, "qpi-poly": 3}


@dataclass(frozen=True)
class Task:
    """``kind`` ∈ :data:`TASKS`; ``phase_range``: the target's range in rad (QPI);
    ``input_norm`` ∈ :data:`INPUT_NORMS`: how a QPI stack is normalised."""

    kind: str = "sr"
    phase_range: float = 3.5
    input_norm: str = "minmax"

    def __post_init__(self) -> None:
        if self.kind not in TASKS:
            raise ValueError(f"unknown task {self.kind!r}; choose one of {', '.join(TASKS)}")
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"unknown input_norm {self.input_norm!r}; "
                             f"choose one of {', '.join(INPUT_NORMS)}")

    @property
    def is_phase(self) -> bool:
        return self.kind != "sr"

    @property
    def baseline_name(self) -> str | None:
        return {"sr": "bicubic", "qpi-2shot": "tie"}.get(self.kind)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "phase_range": self.phase_range, "input_norm": self.input_norm}

    @classmethod
    def from_dict(cls, d: dict | None) -> Task:
        return cls(**d) if d else cls()  # bundles from before tasks existed are sr

    # --- input ------------------------------------------------------------------------
    def fit_input(self, image: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.8)
                  ) -> PercentileNormalizer:
        """The normaliser of an input ``[C, h, w]``: per-channel percentiles (sr), or the
        whole stack's min and max (qpi: one span for all channels keeps their ratios), or
        the stack's mean (qpi, ``input_norm="mean"``: the ratios to I₀ too)."""
        if self.is_phase and self.input_norm == "mean":
            m, c = float(np.mean(image)), np.shape(image)[0]
            if not m > 0:
                raise ShapeError(f"a {self.kind} stack needs a positive mean intensity, got {m:g}")
            return PercentileNormalizer(0.0, 100.0, eps=0.0, p_lo=[0.0] * c, p_hi=[m] * c)
        if self.is_phase:
            lo, hi, c = float(np.min(image)), float(np.max(image)), np.shape(image)[0]
            return PercentileNormalizer(0.0, 100.0, eps=1e-12, p_lo=[lo] * c, p_hi=[hi] * c)
        return PercentileNormalizer(*percentiles).fit(image, channel_axis=0)

    def check_channels(self, channels: int) -> None:
        need = QPI_CHANNELS.get(self.kind)
        if need is not None and channels != need:
            raise ShapeError(f"task {self.kind} takes {need} input channels, got {channels}")

    # --- target -----------------------------------------------------------------------
    def normalize_target(self, target: np.ndarray) -> np.ndarray:
        """``[C, H, W]`` → normalised float32: per-channel percentiles (sr) or φ / range (qpi)."""
        if self.is_phase:
            return (np.asarray(target, np.float64) / self.phase_range).astype(np.float32)
        return PercentileNormalizer().fit(target, channel_axis=0).normalize(target, channel_axis=0)

    def output_units(self, mean: np.ndarray, std: np.ndarray, input_norm: PercentileNormalizer
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The model's posterior mean and std ``[C, H, W]`` (normalised) in physical units:
        the input's intensity units (sr) or radians (qpi)."""
        if self.is_phase:
            return ((mean * self.phase_range).astype(np.float32),
                    (std * self.phase_range).astype(np.float32))
        return (input_norm.denormalize(mean, channel_axis=0),
                input_norm.denormalize_spread(std, channel_axis=0))

    def samples_units(self, samples: np.ndarray, input_norm: PercentileNormalizer) -> np.ndarray:
        """Posterior samples ``[K, C, H, W]`` in physical units."""
        if self.is_phase:
            return (samples * self.phase_range).astype(np.float32)
        return np.stack([input_norm.denormalize(s, channel_axis=0) for s in samples])

    # --- baseline ---------------------------------------------------------------------
    def baseline(self, x: np.ndarray, pixel_um: float | None = None) -> np.ndarray | None:
        """The classical answer from the condition ``x`` ``[C, H, W]`` (normalised, on the
        target grid): x itself for sr (bicubic-upsampled input), TIE for qpi-2shot (up to an
        affine change: the stack is min-max normalised), None for qpi-poly."""
        if self.kind == "sr":
            return np.asarray(x[0], np.float64)
        if self.kind == "qpi-2shot":
            from .phase import TwoShotConfig, tie_phase

            cfg = TwoShotConfig()
            t = torch.as_tensor(np.asarray(x, np.float64))
            return tie_phase(t[0], t[1], cfg.defocus_um, pixel_um or cfg.pixel_um, cfg.wavelength_um,
                             regularization=1e-3).numpy()
        return None

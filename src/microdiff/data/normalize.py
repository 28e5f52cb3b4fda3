"""Intensity normalisation: a per-channel affine map with its exact inverse.

``x → (x − offset) / span`` per channel, fitted on one image in one of three modes, each
named for what it does:

- :meth:`Normalizer.percentiles`: the ``lo``-th percentile → 0, the ``hi``-th → 1 per channel
  (CSBDeep's convention; super-resolution inputs and targets; default :data:`PERCENTILES`);
- :meth:`Normalizer.min_max`: the whole stack's minimum → 0, maximum → 1, one span for all
  channels (keeps their ratios; the CVDM paper's QPI inputs);
- :meth:`Normalizer.mean_scale`: divided by the stack's mean (keeps the contrast against the
  mean intensity; QPI with ``data.qpi_input_norm=mean``).

:meth:`Normalizer.denormalize` returns predictions to the input's intensity units and
:meth:`Normalizer.denormalize_spread` a spread (std, error): scaled, not shifted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: the percentiles of intensity normalisation, and of display ranges in figures
PERCENTILES: tuple[float, float] = (1.0, 99.8)
PERCENTILE_EPS = 1e-6  # added to the percentile span (no division by zero on flat images)
MIN_MAX_EPS = 1e-12


@dataclass
class Normalizer:
    """Per-channel ``(x − offset) / span`` (``span`` includes the mode's eps); ``mode`` says
    how it was fitted. One value per channel; a single value for one channel."""

    offset: list[float]
    span: list[float]
    mode: str = "percentiles"

    @classmethod
    def percentiles(cls, image: np.ndarray, lo: float = PERCENTILES[0], hi: float = PERCENTILES[1],
                    channel_axis: int | None = None, eps: float = PERCENTILE_EPS) -> Normalizer:
        """The ``lo``-th and ``hi``-th percentiles of ``image`` (per channel along
        ``channel_axis``; None: the whole array is one channel)."""
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"need 0 <= lo < hi <= 100, got lo={lo}, hi={hi}")
        data = np.asarray(image, dtype=np.float64)
        chans = [data] if channel_axis is None else list(np.moveaxis(data, channel_axis, 0))
        p_lo = [float(np.percentile(c, lo)) for c in chans]
        p_hi = [float(np.percentile(c, hi)) for c in chans]
        return cls(p_lo, [h - low + eps for low, h in zip(p_lo, p_hi, strict=True)], "percentiles")

    @classmethod
    def min_max(cls, stack: np.ndarray, eps: float = MIN_MAX_EPS) -> Normalizer:
        """The whole ``[C, H, W]`` stack's min → 0 and max → 1, the same for every channel."""
        lo, hi, c = float(np.min(stack)), float(np.max(stack)), np.shape(stack)[0]
        return cls([lo] * c, [hi - lo + eps] * c, "min_max")

    @classmethod
    def mean_scale(cls, stack: np.ndarray) -> Normalizer:
        """The ``[C, H, W]`` stack divided by its mean (no offset); the mean must be positive."""
        m, c = float(np.mean(stack)), np.shape(stack)[0]
        if not m > 0:
            raise ValueError(f"mean scaling needs a positive mean intensity, got {m:g}")
        return cls([0.0] * c, [m] * c, "mean_scale")

    def _shape(self, image: np.ndarray, channel_axis: int | None) -> tuple[np.ndarray, np.ndarray]:
        offset, span = np.asarray(self.offset, np.float64), np.asarray(self.span, np.float64)
        if channel_axis is None:
            if offset.size != 1:
                raise ValueError(f"fitted on {offset.size} channels; give channel_axis")
            return offset[0], span[0]
        if image.shape[channel_axis] != offset.size:
            raise ValueError(f"image has {image.shape[channel_axis]} channels, normaliser {offset.size}")
        shape = [1] * image.ndim
        shape[channel_axis] = offset.size
        return offset.reshape(shape), span.reshape(shape)

    def normalize(self, image: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """float32 ``(image − offset) / span``."""
        offset, span = self._shape(image, channel_axis)
        return ((np.asarray(image, np.float64) - offset) / span).astype(np.float32)

    def denormalize(self, image: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """The exact inverse of :meth:`normalize` (float32, input intensity units)."""
        offset, span = self._shape(image, channel_axis)
        return (np.asarray(image, np.float64) * span + offset).astype(np.float32)

    def denormalize_spread(self, spread: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """A spread (std, error) in normalised units → input units: scaled, not shifted."""
        _, span = self._shape(spread, channel_axis)
        return (np.asarray(spread, np.float64) * span).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(**d)

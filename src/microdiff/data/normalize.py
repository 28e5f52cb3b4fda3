"""Percentile normalisation per channel with its exact inverse (the CSBDeep convention).

``x → (x − p_lo) / (p_hi − p_lo + eps)`` with the ``lo``-th and ``hi``-th percentiles of
each channel. The fitted values travel with the model, so predictions can be returned in
the input's intensity units with :meth:`PercentileNormalizer.denormalize`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class PercentileNormalizer:
    """Per-channel percentile normalisation. ``p_lo``/``p_hi`` hold one value per channel
    once fitted (``channel_axis`` None: the whole array is one channel)."""

    lo: float = 1.0
    hi: float = 99.8
    eps: float = 1e-6
    p_lo: list[float] = field(default_factory=list)
    p_hi: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 <= self.lo < self.hi <= 100:
            raise ValueError(f"need 0 <= lo < hi <= 100, got lo={self.lo}, hi={self.hi}")

    def fit(self, image: np.ndarray, channel_axis: int | None = None) -> PercentileNormalizer:
        """Store the percentiles of ``image`` (per channel along ``channel_axis``)."""
        data = np.asarray(image, dtype=np.float64)
        chans = [data] if channel_axis is None else list(np.moveaxis(data, channel_axis, 0))
        self.p_lo = [float(np.percentile(c, self.lo)) for c in chans]
        self.p_hi = [float(np.percentile(c, self.hi)) for c in chans]
        return self

    def _shape(self, image: np.ndarray, channel_axis: int | None) -> tuple[np.ndarray, np.ndarray]:
        if not self.p_lo:
            raise ValueError("normaliser not fitted: call fit() first")
        lo, hi = np.asarray(self.p_lo), np.asarray(self.p_hi)
        if channel_axis is None:
            if lo.size != 1:
                raise ValueError(f"fitted on {lo.size} channels; give channel_axis")
            return lo[0], hi[0] - lo[0] + self.eps
        shape = [1] * image.ndim
        shape[channel_axis] = lo.size
        if image.shape[channel_axis] != lo.size:
            raise ValueError(f"image has {image.shape[channel_axis]} channels, normaliser {lo.size}")
        return lo.reshape(shape), (hi - lo + self.eps).reshape(shape)

    def normalize(self, image: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """float32 ``(image − p_lo) / (p_hi − p_lo + eps)``."""
        lo, span = self._shape(image, channel_axis)
        return ((np.asarray(image, np.float64) - lo) / span).astype(np.float32)

    def denormalize(self, image: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """The exact inverse of :meth:`normalize` (float32, input intensity units)."""
        lo, span = self._shape(image, channel_axis)
        return (np.asarray(image, np.float64) * span + lo).astype(np.float32)

    def denormalize_spread(self, spread: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """A spread (std, error) in normalised units → input units: scaled, not shifted."""
        _, span = self._shape(spread, channel_axis)
        return (np.asarray(spread, np.float64) * span).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PercentileNormalizer:
        return cls(**d)

"""A per-image gain and offset for the point estimate, predicted from the estimate itself.

Targets are normalised per image by their own percentiles (1st → 0, 99.8th → 1, as CARE
does), so an image's intensity scale rests on its brightest 0.2 % of pixels, which a network
trained on crops cannot know: on sparse structures a share of the error is one gain and
offset per image (25 % of the MSE on simulated microtubules, docs/core.md), and an image's
errors are then all too large or all too small for its std. The estimate's own statistics
tell much of it (an estimate whose brightest pixels overshoot has a gain below 1), so on
held-out pairs each image's least-squares gain and offset (target ≈ g · estimate + c) are
regressed on the estimate's features ``[1, 99.8th percentile, 1st percentile, mean]``, and
at prediction ``mean → g · mean + c``, ``std → g · std``, ``samples → g · samples + c`` with
``(g, c)`` from the new image's features, clipped to the range the fit saw. No label is
needed at prediction. Maps are 2-D (one image, one channel), in normalised target units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data.normalize import PERCENTILES

FEATURES = ("constant", f"p{PERCENTILES[1]:g}", f"p{PERCENTILES[0]:g}", "mean")
#: fewer held-out images fit no correction: fitted on 8 or 16 simulated images the regression
#: raised the test MSE and the per-structure spread of ±1σ; from 32 it lowered both
#: (docs/benchmarks.md, *The estimate's gain per image*)
MIN_IMAGES = 32
GAIN_BOUNDS = (0.5, 2.0)  # a fitted gain outside these is clipped: a guard against extrapolation
RIDGE = 1e-6  # relative ridge on the feature regression (collinear features stay finite)


def image_features(estimate: np.ndarray) -> np.ndarray:
    """``[len(FEATURES)]`` float64: 1, the 99.8th and 1st percentiles and the mean of a 2-D map."""
    e = np.asarray(estimate, dtype=np.float64).ravel()
    hi, lo = np.percentile(e, [PERCENTILES[1], PERCENTILES[0]])
    return np.array([1.0, hi, lo, e.mean()])


def image_gain(estimate: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """The least-squares (g, c) of ``target ≈ g · estimate + c`` over one image's pixels."""
    e = np.asarray(estimate, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    var = e.var()
    if var <= 0:
        return 1.0, float(t.mean() - e.mean())
    g = float(np.mean((e - e.mean()) * (t - t.mean())) / var)
    return g, float(t.mean() - g * e.mean())


@dataclass(frozen=True)
class IntensityCalibration:
    """``(g, c) = (features · gain, features · offset)`` with the features clipped to
    [``low``, ``high``] (their range on the held-out images) and g to :data:`GAIN_BOUNDS`."""

    gain: tuple[float, ...]
    offset: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    images: int

    def params(self, estimate: np.ndarray) -> tuple[float, float]:
        """(g, c) for one 2-D estimate."""
        f = np.clip(image_features(estimate), self.low, self.high)
        g = float(np.clip(f @ np.array(self.gain), *GAIN_BOUNDS))
        return g, float(f @ np.array(self.offset))

    def apply(self, mean: np.ndarray, std: np.ndarray, samples: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The corrected 2-D ``mean`` and ``std`` and ``samples`` ``[K, H, W]`` (or None),
        with (g, c) from ``mean``; float32."""
        g, c = self.params(mean)
        out = (g * mean + c).astype(np.float32), (g * std).astype(np.float32)
        return (*out, None if samples is None else (g * samples + c).astype(np.float32))

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "gain": list(self.gain), "offset": list(self.offset),
                "low": list(self.low), "high": list(self.high), "images": self.images}

    @classmethod
    def from_dict(cls, d: dict) -> IntensityCalibration:
        """Inverse of :meth:`to_dict` (``KeyError``/``ValueError`` when malformed)."""
        if list(d["features"]) != list(FEATURES):
            raise ValueError(f"unknown intensity-calibration features {d['features']}")
        vectors = [tuple(float(v) for v in d[k]) for k in ("gain", "offset", "low", "high")]
        if any(len(v) != len(FEATURES) for v in vectors):
            raise ValueError("intensity calibration: every vector needs one entry per feature")
        return cls(*vectors, int(d["images"]))


def fit_intensity(estimates: list[np.ndarray], targets: list[np.ndarray], min_images: int = MIN_IMAGES
                  ) -> IntensityCalibration | None:
    """Fit on held-out 2-D (estimate, target) maps in normalised target units: each image's
    least-squares (g, c), regressed on its features (a nearly unpenalised ridge); None with
    fewer than ``min_images`` maps (default :data:`MIN_IMAGES`: fewer do harm)."""
    if len(estimates) != len(targets):
        raise ValueError(f"need matching estimates and targets, got {len(estimates)} and {len(targets)}")
    n = len(estimates)
    if n < min_images:
        return None
    feats = np.stack([image_features(e) for e in estimates])
    gc = np.array([image_gain(e, t) for e, t in zip(estimates, targets, strict=True)])
    scale = np.maximum(feats.std(0), 1e-12)
    scale[0] = 1.0
    z = feats / scale
    penalty = RIDGE * n * np.diag([0.0] + [1.0] * (len(FEATURES) - 1))
    coef = np.linalg.solve(z.T @ z + penalty, z.T @ gc) / scale[:, None]
    return IntensityCalibration(tuple(coef[:, 0]), tuple(coef[:, 1]), tuple(feats.min(0)),
                                tuple(feats.max(0)), n)

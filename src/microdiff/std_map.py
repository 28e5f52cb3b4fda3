"""The std map of a calibration: the predicted std → the error scale it should have.

Fitted in equal-count bins of the predicted std so that each bin's root-mean-square error
matches its root-mean-variance (RMSE ≈ RMV), as one factor, a line or a monotone curve through
the bins (:func:`fit_std_calibration`); :mod:`microdiff.calibration` fits it with the interval
and stores both. Arrays are in the units of the target; shapes are free (flattened).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

STD_FLOOR = 1e-8  # calibrated std never reaches zero


@dataclass(frozen=True)
class StdCalibration:
    """``std_cal = max(slope · std + offset, STD_FLOOR)`` (target units); with ``knots``
    (rmv, scale), the binned form: the piecewise-linear curve through the knots, and beyond
    the first or last knot the ratio scale / rmv of that knot (so std 0 maps to 0)."""

    slope: float = 1.0  # the binned form keeps its one-factor fit here (a summary)
    offset: float = 0.0
    knots: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def __post_init__(self) -> None:
        if self.knots is not None:
            x, y = (np.asarray(k, dtype=np.float64) for k in self.knots)
            if not (x.ndim == y.ndim == 1 and x.size == y.size >= 2 and np.all(np.isfinite(x))
                    and np.all(np.isfinite(y)) and x[0] > 0 and np.all(np.diff(x) > 0) and y[0] > 0
                    and np.all(np.diff(y) >= 0)):
                raise ValueError("the binned std map needs two equal lists of at least two finite knots, the "
                                 "std's positive and increasing, the error's positive and non-decreasing")

    def apply(self, std: np.ndarray) -> np.ndarray:
        s = np.asarray(std, dtype=np.float64)
        if self.knots is None:
            return np.maximum(self.slope * s + self.offset, STD_FLOOR)
        x, y = (np.asarray(k, dtype=np.float64) for k in self.knots)
        inside = np.interp(s, x, y)
        out = np.where(s < x[0], s * (y[0] / x[0]), np.where(s > x[-1], s * (y[-1] / x[-1]), inside))
        return np.maximum(out, STD_FLOOR)


ONE_SIGMA = 0.6827  # the fraction of a Gaussian within ±1σ
STD_TARGETS = ("rms", "coverage", "balanced")
STD_FORMS = ("scale", "affine", "binned")  # std → k·std, a·std + b, or a monotone curve through the bins


def calibration_bins(std: np.ndarray, error: np.ndarray, bins: int = 10, keep: float = 0.95,
                     target: str = "rms") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RMV and the error's scale per equal-count bin of the predicted std over the ``keep``
    fraction of the pixels with the lowest std (the issue's "bins holding 95 % of the
    pixels"; the top tail of a few extreme stds is left out): (rmv ``[bins]``, scale
    ``[bins]``, pixels per bin). The scale is the RMSE (``target="rms"``), the 68.27 %
    quantile of |error| (``"coverage"``: ±scale holds 68 % of the bin) or their geometric
    mean (``"balanced"``)."""
    if target not in STD_TARGETS:
        raise ValueError(f"target must be one of {', '.join(STD_TARGETS)}, got {target!r}")
    s = np.ravel(std).astype(np.float64)
    e = np.ravel(error).astype(np.float64)
    if s.shape != e.shape:
        raise ValueError(f"std and error differ in size: {s.size} and {e.size} values")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must lie in (0, 1], got {keep}")
    order = np.argsort(s, kind="stable")[: max(bins, int(round(keep * s.size)))]
    parts = np.array_split(order, bins)
    rmv = np.array([math.sqrt(np.mean(s[p] ** 2)) for p in parts])
    rmse = np.array([math.sqrt(np.mean(e[p] ** 2)) for p in parts])
    counts = np.array([p.size for p in parts])
    if target == "rms":
        return rmv, rmse, counts
    q = np.array([float(np.quantile(np.abs(e[p]), ONE_SIGMA)) for p in parts])
    return rmv, (q if target == "coverage" else np.sqrt(q * rmse)), counts


def fit_std_calibration(std: np.ndarray, error: np.ndarray, bins: int = 10, keep: float = 0.95,
                        target: str = "rms", form: str = "scale") -> StdCalibration:
    """The std map through the bins of :func:`calibration_bins` (equal counts, so equal
    weights). ``form="scale"`` (the default): std → k·std with log k the mean over the bins
    of log(scale / RMV), the factor that puts the bins' ratios, on average in relative terms,
    at 1; one parameter, so it stays stable when few held-out images are at hand.
    ``"affine"``: the least-squares line scale ≈ slope · RMV + offset, which also removes an
    additive bias but, fitted on a few images, can bend the low-std bins far off
    (docs/benchmarks.md, *How many images calibration needs*); a line with a non-positive
    slope (the std does not rank the error at all) falls back to a pure scale,
    slope = √(Σe² / Σs²), offset 0. ``"binned"``: the curve through the bins' (RMV, scale)
    points, the scales made non-decreasing in the std by isotonic regression (:func:`binned_knots`),
    which puts each bin's ratio close to 1 on the calibration
    pixels wherever the bins are monotone, whatever the shape of the miscalibration
    (CAREamics' binned fit, made a monotone map); ten parameters, so it wants many held-out
    images (*How many images calibration needs*)."""
    if form not in STD_FORMS:
        raise ValueError(f"form must be one of {', '.join(STD_FORMS)}, got {form!r}")
    rmv, scale, _ = calibration_bins(std, error, bins, keep, target)
    ok = (rmv > 0) & (scale > 0) & np.isfinite(rmv) & np.isfinite(scale)
    if form in ("scale", "binned") and ok.any():
        k = float(np.exp(np.mean(np.log(scale[ok] / rmv[ok]))))
        knots = binned_knots(rmv[ok], scale[ok]) if form == "binned" else None
        return StdCalibration(k, 0.0, knots)
    if form == "affine" and np.ptp(rmv) > 0:
        slope, offset = np.polyfit(rmv, scale, 1)
        if slope > 0:
            return StdCalibration(float(slope), float(offset))
    s, e = np.ravel(std).astype(np.float64), np.ravel(error).astype(np.float64)
    return StdCalibration(float(math.sqrt(np.sum(e ** 2) / max(np.sum(s ** 2), 1e-300))), 0.0)


def binned_knots(rmv: np.ndarray, scale: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The binned form's knots from bins with positive, finite RMV and scale: equal RMVs
    merged (the RMS of their scales, weighted by their count), scales made non-decreasing
    (isotonic regression of the squared scales weighted by the counts, SciPy ≥ 1.12, so a pooled
    run of bins gets the RMS of its scales); None when fewer than two distinct knots remain (the
    one factor is then the map)."""
    from scipy.optimize import isotonic_regression

    x, inverse = np.unique(rmv, return_inverse=True)
    if x.size < 2:
        return None
    counts = np.bincount(inverse).astype(np.float64)
    y2 = np.bincount(inverse, weights=scale ** 2) / counts
    # isotonic on the squared scale: a pooled run of bins gets its pixels' RMS, as merged RMVs do
    y = np.sqrt(np.maximum.accumulate(isotonic_regression(y2, weights=counts).x))  # exact under rounding
    return tuple(float(v) for v in x), tuple(float(v) for v in y)

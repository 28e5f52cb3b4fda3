"""Calibration of the posterior std, and distribution-free intervals around the estimate.

Two promises, fitted on held-out pairs (never the training files):

* a **calibrated std**: ``std_cal = slope · std + offset`` (or a monotone curve through the
  bins, ``form="binned"``) fitted so that, in equal-count
  bins of the predicted std, the root-mean-square error matches the root-mean-variance
  (RMSE ≈ RMV: the binned fit CAREamics uses for its samples). After it ``NAME_std.tif``
  is in the units of the error it predicts.
* a **conformal interval** ``estimate ± λ̂ · std_cal``: each held-out unit (an image, or a
  tile of one when there are too few images) gets the score "the smallest λ that leaves at
  most a fraction ``alpha`` of its pixels outside", and λ̂ is the ⌈(n + 1)(1 − ``delta``)⌉-th
  smallest of the n scores (split conformal prediction, Vovk et al. 2005; Angelopoulos &
  Bates 2021, "A gentle introduction to conformal prediction", for a per-image score). The
  guarantee: if the held-out units and a new one are exchangeable, then with probability at
  least ``1 − delta`` at most a fraction ``alpha`` of the new unit's pixels fall outside its
  interval. It says nothing about a single pixel, nor about images unlike the held-out
  ones; with tiles as units it also assumes that the tiles of one image are exchangeable
  with each other's, which correlated errors within an image break (measured in
  docs/benchmarks.md). The earlier risk-controlling fit (Bates et al. 2021, Hoeffding–
  Bentkus bound on the tiles' expected miscoverage) stays as :func:`fit_interval`.

Arrays are in the units of the target (errors and std alike); shapes are free (flattened).
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

from .intensity_calibration import IntensityCalibration
from .std_map import (  # noqa: F401  (re-exported: the calibration API)
    ONE_SIGMA,
    STD_FLOOR,
    STD_FORMS,
    STD_TARGETS,
    StdCalibration,
    binned_knots,
    calibration_bins,
    fit_std_calibration,
)

BINNED_METHOD = "binned-monotone"  # bundle.json's method of the binned form: readers older than
# the knots would apply the one factor with an interval factor fitted on the curve, so they refuse it
UNITS = ("auto", "image", "tile")  # the interval's exchangeable units (see fit)


class Uncertifiable(ValueError):
    """Too few calibration units to certify the interval at the asked alpha and delta."""


def hoeffding_bentkus_p(risk: float, n: int, alpha: float) -> float:
    """p-value of the null "true risk > alpha" given the mean ``risk`` of ``n`` i.i.d. losses
    in [0, 1]: min(exp(−n·h(min(risk, α), α)), e·P(Binomial(n, α) ≤ ⌈n·risk⌉)), with
    h(a, b) = a·log(a/b) + (1 − a)·log((1 − a)/(1 − b)) (Bates et al. 2021, eq. 9)."""
    a = min(risk, alpha)

    def xlogy(x: float, y: float) -> float:
        return 0.0 if x == 0 else x * math.log(y)

    h = xlogy(a, a / alpha) + xlogy(1 - a, (1 - a) / (1 - alpha))
    hoeffding = math.exp(-n * h)
    bentkus = math.e * float(binom.cdf(math.ceil(n * risk - 1e-12), n, alpha))
    return min(hoeffding, bentkus, 1.0)


def tile_units(std: np.ndarray, error: np.ndarray, tile: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Non-overlapping ``tile``² pieces of 2-D ``std`` and ``error`` maps (the edge remainder
    dropped): the calibration units of :func:`fit_interval`."""
    if std.shape != error.shape or std.ndim != 2:
        raise ValueError(f"std and error must be 2-D maps of one shape, got {std.shape} and {error.shape}")
    h, w = std.shape
    if h < tile or w < tile:
        raise ValueError(f"a {h}×{w} image holds no {tile}×{tile} calibration tile")
    return [(std[r:r + tile, c:c + tile], error[r:r + tile, c:c + tile])
            for r in range(0, h - tile + 1, tile) for c in range(0, w - tile + 1, tile)]


def miscoverage(std: np.ndarray, error: np.ndarray, factor: float) -> float:
    """Fraction of pixels with |error| > factor · std."""
    return float(np.mean(np.abs(error) > factor * std))


def fit_interval(units: list[tuple[np.ndarray, np.ndarray]], alpha: float = 0.1, delta: float = 0.1
                 ) -> float:
    """λ̂: the smallest factor with Hoeffding–Bentkus p-value < ``delta`` for "the expected
    fraction of a unit's pixels with |error| > λ · std exceeds ``alpha``", for every factor
    from λ̂ up (the risk falls as λ grows, so the first failure from the top ends the scan).
    ``units``: (calibrated std, error) per exchangeable unit. Raises ``ValueError`` when
    even the largest factor is not certified (too few units for this ``alpha``/``delta``)."""
    if not (0 < alpha < 1 and 0 < delta < 1):
        raise ValueError(f"alpha and delta must lie in (0, 1), got {alpha} and {delta}")
    if not units:
        raise ValueError("no calibration units")
    ratios = [np.abs(e).ravel() / np.maximum(s, STD_FLOOR).ravel() for s, e in units]
    pooled = np.concatenate(ratios)
    grid = np.unique(np.quantile(pooled, np.linspace(0.0, 1.0, 2001)))
    grid = np.append(grid, grid[-1] * (1 + 1e-9) + 1e-12)  # above every ratio: risk 0
    n = len(units)
    best = None
    for lam in grid[::-1]:
        risk = float(np.mean([np.mean(r > lam) for r in ratios]))
        if hoeffding_bentkus_p(risk, n, alpha) >= delta:
            break
        best = float(lam)
    if best is None:
        raise Uncertifiable(f"{n} calibration units cannot certify miscoverage ≤ {alpha} at confidence "
                         f"{1 - delta}: use more held-out images or smaller tiles")
    return best


def unit_scores(units: list[tuple[np.ndarray, np.ndarray]], alpha: float) -> np.ndarray:
    """Per unit (std, error): the smallest factor λ with at most a fraction ``alpha`` of the
    unit's pixels outside ±λ·std, i.e. the order statistic r₍ₘ₋ₖ₎ of r = |error| / std with
    k = ⌊α·m⌋ pixels allowed outside (``[n_units]``)."""
    scores = []
    for s, e in units:
        r = np.sort(np.abs(np.ravel(e)) / np.maximum(np.ravel(s), STD_FLOOR))
        if r.size == 0:
            raise ValueError("an empty calibration unit")
        scores.append(float(r[r.size - 1 - math.floor(alpha * r.size + 1e-9)]))
    return np.array(scores)


def min_conformal_units(delta: float) -> int:
    """The fewest units for which :func:`fit_interval_conformal` certifies confidence
    ``1 − delta``: n with ⌈(n + 1)(1 − δ)⌉ ≤ n, i.e. n ≥ (1 − δ)/δ."""
    return math.ceil((1 - delta) / delta - 1e-9)


def resolve_unit(unit: str, images: int, delta: float) -> str:
    """``"image"`` or ``"tile"`` for the asked ``unit`` (``"auto"``: images when there are at
    least :func:`min_conformal_units` of them)."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if unit == "auto":
        return "image" if images >= min_conformal_units(delta) else "tile"
    return unit


def default_unit(uncertainty: str) -> str:
    """The interval's unit when the user names none, by where the std comes from
    (``sample.uncertainty``): ``"auto"`` (whole images when there are at least
    :func:`min_conformal_units` of them, else tiles) for the variance head's std, ``"tile"`` for
    the samples' spread. Measured over 100 random calibration/test splits of 32 held-out
    simulated images (docs/benchmarks.md, *Calibration*): with the head's std the tile promise
    held in 86 %, 96 %, 86 % of splits on three seeds (promised: 90 %) and the image promise in
    94 %, 99 %, 95 %; with the spread of 16 samples tiles held in 95 % and 97 %, while one image
    with a near-zero std made the image interval vacuous."""
    return "auto" if uncertainty == "head" else "tile"


def fit_interval_conformal(units: list[tuple[np.ndarray, np.ndarray]], alpha: float = 0.1,
                           delta: float = 0.1) -> float:
    """λ̂: split conformal prediction on the per-unit scores of :func:`unit_scores`, the
    ⌈(n + 1)(1 − δ)⌉-th smallest of the n calibration scores. If the calibration units and a
    new unit are exchangeable, then P(at most a fraction α of the new unit's pixels lie
    outside ±λ̂·std) ≥ 1 − δ, over the calibration set and the new unit together (and, the
    scores having no ties, ≤ 1 − δ + 1/(n + 1)). Raises :class:`Uncertifiable` below
    :func:`min_conformal_units` units."""
    if not (0 < alpha < 1 and 0 < delta < 1):
        raise ValueError(f"alpha and delta must lie in (0, 1), got {alpha} and {delta}")
    n = len(units)
    rank = math.ceil((n + 1) * (1 - delta) - 1e-9)
    if n == 0 or rank > n:
        raise Uncertifiable(f"{n} calibration units cannot certify miscoverage ≤ {alpha} at confidence "
                            f"{1 - delta}: it takes at least {min_conformal_units(delta)}")
    return float(np.sort(unit_scores(units, alpha))[rank - 1])


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration, as stored in a model bundle (``bundle.json``, key
    ``calibration``): the std map (fitted to the bins' ``target`` scale), the interval
    factor λ̂ (None when the held-out data held too few units to certify one), what it
    promises (``alpha``, ``delta``, over ``unit``s: whole images or ``tile``² tiles, by
    ``interval_method``), what it was fitted with (``samples`` K × ``steps``, which it is
    valid for), the data it came from and the ±1σ coverage on those pixels before and after;
    ``intensity``: the per-image gain and offset of the estimate applied before the std map
    (:mod:`microdiff.intensity_calibration`; None: not fitted). Bundles written before the
    conformal interval read as ``rcps`` over tiles, those written before the scale-only map
    (``form``) as ``affine``, those written before the intensity correction without one."""

    std: StdCalibration
    interval_factor: float | None
    alpha: float
    delta: float
    tile: int
    samples: int
    steps: int
    source: str
    images: int
    pixels: int
    units: int
    date: str
    coverage_before: float
    coverage_after: float
    unit: str = "tile"
    interval_method: str = "rcps"
    target: str = "rms"
    form: str = "affine"
    intensity: IntensityCalibration | None = None

    def to_dict(self) -> dict:
        method = "binned-linear" if self.std.knots is None else BINNED_METHOD  # older readers refuse it
        return {"method": method, "slope": self.std.slope, "offset": self.std.offset,
                "target": self.target, "form": self.form, "interval_factor": self.interval_factor,
                "interval_method": self.interval_method, "unit": self.unit, "alpha": self.alpha,
                "delta": self.delta, "tile": self.tile, "samples": self.samples, "steps": self.steps,
                "source": self.source, "images": self.images, "pixels": self.pixels, "units": self.units,
                "date": self.date, "coverage_1sigma_before": self.coverage_before,
                "coverage_1sigma_after": self.coverage_after,
                "knots": None if self.std.knots is None else [list(k) for k in self.std.knots],
                "intensity": None if self.intensity is None else self.intensity.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        """Inverse of :meth:`to_dict` (``KeyError``/``TypeError``/``ValueError`` when malformed)."""
        if d.get("method") not in ("binned-linear", BINNED_METHOD):
            raise ValueError(f"unknown calibration method {d.get('method')!r}")
        factor, knots = d["interval_factor"], d.get("knots")
        if d["method"] == BINNED_METHOD and knots is None:
            raise ValueError(f"a {BINNED_METHOD} calibration needs its knots")
        if knots is not None:
            knots = tuple(tuple(float(v) for v in k) for k in knots)
            if len(knots) != 2:
                raise ValueError("the binned std map needs two lists of knots (std, error)")
        return cls(StdCalibration(float(d["slope"]), float(d["offset"]), knots),
                   None if factor is None else float(factor), float(d["alpha"]), float(d["delta"]),
                   int(d["tile"]), int(d["samples"]), int(d["steps"]), str(d["source"]), int(d["images"]),
                   int(d["pixels"]), int(d["units"]), str(d["date"]),
                   float(d["coverage_1sigma_before"]), float(d["coverage_1sigma_after"]),
                   str(d.get("unit", "tile")), str(d.get("interval_method", "rcps")),
                   str(d.get("target", "rms")), str(d.get("form", "affine")),
                   None if d.get("intensity") is None else IntensityCalibration.from_dict(d["intensity"]))

    def describe_map(self) -> str:
        """The fitted std map, e.g. ``1.08·std`` (scale), ``0.9·std + 0.002`` (affine) or
        ``binned (10 knots, 0.92–1.31·std)``."""
        if self.std.knots is not None:
            ratio = np.divide(*(np.asarray(k) for k in self.std.knots[::-1]))
            return f"binned ({ratio.size} knots, {ratio.min():.3g}–{ratio.max():.3g}·std)"
        return f"{self.std.slope:.3g}·std" + (f" + {self.std.offset:.3g}" if self.form == "affine" else "")

    def describe_draws(self) -> str:
        """What the calibrated std was computed from: one pass, or K samples × N steps."""
        return "one pass, no samples" if self.samples == 0 else f"{self.samples} samples × {self.steps} steps"

    def spread_differs(self, samples: int, steps: int, uncertainty: str) -> bool:
        """Whether predicting with ``samples`` × ``steps`` changes the std the map was fitted to:
        only for the samples' spread (``uncertainty`` ``samples``); the head's σ(x) draws none."""
        return uncertainty == "samples" and (samples, steps) != (self.samples, self.steps)

    def promise(self) -> str:
        """One sentence: what the interval promises, or why there is none."""
        what = "a new image" if self.unit == "image" else f"a new {self.tile}×{self.tile} tile"
        if self.interval_factor is None:
            return (f"no interval: {self.units} held-out {self.unit}s cannot certify it at confidence "
                    f"{1 - self.delta:g}")
        if self.interval_method == "rcps":
            return (f"mean ± {self.interval_factor:.3g}·std leaves out at most {self.alpha:g} of {what}'s "
                    f"pixels on average, with confidence {1 - self.delta:g} (for {self.unit}s like the "
                    "held-out ones)")
        return (f"mean ± {self.interval_factor:.3g}·std leaves out at most {self.alpha:g} of {what}'s "
                f"pixels with probability ≥ {1 - self.delta:g} (for {self.unit}s exchangeable with the "
                "held-out ones)")

    def interval(self, estimate: np.ndarray, calibrated_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) = estimate ∓ λ̂ · calibrated std (same units as both)."""
        if self.interval_factor is None:
            raise ValueError("this calibration has no certified interval")
        half = self.interval_factor * calibrated_std
        return estimate - half, estimate + half


def fit(maps: list[tuple[np.ndarray, np.ndarray]], alpha: float = 0.1, delta: float = 0.1, tile: int = 32,
        *, samples: int, steps: int, source: str, unit: str = "tile", target: str = "rms",
        form: str = "scale") -> Calibration:
    """Fit the std map and the interval on held-out (std, error) 2-D maps in the model's
    normalised target units (error = estimate − target). The interval is split conformal
    over ``unit``s: its ``tile``² tiles (``"tile"``, the default), each map (``"image"``), or
    (``"auto"``) images when there are at least :func:`min_conformal_units` of them, else
    tiles. Images as units give the per-image promise, but with few images λ̂ is the largest
    score, which one image with a near-zero std makes vacuous (docs/benchmarks.md). ``target``
    and ``form`` as :func:`fit_std_calibration`."""
    if not maps:
        raise ValueError("no held-out images to calibrate on")
    unit = resolve_unit(unit, len(maps), delta)
    std = np.concatenate([np.ravel(s) for s, _ in maps])
    err = np.concatenate([np.ravel(e) for _, e in maps])
    std_cal = fit_std_calibration(std, err, target=target, form=form)
    calibrated = [(std_cal.apply(s), e) for s, e in maps]
    units = calibrated if unit == "image" else [u for s, e in calibrated for u in tile_units(s, e, tile)]
    try:
        factor: float | None = fit_interval_conformal(units, alpha, delta)
    except Uncertifiable:
        factor = None
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return Calibration(std_cal, factor, alpha, delta, tile, samples, steps, source, len(maps), int(std.size),
                       len(units), date, float(np.mean(np.abs(err) <= std)),
                       float(np.mean(np.abs(err) <= std_cal.apply(std))), unit, "conformal", target, form)

"""Calibration of the posterior std, and distribution-free intervals around the estimate.

Two promises, fitted on held-out pairs (never the training files):

* a **calibrated std**: ``std_cal = slope · std + offset`` fitted so that, in equal-count
  bins of the predicted std, the root-mean-square error matches the root-mean-variance
  (RMSE ≈ RMV: the binned fit CAREamics uses for its samples). After it ``NAME_std.tif``
  is in the units of the error it predicts.
* a **risk-controlling interval** ``estimate ± λ̂ · std_cal``: λ̂ is the smallest factor whose
  upper confidence bound on the expected fraction of pixels outside the interval is below
  ``alpha``, at confidence ``1 − delta`` (Bates et al. 2021, "Distribution-free,
  risk-controlling prediction sets", with the Hoeffding–Bentkus bound; Angelopoulos et al.
  2022 for image-to-image regression). The guarantee: if the calibration units (tiles of
  the held-out images) and a new image's tiles are exchangeable, then with probability at
  least ``1 − delta`` over the calibration set, the expected fraction of a new tile's pixels
  outside its interval is at most ``alpha``. It says nothing about a single pixel, nor about
  images unlike the calibration images.

Arrays are in the units of the target (errors and std alike); shapes are free (flattened).
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

STD_FLOOR = 1e-8  # calibrated std never reaches zero


class Uncertifiable(ValueError):
    """Too few calibration units to certify the interval at the asked alpha and delta."""


@dataclass(frozen=True)
class StdCalibration:
    """``std_cal = max(slope · std + offset, STD_FLOOR)`` (target units)."""

    slope: float = 1.0
    offset: float = 0.0

    def apply(self, std: np.ndarray) -> np.ndarray:
        return np.maximum(self.slope * np.asarray(std, dtype=np.float64) + self.offset, STD_FLOOR)


def calibration_bins(std: np.ndarray, error: np.ndarray, bins: int = 10, keep: float = 0.95
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RMV and RMSE per equal-count bin of the predicted std over the ``keep`` fraction of
    the pixels with the lowest std (the issue's "bins holding 95 % of the pixels"; the top
    tail of a few extreme stds is left out): (rmv ``[bins]``, rmse ``[bins]``, pixels per bin)."""
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
    return rmv, rmse, np.array([p.size for p in parts])


def fit_std_calibration(std: np.ndarray, error: np.ndarray, bins: int = 10, keep: float = 0.95
                        ) -> StdCalibration:
    """Least-squares line RMSE ≈ slope · RMV + offset through the bins of
    :func:`calibration_bins` (equal counts, so equal weights). A line with a non-positive
    slope (the std does not rank the error at all) falls back to a pure scale,
    slope = √(Σe² / Σs²), offset 0."""
    rmv, rmse, _ = calibration_bins(std, error, bins, keep)
    if np.ptp(rmv) > 0:
        slope, offset = np.polyfit(rmv, rmse, 1)
        if slope > 0:
            return StdCalibration(float(slope), float(offset))
    s, e = np.ravel(std).astype(np.float64), np.ravel(error).astype(np.float64)
    return StdCalibration(float(math.sqrt(np.sum(e ** 2) / max(np.sum(s ** 2), 1e-300))), 0.0)


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


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration, as stored in a model bundle (``bundle.json``, key
    ``calibration``): the std map, the interval factor λ̂ (None when the held-out data held
    too few tiles to certify one), what it promises (``alpha``, ``delta``, ``tile``), what it
    was fitted with (``samples`` K × ``steps``, which it is valid for), the data it came
    from and the ±1σ coverage on those pixels before and after."""

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

    def to_dict(self) -> dict:
        return {"method": "binned-linear", "slope": self.std.slope, "offset": self.std.offset,
                "interval_factor": self.interval_factor, "alpha": self.alpha, "delta": self.delta,
                "tile": self.tile, "samples": self.samples, "steps": self.steps, "source": self.source,
                "images": self.images, "pixels": self.pixels, "units": self.units, "date": self.date,
                "coverage_1sigma_before": self.coverage_before, "coverage_1sigma_after": self.coverage_after}

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        """Inverse of :meth:`to_dict` (``KeyError``/``TypeError``/``ValueError`` when malformed)."""
        if d.get("method") != "binned-linear":
            raise ValueError(f"unknown calibration method {d.get('method')!r}")
        factor = d["interval_factor"]
        return cls(StdCalibration(float(d["slope"]), float(d["offset"])),
                   None if factor is None else float(factor), float(d["alpha"]), float(d["delta"]),
                   int(d["tile"]), int(d["samples"]), int(d["steps"]), str(d["source"]), int(d["images"]),
                   int(d["pixels"]), int(d["units"]), str(d["date"]),
                   float(d["coverage_1sigma_before"]), float(d["coverage_1sigma_after"]))

    def interval(self, estimate: np.ndarray, calibrated_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) = estimate ∓ λ̂ · calibrated std (same units as both)."""
        if self.interval_factor is None:
            raise ValueError("this calibration has no certified interval")
        half = self.interval_factor * calibrated_std
        return estimate - half, estimate + half


def fit(maps: list[tuple[np.ndarray, np.ndarray]], alpha: float = 0.1, delta: float = 0.1, tile: int = 32,
        *, samples: int, steps: int, source: str) -> Calibration:
    """Fit the std map and the interval on held-out (std, error) 2-D maps in the model's
    normalised target units (error = estimate − target)."""
    if not maps:
        raise ValueError("no held-out images to calibrate on")
    std = np.concatenate([np.ravel(s) for s, _ in maps])
    err = np.concatenate([np.ravel(e) for _, e in maps])
    std_cal = fit_std_calibration(std, err)
    units = [u for s, e in maps for u in tile_units(std_cal.apply(s), e, tile)]
    try:
        factor: float | None = fit_interval(units, alpha, delta)
    except Uncertifiable:
        factor = None
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return Calibration(std_cal, factor, alpha, delta, tile, samples, steps, source, len(maps), int(std.size),
                       len(units), date, float(np.mean(np.abs(err) <= std)),
                       float(np.mean(np.abs(err) <= std_cal.apply(std))))

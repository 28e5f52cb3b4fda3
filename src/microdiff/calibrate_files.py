"""``microdiff calibrate``: fit a model's std calibration and interval on held-out pairs.

The model samples each held-out input as ``predict`` would (same K, steps, tiling), in
its normalised target units; against the targets (normalised as in training) they fit the
estimate's per-image gain and offset (:mod:`microdiff.intensity_calibration`, opt-in, from
32 images up), then the std map (by default the binned curve after a gain, else one factor)
and the conformal interval of :mod:`microdiff.calibration` on the corrected errors, stored in
the model folder's ``bundle.json``. ``predict``, ``evaluate``, napari and the BioImage Model
Zoo export then use them. The held-out pairs must not be training files, and should be like
the images the model will be used on: the interval's promise holds for images exchangeable
with them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .calibration import STD_FORMS, UNITS, Calibration, default_unit, fit, resolve_unit
from .checkpoint import write_calibration
from .data.axes import as_2d, as_chw
from .data.datasets import paired_files
from .data.io import read_image
from .errors import ShapeError, UserError
from .intensity_calibration import MIN_IMAGES, fit_intensity
from .predictor import Predictor, load

Maps = list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (std, estimate, target) 2-D maps
FORMS = ("auto", *STD_FORMS)  # auto: binned after a fitted gain, scale otherwise (see fit_maps)


def held_out_maps(predictor: Predictor, pairs: Iterable[tuple[torch.Tensor, np.ndarray]], samples: int,
                  steps: int, seed: int = 0, progress: bool = False) -> Maps:
    """(std, estimate, target) 2-D maps per image and output channel, in normalised target
    units, for (condition ``x`` ``[C, H, W]``, normalised target ``[C_out, H, W]``) pairs,
    predicted as :meth:`Predictor.predict` predicts (whole images in tiles of 256, the task's
    data-consistency step included), uncalibrated."""
    maps = []
    for x, y in tqdm(list(pairs), desc="calibrating", disable=not progress, dynamic_ncols=True):
        out = predictor.predict_normalized(x, samples, steps, seed)
        if out["mean"].shape != y.shape:
            raise ShapeError(f"the model predicts {out['mean'].shape[-2:]} pixels where the target "
                             f"has {y.shape[-2:]}")
        maps += [(out["std"][c], out["mean"][c], y[c]) for c in range(y.shape[0])]
    return maps


def fit_maps(maps: Maps, intensity: bool = False, min_images: int = MIN_IMAGES, form: str = "auto",
             **fit_options) -> Calibration:
    """:func:`microdiff.calibration.fit` on held-out :func:`held_out_maps`; with
    ``intensity``, first the estimate's per-image gain and offset
    (:func:`~microdiff.intensity_calibration.fit_intensity`, from ``min_images`` maps up), and the
    std map and interval are then fitted to the corrected estimate's errors and std, as
    ``predict`` applies them. ``form="auto"``: the binned std map when the gain was fitted
    (the gain leaves the darkest pixels' error above their std, which one factor cannot
    fix and the bins' curve does), one factor otherwise (steadier on few images without
    it; docs/benchmarks.md, *The estimate's gain per image*)."""
    if not maps:
        raise ValueError("no held-out images to calibrate on")
    ic = fit_intensity([m for _, m, _ in maps], [t for _, _, t in maps], min_images) if intensity else None
    if form == "auto":
        form = "binned" if ic is not None else "scale"
    pairs = []
    for std, mean, target in maps:
        if ic is not None:
            mean, std, _ = ic.apply(mean, std)
        pairs.append((std, mean - target))
    return dataclasses.replace(fit(pairs, form=form, **fit_options), intensity=ic)


def calibrate(predictor: Predictor, pairs: Iterable[tuple[torch.Tensor, np.ndarray]], source: str,
              samples: int | None = None, steps: int | None = None, seed: int = 0, alpha: float = 0.1,
              delta: float = 0.1, tile: int = 32, progress: bool = False, unit: str | None = None,
              form: str = "auto", intensity: bool = False) -> Calibration:
    """Fit a :class:`~microdiff.calibration.Calibration` of ``predictor``'s model on held-out
    ``pairs`` (see :func:`held_out_maps`); K and steps default to the bundle's, ``unit`` to
    :func:`microdiff.calibration.default_unit` of its std; ``unit`` as
    :func:`microdiff.calibration.fit`, ``form`` and ``intensity`` as :func:`fit_maps` (the latter only for a
    task whose targets are normalised per image, :attr:`Task.target_self_normalised`)."""
    if not predictor.model.generative:
        raise UserError("this model is a regression baseline: it has no std to calibrate")
    if not (0 < alpha < 1 and 0 < delta < 1):
        raise UserError(f"alpha and delta must lie in (0, 1), got {alpha} and {delta}")
    if tile < 4:
        raise UserError(f"tile must be at least 4 pixels, got {tile}")
    s = predictor.bundle.sample
    unit = default_unit(s.uncertainty) if unit is None else unit
    if unit not in UNITS:
        raise UserError(f"unit must be one of {', '.join(UNITS)}, got {unit!r}")
    if form not in FORMS:
        raise UserError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    samples = (0 if predictor.one_pass else s.samples) if samples is None else samples  # μ, σ: no samples
    steps = steps or s.steps
    if samples == 0 and not predictor.one_pass:
        raise UserError("samples 0 needs a model whose std is the variance head and whose point estimate "
                        "is the mean network")
    if samples < 2 and s.uncertainty == "samples":
        raise UserError("calibration needs at least 2 samples per image (the std of one sample is zero)")
    maps = held_out_maps(predictor, pairs, samples, steps, seed, progress)
    if not maps:
        raise UserError(f"{source}: no held-out pairs to calibrate on")
    small = [m[0].shape for m in maps if min(m[0].shape) < tile]
    if small and resolve_unit(unit, len(maps), delta) == "tile":
        raise UserError(f"{source}: an image of {small[0][0]}×{small[0][1]} pixels holds no {tile}×{tile} "
                        "calibration tile; use --tile with a smaller value")
    intensity = intensity and predictor.task.target_self_normalised
    return fit_maps(maps, intensity, alpha=alpha, delta=delta, tile=tile, samples=samples, steps=steps,
                    source=source, unit=unit, form=form)


def folder_pairs(predictor: Predictor, data: Path) -> list[tuple[torch.Tensor, np.ndarray]]:
    """(condition, normalised target) for every pair of a paired data folder, checked."""
    pairs = []
    for name, inp, tgt in paired_files(data):
        x_data, axes = as_2d(read_image(inp))
        target, target_axes = as_2d(read_image(tgt))
        if axes not in ("YX", "CYX") or target_axes not in ("YX", "CYX"):
            raise ShapeError(f"{name}: calibrate takes 2-D images (YX) or channel stacks (CYX), "
                             f"got {axes} and {target_axes}")
        x, _ = predictor.condition(x_data, axes)
        target = as_chw(target, target_axes)
        if target.shape[-2:] != tuple(x.shape[-2:]):
            raise ShapeError(f"{name}: target {target.shape[-2:]} does not match the model's output "
                             f"{tuple(x.shape[-2:])} for this input")
        pairs.append((x, predictor.task.normalize_target(target)))
    return pairs


def calibrate_folder(model: Path, data: Path, samples: int | None = None, steps: int | None = None,
                     seed: int = 0, alpha: float = 0.1, delta: float = 0.1, tile: int = 32,
                     progress: bool = True, unit: str | None = None, form: str = "auto",
                     intensity: bool = False) -> Calibration:
    """Calibrate the model folder ``model`` on the paired folder ``data`` and store the result
    in its ``bundle.json``."""
    predictor = load(model)
    cal = calibrate(predictor, folder_pairs(predictor, data), str(data), samples, steps, seed, alpha, delta,
                    tile, progress, unit, form, intensity)
    write_calibration(model, cal)
    return cal

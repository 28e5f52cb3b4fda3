"""``microdiff evaluate``: a model against the targets of a paired data folder.

Per image and method (the model's posterior mean, and classical baselines: bicubic
upsampling by default, Richardson–Lucy deconvolution + bicubic with ``--baseline``):
PSNR, SSIM, MS-SSIM and NRMSE over the target's data range after CARE's affine
intensity matching; FRC resolution of prediction vs target (nm when the target's pixel
size is known, else pixels); for the model also Spearman(std, |error|), coverage of ±1σ
and ±2σ and the AUSE, with the std scaled by the same affine factor as the mean.

Writes ``OUT/metrics.csv`` (one row per image and method, with its structure),
``OUT/summary.md`` (means over all images and per structure), ``OUT/montage.png``
(input | mean | std | |error| | target), ``OUT/calibration.png`` (RMSE against the std in
bins, raw and calibrated), ``OUT/sparsification.png`` (removing the most uncertain pixels
first, by std and by |mean − input|, against the oracle) and ``OUT/schedule.png`` (γ(t)
averaged over structure and background pixels). A regression baseline (``model.kind=regression``) gets
the quality rows only (method ``regression``). The structure of an image is its ``kind`` in the
folder's ``manifest.json`` (written by ``microdiff simulate``), else the file-name prefix
when it names one (``mt_00003.tif``), else ``all``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import metrics
from .baselines import BASELINES, apply_baseline
from .config import SampleConfig
from .data.axes import as_2d
from .data.datasets import paired_files
from .data.io import image_stem, read_image
from .data.normalize import Normalizer
from .errors import ShapeError, UserError
from .evaluation import (
    FIGURE_CROP,
    PHASE_NOTE,
    image_metrics,
    montage_row,
    schedule_profile,
    structure_label,
    write_report,
)
from .predictor import load


def _manifest_kinds(data: Path) -> dict[str, str]:
    path = data / "manifest.json"
    try:
        pairs = json.loads(path.read_text()).get("pairs", []) if path.is_file() else []
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return {}
    return {image_stem(p["name"]): p.get("kind", "all")
            for p in pairs if isinstance(p, dict) and "name" in p}


def evaluate_folder(model: Path, data: Path, out: Path, samples: int | None = None,
                    steps: int | None = None, seed: int = 0, progress: bool = True,
                    figures: bool = True, baselines: tuple[str, ...] = ("bicubic",)) -> list[dict]:
    """Evaluate ``model`` (and the classical ``baselines``) on every pair in ``data``; writes
    the report into ``out``."""
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise UserError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")

    predictor = load(model)
    kinds = _manifest_kinds(data)
    rows, panels, labels, profile = [], [], [], None
    pooled: dict[str, list[np.ndarray]] = {"std": [], "std_raw": [], "error": [], "proxy": []}
    for name, inp, tgt in tqdm(paired_files(data), desc="evaluating", disable=not progress):
        img, target_img = read_image(inp), read_image(tgt)
        x, axes = as_2d(img)
        target, _ = as_2d(target_img)
        if predictor.task.is_phase:
            take = figures and len(panels) < 4
            rows += _phase_rows(predictor, name, x, axes, target, img.pixel_size, samples, steps, seed,
                                panels if take else None)
            labels += [name] if take else []
            continue
        if axes != "YX":
            raise ShapeError(f"{inp}: evaluate handles single-channel images for now")
        if target.shape != tuple(s * predictor.scale for s in x.shape):
            raise ShapeError(f"{name}: target {target.shape} is not input {x.shape} × {predictor.scale}")
        res = predictor.predict(x, samples=samples, steps=steps, seed=seed, pixel_size_um=img.pixel_size)
        target = target.astype(np.float64)
        px = target_img.pixel_size or res.pixel_size_um
        label = structure_label(name, kinds)
        method = "cvdm" if predictor.model.generative else "regression"
        rows.append(_model_row(name, label, method, res, target, px))
        outputs = {b: apply_baseline(b, x, predictor.scale, img.pixel_size) for b in baselines}
        for baseline, img_b in outputs.items():
            rows.append({"image": name, "structure": label, "method": baseline,
                         **image_metrics(img_b, target, px)})
        bic = outputs["bicubic"] if "bicubic" in outputs else apply_baseline("bicubic", x, predictor.scale)
        if method == "cvdm" and figures:
            _pool_for_figures(pooled, res, target, bic)
        if figures and len(panels) < 4:
            interval = (res.lower, res.upper) if res.lower is not None else None
            panels.append(montage_row(bic, res.mean, res.std, target, interval=interval))
            labels.append(name)
        if figures and profile is None and predictor.model.generative:
            cond, _ = predictor.condition(x)
            crop = slice(0, FIGURE_CROP)
            t_norm = Normalizer.percentiles(target).normalize(target)
            profile = schedule_profile(predictor.model, cond[None, :, crop, crop], t_norm[crop, crop])
    write_report(rows, out, f"Evaluation of `{model}` on `{data}`",
                 PHASE_NOTE if predictor.task.is_phase else None)
    if figures:
        _write_figures(out, panels, labels, profile, pooled, predictor.bundle.sample)
    return rows


def _model_row(name: str, label: str, method: str, res, target: np.ndarray, px: float | None) -> dict:
    """The model's metrics row; with a calibrated std also the raw spread's ±1σ coverage."""
    row = {"image": name, "structure": label, "method": method,
           **image_metrics(res.mean, target, px, res.std if method == "cvdm" else None)}
    if res.std_raw is not None:
        row["coverage_1sigma_raw"] = image_metrics(res.mean, target, px, res.std_raw)["coverage_1sigma"]
    return row


def _write_figures(out: Path, panels: list, labels: list[str], profile, pooled: dict[str, list],
                   sample: SampleConfig) -> None:
    """montage.png (columns named after the model's ``sample`` config), schedule.png and the
    uncertainty figures, where there is something to show."""
    from .plots import montage, montage_columns, schedule_curves

    if panels:
        names = montage_columns(sample.point_estimate, sample.uncertainty)
        columns = names + ("outside the interval",) * (len(panels[0]) > len(names))
        montage(out / "montage.png", panels, columns=columns, row_labels=labels)
    if profile is not None:
        schedule_curves(out / "schedule.png", *profile, title=f"γ(t) on {labels[0]}")
    if pooled["std"]:
        _uncertainty_figures(out, {k: np.concatenate(v) for k, v in pooled.items() if v})


def _pool_for_figures(pooled: dict[str, list[np.ndarray]], res, target: np.ndarray, bic: np.ndarray) -> None:
    """One image's pixels for the calibration and sparsification figures: the error after
    CARE's affine matching and the std scaled alike, both over the target's data range (so
    images of different brightness pool), and |mean − bicubic input| as a proxy."""
    a, b = metrics.affine_fit(res.mean, target)
    scale = abs(a) / metrics.data_range(target)
    pooled["error"].append(((a * res.mean + b - target) / metrics.data_range(target)).ravel())
    pooled["std"].append((res.std * scale).ravel())
    if res.std_raw is not None:
        pooled["std_raw"].append((res.std_raw * scale).ravel())
    pooled["proxy"].append(np.abs(metrics.affine_match(res.mean, target) - metrics.affine_match(bic, target)
                                  ).ravel())


def _uncertainty_figures(out: Path, pooled: dict[str, np.ndarray]) -> None:
    """``calibration.png`` (RMSE against the std in bins: raw and calibrated when the model
    is calibrated) and ``sparsification.png`` (by std, by |mean − input|, the oracle)."""
    from .calibration import calibration_bins
    from .plots import calibration_plot, sparsification_plot

    err = pooled["error"]
    bins = {"calibrated std" if "std_raw" in pooled else "std": calibration_bins(pooled["std"], err)[:2]}
    if "std_raw" in pooled:
        bins = {"raw std (samples' spread)": calibration_bins(pooled["std_raw"], err)[:2]} | bins
    calibration_plot(out / "calibration.png", bins, "error against std, all images (units: data range)")
    fractions, by_std, oracle = metrics.sparsification_curves(pooled["std"], err)
    _, by_proxy, _ = metrics.sparsification_curves(pooled["proxy"], err)
    sparsification_plot(out / "sparsification.png", fractions,
                        {"by std": by_std, "by |mean − input|": by_proxy, "oracle": oracle},
                        "removing the most uncertain pixels first")


def _phase_rows(predictor, name: str, x: np.ndarray, axes: str, target: np.ndarray,
                pixel_size_um: float | None, samples: int | None, steps: int | None, seed: int,
                panels: list | None) -> list[dict]:
    """QPI: the model's posterior mean and std in radians, and TIE (two-shot), against the
    phase target (:func:`metrics.phase_metrics`)."""
    task = predictor.task
    if axes != "CYX":
        raise ShapeError(f"{name}: a {task.kind} input is a stack of intensities (CYX), got axes {axes!r}")
    if target.ndim != 2 or target.shape != x.shape[-2:]:
        raise ShapeError(f"{name}: phase target {target.shape} does not match the input {x.shape[-2:]}")
    res = predictor.predict(x, axes=axes, samples=samples, steps=steps, seed=seed,
                            pixel_size_um=pixel_size_um)
    px = pixel_size_um * 1000 if pixel_size_um else 1.0
    unit = {"frc_unit": "nm" if pixel_size_um else "px"}
    method = "cvdm" if predictor.model.generative else "regression"
    rows = [{"image": name, "structure": "all", "method": method, **unit, **metrics.phase_metrics(
        res.mean, target, task.phase_range, res.std if method == "cvdm" else None, px)}]
    cond, _ = predictor.condition(x, axes)
    base = task.baseline(cond.numpy(), pixel_size_um)
    if base is not None:  # TIE on the normalised stack: scale fitted, as for any intensity method
        base = metrics.affine_match(base, target)
        rows.append({"image": name, "structure": "all", "method": task.baseline_name, **unit,
                     **metrics.phase_metrics(base, target, task.phase_range, pixel_size=px)})
    if panels is not None:
        panels.append(montage_row(cond[0].numpy(), res.mean, res.std, target))
    return rows



"""``microdiff evaluate``: a model against the targets of a paired data folder.

Per image and method (the model's posterior mean, and classical baselines: bicubic
upsampling by default, Richardson–Lucy deconvolution + bicubic with ``--baseline``):
PSNR, SSIM, MS-SSIM and NRMSE over the target's data range after CARE's affine
intensity matching; FRC resolution of prediction vs target (nm when the target's pixel
size is known, else pixels); for the model also Spearman(std, |error|), coverage of ±1σ
and ±2σ and the AUSE, with the std scaled by the same affine factor as the mean.

Writes ``OUT/metrics.csv`` (one row per image and method, with its structure),
``OUT/summary.md`` (means over all images and per structure), ``OUT/montage.png``
(input | mean | std | |error| | target) and ``OUT/schedule.png`` (γ(t) averaged over
structure and background pixels). A regression baseline (``model.kind=regression``) gets
the quality rows only (method ``regression``). The structure of an image is its ``kind`` in the
folder's ``manifest.json`` (written by ``microdiff simulate``), else the file-name prefix
when it names one (``mt_00003.tif``), else ``all``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics
from .baselines import BASELINES, apply_baseline
from .data.datasets import paired_files
from .data.io import atomic_write_bytes, read_image
from .data.normalize import PercentileNormalizer
from .data.synthetic import STRUCTURES
from .diffusion import CVDM
from .errors import ShapeError, UserError
from .predict_files import as_2d
from .predictor import load

COLUMNS = ["image", "structure", "method", "psnr", "ssim", "ms_ssim", "nrmse", "rmse_rad", "frc_resolution",
           "frc_unit", "spearman_std_error", "coverage_1sigma", "coverage_2sigma", "ause"]
STRUCTURE_QUANTILE, BACKGROUND_QUANTILE = 0.9, 0.5  # pixel classes of the schedule figure
FIGURE_CROP = 256  # output pixels shown per montage row / used for the schedule figure


def image_metrics(pred: np.ndarray, target: np.ndarray, pixel_size_um: float | None,
                  std: np.ndarray | None = None) -> dict:
    """All metrics of one 2-D prediction (and optional std) against its target."""
    row = {"psnr": metrics.psnr(pred, target), "ssim": metrics.ssim(pred, target),
           "ms_ssim": metrics.ms_ssim(pred, target), "nrmse": metrics.nrmse(pred, target)}
    matched = metrics.affine_match(pred, target)
    px = pixel_size_um * 1000 if pixel_size_um else 1.0
    row |= {"frc_resolution": metrics.frc_resolution(matched, target, px),
            "frc_unit": "nm" if pixel_size_um else "px"}
    if std is not None:
        error = matched - target
        s = std * abs(metrics.affine_fit(pred, target)[0])
        row |= {"spearman_std_error": metrics.spearman_std_error(s, error),
                "coverage_1sigma": metrics.coverage(s, error, 1),
                "coverage_2sigma": metrics.coverage(s, error, 2), "ause": metrics.ause(s, error)}
    return row


def montage_row(x: np.ndarray, mean: np.ndarray, std: np.ndarray, target: np.ndarray,
                crop: int = FIGURE_CROP) -> tuple[np.ndarray, ...]:
    """input | matched mean | scaled std | |error| | target, centre-cropped to ``crop``."""
    a, b = metrics.affine_fit(mean, target)
    matched = a * mean.astype(np.float64) + b
    panels = (metrics.affine_match(x, target), matched, std * abs(a), np.abs(matched - target), target)
    H, W = target.shape
    r, c = max(0, (H - crop) // 2), max(0, (W - crop) // 2)
    return tuple(p[r: r + crop, c: c + crop] for p in panels)


@torch.no_grad()
def schedule_profile(model: CVDM, x: torch.Tensor, target: np.ndarray, n_t: int = 64
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """t ``[n_t]`` and γ(t) averaged over structure pixels (target above its 90th
    percentile) and background pixels (below its median); x ``[1, C, H, W]`` normalised,
    target ``[H, W]``."""
    sched = model.schedule
    lam = sched.lam(x)
    t = torch.linspace(1.0 / model.timesteps, 1.0 - 1.0 / model.timesteps, n_t)
    hi, lo = np.quantile(target, [STRUCTURE_QUANTILE, BACKGROUND_QUANTILE])
    masks = {"structure": torch.from_numpy(target >= hi), "background": torch.from_numpy(target <= lo)}
    curves = {k: [] for k in masks}
    for ti in t:
        g = sched.gamma_at(ti.view(1), lam).expand(1, sched.out_channels, *x.shape[-2:])[0, 0]
        for k, m in masks.items():
            curves[k].append(float(g[m].mean()))
    return t.numpy(), {k: np.array(v) for k, v in curves.items()}


def structure_label(name: str, kinds: dict[str, str]) -> str:
    if name in kinds:
        return kinds[name]
    prefix = name.split("_")[0]
    return prefix if prefix in STRUCTURES else "all"


def _manifest_kinds(data: Path) -> dict[str, str]:
    path = data / "manifest.json"
    try:
        pairs = json.loads(path.read_text()).get("pairs", []) if path.is_file() else []
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return {}
    return {p["name"].split(".")[0]: p.get("kind", "all")
            for p in pairs if isinstance(p, dict) and "name" in p}


def evaluate_folder(model: Path, data: Path, out: Path, samples: int | None = None,
                    steps: int | None = None, seed: int = 0, progress: bool = True,
                    figures: bool = True, baselines: tuple[str, ...] = ("bicubic",)) -> list[dict]:
    """Evaluate ``model`` (and the classical ``baselines``) on every pair in ``data``; writes
    the report into ``out``."""
    from .plots import montage, schedule_curves

    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise UserError(f"unknown baseline {unknown[0]!r}; choose from {', '.join(BASELINES)}")

    predictor = load(model)
    kinds = _manifest_kinds(data)
    rows, panels, labels, profile = [], [], [], None
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
        method = "cvdm" if predictor.model.has_uncertainty else "regression"
        rows.append({"image": name, "structure": label, "method": method,
                     **image_metrics(res.mean, target, px, res.std if method == "cvdm" else None)})
        outputs = {b: apply_baseline(b, x, predictor.scale, img.pixel_size) for b in baselines}
        for baseline, img_b in outputs.items():
            rows.append({"image": name, "structure": label, "method": baseline,
                         **image_metrics(img_b, target, px)})
        bic = outputs["bicubic"] if "bicubic" in outputs else apply_baseline("bicubic", x, predictor.scale)
        if figures and len(panels) < 4:
            panels.append(montage_row(bic, res.mean, res.std, target))
            labels.append(name)
        if figures and profile is None and predictor.model.has_uncertainty:
            cond, _ = predictor.condition(x)
            crop = slice(0, FIGURE_CROP)
            t_norm = PercentileNormalizer().fit(target).normalize(target)
            profile = schedule_profile(predictor.model, cond[None, :, crop, crop], t_norm[crop, crop])
    write_report(rows, out, f"Evaluation of `{model}` on `{data}`",
                 PHASE_NOTE if predictor.task.is_phase else None)
    if figures and panels:
        montage(out / "montage.png", panels, row_labels=labels)
    if figures and profile is not None:
        schedule_curves(out / "schedule.png", *profile, title=f"γ(t) on {labels[0]}")
    return rows


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
    method = "cvdm" if predictor.model.has_uncertainty else "regression"
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


def _table(rows: list[dict], keys: list[str], groups: list[tuple[str, str, list[dict]]]) -> list[str]:
    lines = ["| structure | method | n | " + " | ".join(keys) + " |", "|---" * (len(keys) + 3) + "|"]
    for structure, method, sel in groups:
        cells = []
        for k in keys:
            vals = [r[k] for r in sel if r.get(k, "") != ""]
            cells.append(f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if vals else "–")
        lines.append(f"| {structure} | {method} | {len(sel)} | " + " | ".join(cells) + " |")
    return lines


PHASE_NOTE = ("{n} images; phase metrics in radians after removing the difference of mean phases "
              "(intensities do not determine it): RMSE, PSNR and SSIM over the phase range; no intensity "
              "scale is fitted to the model. TIE works on the min-max normalised stack, which has lost "
              "the intensity scale, so its output is scaled to the target by least squares (an "
              "advantage for TIE); mean ± std over images.")


def write_report(rows: list[dict], out: Path, title: str, note: str | None = None) -> None:
    """``out/metrics.csv`` (every row) and ``out/summary.md`` (means, overall and per
    structure); ``note`` replaces the paragraph on how the metrics were computed."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, restval="")
    writer.writeheader()
    writer.writerows(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "metrics.csv", buf.getvalue().encode(), overwrite=True)
    keys = [c for c in COLUMNS if c not in ("image", "structure", "method", "frc_unit")]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    structures = sorted({r["structure"] for r in rows})
    groups = [("all", m, [r for r in rows if r["method"] == m]) for m in methods]
    if len(structures) > 1:
        groups += [(s, m, [r for r in rows if r["method"] == m and r["structure"] == s])
                   for s in structures for m in methods]
    unit = rows[0]["frc_unit"] if rows else "px"
    n = len({r["image"] for r in rows})
    note = (note or "{n} images; PSNR, SSIM, MS-SSIM and NRMSE after CARE's affine intensity matching "
            "(least-squares a·pred + b against the target), data range of each target; mean ± std "
            "over images.").format(n=n)
    lines = [f"# {title}", "", note, "",
             *_table(rows, keys, groups), "",
             f"FRC resolution in {unit} (threshold 1/7, prediction vs target; lower is better). "
             "Uncertainty: Spearman correlation of the posterior std with |error|, the fraction of "
             "pixels whose error lies within ±1σ / ±2σ (a calibrated Gaussian gives 0.683 / 0.954), "
             "and the area under the sparsification error curve (AUSE; 0 is ideal)."]
    atomic_write_bytes(out / "summary.md", ("\n".join(lines) + "\n").encode(), overwrite=True)

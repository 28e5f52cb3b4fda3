"""Evaluation helpers shared by ``microdiff evaluate``, the demo and training-time
validation: the metrics of one prediction against its target, montage rows, the learned
schedule's profile over structure and background, the ``metrics.csv`` / ``summary.md``
report, and :func:`validate` (posterior-mean PSNR/SSIM on held-out pairs during training).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import torch

from . import metrics
from .config import Config
from .data.io import atomic_write_bytes
from .data.sources import task_of
from .diffusion import CVDM
from .models import ImageModel
from .options import STRUCTURES

COLUMNS = ["image", "structure", "method", "psnr", "ssim", "ms_ssim", "nrmse", "rmse_rad", "frc_resolution",
           "spectral_resolution", "frc_unit", "spearman_std_error", "coverage_1sigma", "coverage_2sigma",
           "coverage_1sigma_raw", "ause"]
STRUCTURE_QUANTILE, BACKGROUND_QUANTILE = 0.9, 0.5  # pixel classes of the schedule figure
FIGURE_CROP = 256  # output pixels shown per montage row / used for the schedule figure


def image_metrics(pred: np.ndarray, target: np.ndarray, pixel_size_um: float | None,
                  std: np.ndarray | None = None) -> dict:
    """All metrics of one 2-D prediction (and optional std) against its target. FRC
    resolution measures how fine the detail that matches the target is; spectral resolution
    (prediction and target in the same units) how fine the detail the prediction shows is."""
    row = {"psnr": metrics.psnr(pred, target), "ssim": metrics.ssim(pred, target),
           "ms_ssim": metrics.ms_ssim(pred, target), "nrmse": metrics.nrmse(pred, target)}
    matched = metrics.affine_match(pred, target)
    px = pixel_size_um * 1000 if pixel_size_um else 1.0
    row |= {"frc_resolution": metrics.frc_resolution(matched, target, px),
            "spectral_resolution": metrics.spectral_resolution(pred, target, px),
            "frc_unit": "nm" if pixel_size_um else "px"}
    if std is not None:
        error = matched - target
        s = std * abs(metrics.affine_fit(pred, target)[0])
        row |= {"spearman_std_error": metrics.spearman_std_error(s, error),
                "coverage_1sigma": metrics.coverage(s, error, 1),
                "coverage_2sigma": metrics.coverage(s, error, 2), "ause": metrics.ause(s, error)}
    return row


def montage_row(x: np.ndarray, mean: np.ndarray, std: np.ndarray, target: np.ndarray,
                crop: int = FIGURE_CROP, interval: tuple[np.ndarray, np.ndarray] | None = None
                ) -> tuple[np.ndarray, ...]:
    """input | matched mean | scaled std | |error| | target, centre-cropped to ``crop``; with
    ``interval`` (lower, upper in the mean's units) a sixth panel, 1 where the target falls
    outside the interval (matched like the mean)."""
    a, b = metrics.affine_fit(mean, target)
    matched = a * mean.astype(np.float64) + b
    panels = (metrics.affine_match(x, target), matched, std * abs(a), np.abs(matched - target), target)
    if interval is not None:
        ends = [a * v.astype(np.float64) + b for v in interval]
        lo, hi = np.minimum(*ends), np.maximum(*ends)
        panels += (((target < lo) | (target > hi)).astype(np.float64),)
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


PHASE_NOTE = ("{n} images; phase metrics in radians after removing the difference of mean phases "
              "(intensities do not determine it): RMSE, PSNR and SSIM over the phase range; no intensity "
              "scale is fitted to the model. TIE works on the min-max normalised stack, which has lost "
              "the intensity scale, so its output is scaled to the target by least squares (an "
              "advantage for TIE); mean ± std over images.")


def _table(rows: list[dict], keys: list[str], groups: list[tuple[str, str, list[dict]]]) -> list[str]:
    lines = ["| structure | method | n | " + " | ".join(keys) + " |", "|---" * (len(keys) + 3) + "|"]
    for structure, method, sel in groups:
        cells = []
        for k in keys:
            vals = [r[k] for r in sel if r.get(k, "") != ""]
            cells.append(f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if vals else "–")
        lines.append(f"| {structure} | {method} | {len(sel)} | " + " | ".join(cells) + " |")
    return lines


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
             f"FRC resolution in {unit} (threshold 1/7, prediction vs target; lower is better): how "
             "fine the detail that matches the target is. Spectral resolution in the same unit: where "
             "the prediction's ring power falls below half the target's, how fine the detail it shows "
             "is, right or wrong (a blurred estimate is coarse, a posterior sample near Nyquist). "
             "Uncertainty: Spearman correlation of the posterior std with |error|, the fraction of "
             "pixels whose error lies within ±1σ / ±2σ (a calibrated Gaussian gives 0.683 / 0.954; "
             "with a calibrated model the std is the calibrated one, and coverage_1sigma_raw is ±1σ of "
             "the samples' raw spread), and the area under the sparsification error curve (AUSE; 0 is "
             "ideal)."]
    atomic_write_bytes(out / "summary.md", ("\n".join(lines) + "\n").encode(), overwrite=True)


@torch.no_grad()
def validate(model: ImageModel, x: torch.Tensor, y: torch.Tensor, cfg: Config, steps: int, samples: int,
             seed: int, montage_path: Path | None = None, montage_rows: int = 4) -> dict[str, float]:
    """Posterior-mean PSNR/SSIM (after affine matching) of ``model`` and of the task's
    classical baseline (``*_baseline``: the bicubic input for sr, TIE for qpi-2shot, NaN where
    there is none) on ``x, y`` ``[N, C, H, W]``; optionally a montage of the first
    ``montage_rows``."""
    from .plots import montage

    device = next(model.parameters()).device
    s = cfg.sample
    gen = torch.Generator(device=device).manual_seed(seed)
    out = model.sample(x.to(device), steps=steps, samples=samples, generator=gen, **s.options())
    task = task_of(cfg.data)
    point, refined_std, _ = task.refine(x, out.mean.float().cpu(), out.samples.float().cpu())
    std = out.std if refined_std is None else refined_std
    mean, std = point.float().cpu().numpy(), std.float().cpu().numpy()
    xs, ys = x.numpy(), y.numpy()
    res = {"val_psnr": [], "val_ssim": [], "val_psnr_baseline": [], "val_ssim_baseline": []}
    for i in range(len(ys)):
        res["val_psnr"].append(metrics.psnr(mean[i, 0], ys[i, 0]))
        res["val_ssim"].append(metrics.ssim(mean[i, 0], ys[i, 0]))
        base = task.baseline(xs[i])
        res["val_psnr_baseline"].append(metrics.psnr(base, ys[i, 0]) if base is not None else math.nan)
        res["val_ssim_baseline"].append(metrics.ssim(base, ys[i, 0]) if base is not None else math.nan)
    if montage_path is not None:
        rows = [(xs[i, 0], mean[i, 0], std[i, 0], np.abs(mean[i, 0] - ys[i, 0]), ys[i, 0])
                for i in range(min(montage_rows, len(ys)))]
        montage(montage_path, rows)
    return {k: float(np.mean(v)) for k, v in res.items()}

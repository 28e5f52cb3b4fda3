"""``microdiff evaluate``: a model against the targets of a paired data folder.

Per image and method (the model's posterior mean, and the bicubic-upsampled input as the
baseline): PSNR, SSIM, MS-SSIM and NRMSE over the target's data range after CARE's affine
intensity matching; FRC resolution of prediction vs target (nm when the target's pixel
size is known, else pixels); for the model also Spearman(std, |error|), coverage of ±1σ
and ±2σ and the AUSE, with the std scaled by the same affine factor as the mean.
Writes ``OUT/metrics.csv`` and ``OUT/summary.md``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics
from .data.datasets import paired_files
from .data.io import atomic_write_bytes, read_image
from .data.synthetic import upsample
from .errors import ShapeError
from .predict_files import as_2d
from .predictor import load

COLUMNS = ["image", "method", "psnr", "ssim", "ms_ssim", "nrmse", "frc_resolution",
           "frc_unit", "spearman_std_error", "coverage_1sigma", "coverage_2sigma", "ause"]


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


def evaluate_folder(model: Path, data: Path, out: Path, samples: int | None = None,
                    steps: int | None = None, seed: int = 0, progress: bool = True) -> list[dict]:
    """Evaluate ``model`` on every pair in ``data``; writes metrics.csv and summary.md."""
    predictor = load(model)
    rows = []
    for name, inp, tgt in tqdm(paired_files(data), desc="evaluating", disable=not progress):
        img, target_img = read_image(inp), read_image(tgt)
        x, axes = as_2d(img)
        target, _ = as_2d(target_img)
        if axes != "YX":
            raise ShapeError(f"{inp}: evaluate handles single-channel images for now")
        if target.shape != tuple(s * predictor.scale for s in x.shape):
            raise ShapeError(f"{name}: target {target.shape} is not input {x.shape} × {predictor.scale}")
        res = predictor.predict(x, samples=samples, steps=steps, seed=seed, pixel_size_um=img.pixel_size)
        target = target.astype(np.float64)
        px = target_img.pixel_size or res.pixel_size_um
        rows.append({"image": name, "method": "cvdm", **image_metrics(res.mean, target, px, res.std)})
        bic = upsample(torch.from_numpy(x.astype(np.float32))[None, None], predictor.scale)[0, 0].numpy()
        rows.append({"image": name, "method": "bicubic", **image_metrics(bic, target, px)})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, restval="")
    writer.writeheader()
    writer.writerows(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "metrics.csv", buf.getvalue().encode(), overwrite=True)
    atomic_write_bytes(out / "summary.md", _summary(rows, model, data).encode(), overwrite=True)
    return rows


def _summary(rows: list[dict], model: Path, data: Path) -> str:
    keys = [c for c in COLUMNS if c not in ("image", "method", "frc_unit")]
    lines = [f"# Evaluation of `{model}` on `{data}`", "",
             f"{len({r['image'] for r in rows})} images; metrics after CARE's affine intensity "
             "matching, data range of each target; mean ± std over images.", "",
             "| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for method in ("cvdm", "bicubic"):
        sel = [r for r in rows if r["method"] == method]
        cells = []
        for k in keys:
            vals = [r[k] for r in sel if k in r]
            cells.append(f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if vals else "–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    unit = rows[0]["frc_unit"] if rows else "px"
    lines += ["", f"FRC resolution in {unit} (threshold 1/7, prediction vs target)."]
    return "\n".join(lines) + "\n"

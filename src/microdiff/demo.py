"""``microdiff demo``: simulate, train the ``demo`` preset, evaluate on held-out images.

The run folder is a normal training run (``config.yaml``, ``stats.jsonl``,
``checkpoints/``, ``montages/``, ``model/``) plus the evaluation on held-out simulated
images, one group per structure (microtubules, F-actin, clathrin-coated pits, ER), drawn
from a random stream that neither training nor validation uses:

``metrics.csv`` and ``summary.md`` (the metrics of ``microdiff evaluate``, for the
posterior mean and the bicubic input), ``montage.png`` (input | mean | std | |error| |
target), ``schedule.png`` (the learned γ(t) over structure and background pixels),
``examples.tif`` (the same panels for every held-out image, ImageJ stack) and
``results.json`` (the headline figures).
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from .calibration import Calibration
from .checkpoint import read_bundle
from .config import Config, load_config
from .data.datasets import Pair, simulated
from .data.io import atomic_write_bytes
from .data.sources import TEST_STREAM, task_of
from .data.synthetic import STRUCTURES, SimulatorConfig
from .errors import UserError
from .evaluation import image_metrics, montage_row, schedule_profile, write_report
from .models import ImageModel
from .options import SINGLE_STRUCTURES
from .runs import train_run

RUN_ENTRIES = ("config.yaml", "stats.jsonl", "checkpoints", "montages", "model", "results.json",
               "metrics.csv", "summary.md", "montage.png", "schedule.png", "examples.tif")


def held_out_pairs(cfg: Config, data_val: list[Pair]) -> list[Pair]:
    """Evaluation pairs: per structure (simulator) or the run's held-out images (others)."""
    d = cfg.data
    if d.path is not None or d.generator != "simulator":
        return data_val
    kinds = list(SINGLE_STRUCTURES) if d.structure in ("mixed", "any") else [d.structure]
    per = max(1, d.n_val // len(kinds))
    sim = SimulatorConfig(scale=d.scale)
    return [p for k in kinds for p in simulated(k, per, d.image_size, cfg.train.seed, d.level, sim,
                                                stream=TEST_STREAM)]


def _clear_earlier_demo(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if not (out / "results.json").exists():
            raise UserError(f"{out} exists and does not hold an earlier demo run; choose another --out")
        for name in RUN_ENTRIES:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def run_demo(out: Path, cfg: Config | None = None, progress: bool = True) -> dict[str, float]:
    """Run the demo into ``out`` and return its figures (also written to ``results.json``)."""
    cfg = cfg or load_config("demo")
    out = Path(out)
    _clear_earlier_demo(out)
    t0 = time.perf_counter()
    run = train_run(cfg, out, progress=progress)
    t_train = time.perf_counter() - t0
    model = run.trainer.ema
    pairs = held_out_pairs(cfg, run.data.val)
    s = cfg.sample
    if progress:
        drawn = ("one pass: μ(x) and the variance head's σ(x)" if s.samples == 0
                 else f"{s.samples} samples x {s.steps} steps (η = {s.eta:g})")
        print(f"evaluating on {len(pairs)} held-out images: {drawn}")
    # the std calibration fitted at the end of training on the validation images; applied only
    # where the held-out images are other images (the simulator's test stream)
    cal = read_bundle(out / "model").calibration if pairs is not run.data.val else None
    rows, panels, labels, stack = _evaluate(model, cfg, pairs, cal)
    what = f"`{cfg.model.schedule.kind}` schedule" if model.generative else "regression baseline"
    write_report(rows, out, f"microdiff demo: {what}, {cfg.train.steps} steps")
    from .plots import montage, montage_columns, schedule_curves

    montage(out / "montage.png", panels, columns=montage_columns(s.point_estimate, s.uncertainty),
            row_labels=labels)
    if model.generative:
        profile = schedule_profile(model, pairs[0].x[None], pairs[0].y[0].numpy())
        schedule_curves(out / "schedule.png", *profile,
                        title=f"{cfg.model.schedule.kind} schedule on {pairs[0].name}")
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.stack(stack), imagej=True, metadata={"axes": "TCYX"})
    atomic_write_bytes(out / "examples.tif", buf.getvalue(), overwrite=True)

    method = "cvdm" if model.generative else "regression"

    def avg(which: str, key: str) -> float:
        vals = [r[key] for r in rows if r["method"] == which and key in r]
        return float(np.mean(vals)) if vals else float("nan")

    base = task_of(cfg.data).baseline_name
    summary = {"psnr_mean": avg(method, "psnr"), "ssim_mean": avg(method, "ssim"),
               **({f"psnr_{base}": avg(base, "psnr"), f"ssim_{base}": avg(base, "ssim")} if base else {}),
               "spearman_std_error": avg(method, "spearman_std_error"),
               "coverage_1sigma": avg(method, "coverage_1sigma"),
               "coverage_2sigma": avg(method, "coverage_2sigma"), "held_out_images": len(pairs),
               "std_calibrated": cal is not None,
               "coverage_1sigma_raw": avg(method, "coverage_1sigma_raw"),
               "train_seconds": t_train, "total_seconds": time.perf_counter() - t0,
               "final_loss": _last_loss(out), "parameters": sum(p.numel() for p in model.parameters())}
    atomic_write_bytes(out / "results.json", json.dumps(summary, indent=2).encode(), overwrite=True)
    label = ("regression U-Net" if not model.generative else
             "CVDM mean network μ(x)" if cfg.sample.point_estimate == "mean-net" else "CVDM posterior mean")
    _print_summary(summary, out, label, base, model.generative)
    return summary


def _evaluate(model: ImageModel, cfg: Config, pairs: list[Pair], cal: Calibration | None = None
              ) -> tuple[list, list, list, list]:
    """Metric rows (model and the task's classical baseline), up to four montage rows (one per
    structure) with their labels, and every image's panels for ``examples.tif``; the std is
    calibrated by ``cal`` when given (``coverage_1sigma_raw``: before)."""
    s, task = cfg.sample, task_of(cfg.data)
    simulated_data = cfg.data.generator == "simulator" and not cfg.data.path
    px = SimulatorConfig().target_pixel_um if simulated_data else None
    method = "cvdm" if model.generative else "regression"
    rows, panels, labels, stack = [], [], [], []
    gen = torch.Generator().manual_seed(cfg.train.seed)
    for p in pairs:
        with torch.no_grad():
            res = model.sample(p.x[None], steps=s.steps, samples=s.samples, generator=gen, **s.options())
        x, y = p.x[0].numpy().astype(np.float64), p.y[0].numpy().astype(np.float64)
        mean, std = res.mean[0, 0].numpy().astype(np.float64), res.std[0, 0].numpy().astype(np.float64)
        structure = p.name.split("_")[0] if p.name.split("_")[0] in STRUCTURES else "all"
        raw = {}
        if cal is not None and model.generative:
            raw = {"coverage_1sigma_raw": image_metrics(mean, y, px, std)["coverage_1sigma"]}
            if cal.intensity is not None:  # as predict applies it: gain and offset, then the std map
                mean, std, _ = cal.intensity.apply(mean, std)
            std = cal.std.apply(std)
        rows.append({"image": p.name, "structure": structure, "method": method,
                     **image_metrics(mean, y, px, std if model.generative else None), **raw})
        baseline = task.baseline(p.x.numpy())
        if baseline is not None:
            rows.append({"image": p.name, "structure": structure, "method": task.baseline_name,
                         **image_metrics(baseline, y, px)})
        panel = montage_row(x, mean, std, y)
        stack.append(np.stack(panel).astype(np.float32))
        if len(panels) < 4 and (structure == "all" or structure not in labels):
            panels.append(panel)
            labels.append(structure if structure != "all" else p.name)
    return rows, panels, labels, stack


def _last_loss(out: Path) -> float:
    lines = [json.loads(ln) for ln in (out / "stats.jsonl").read_text().splitlines() if ln.strip()]
    losses = [r["loss"] for r in lines if r.get("kind") == "train"]
    return float(losses[-1]) if losses else float("nan")


def _print_summary(summary: dict, out: Path, label: str, baseline: str | None, uncertainty: bool) -> None:
    n = summary["held_out_images"]
    print()
    print(f"{'held-out images (n=' + str(n) + ')':<28}{'PSNR [dB]':>10}{'SSIM':>8}")
    if baseline:
        name = {"bicubic": "bicubic-upsampled input", "tie": "TIE (transport of intensity)"}[baseline]
        print(f"{name:<28}{summary[f'psnr_{baseline}']:>10.2f}{summary[f'ssim_{baseline}']:>8.3f}")
    print(f"{label:<28}{summary['psnr_mean']:>10.2f}{summary['ssim_mean']:>8.3f}")
    if uncertainty:
        print(f"uncertainty: Spearman(std, |error|) {summary['spearman_std_error']:.2f}; "
              f"±1σ covers {summary['coverage_1sigma']:.2f} of pixels, ±2σ {summary['coverage_2sigma']:.2f}"
              + (f" (std calibrated on the validation images; raw ±1σ {summary['coverage_1sigma_raw']:.2f})"
                 if summary.get("std_calibrated") else ""))
    print(f"(affine intensity matching as in CARE; took {summary['total_seconds']:.0f} s)")
    print(f"outputs in {out}: summary.md and metrics.csv (per structure), montage.png, "
          f"{'schedule.png, ' if uncertainty else ''}model/ (use with microdiff predict)")

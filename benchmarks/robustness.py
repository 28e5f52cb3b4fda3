"""Unproductive runs: seeds × learning rates for the learned and the fixed schedules.

The paper's claim: a learned schedule spares the trial-and-error of schedule tuning and the
runs it wastes. Every run is the ``demo`` preset with only the schedule kind (or a
learned-schedule option), ``train.lr`` and ``train.seed`` changed, trained ``--steps`` steps
and evaluated on the simulated test set of quality.py (8 held-out images, one per structure at
signal levels 1 and 9; posterior mean of 2 samples × 20 steps). A run is *unproductive* when it
diverges (the trainer stops after 10 non-finite steps in a row), finishes no better than the
bicubic-upsampled input, or finishes more than 1 dB below the best run of the whole grid on
PSNR (the posterior mean on the test set). Reported per
method: the fraction of unproductive runs and the share of training compute spent on them.
Runs are cached under runs/benchmarks/; a run at the preset's learning rate is the same
training as quality.py's and reuses it when that one exists. Writes the ``robustness`` section of
docs/benchmarks.md. Usage::

    .venv/bin/python benchmarks/robustness.py           # ~50 min on a 2-core CPU (less after quality.py)
    .venv/bin/python benchmarks/robustness.py --quick   # ~8 min: a check, not a conclusion
    .venv/bin/python benchmarks/robustness.py --long --jobs 2  # issue 17's design, 2000 steps (~10 CPU-hours)
    .venv/bin/python benchmarks/robustness.py --full    # GPU-sized

The *long* sizing grids the default preset's design (``zmd-scaled-var-any``: μ(x) is the point
estimate, the diffusion model samples the residual) against the same design with DDPM's fixed
schedule. There the schedule cannot touch the point estimate (μ(x) is trained by its own MSE),
so the table also scores what the schedule does shape: one posterior sample (PSNR) and the raw
±1σ coverage of the model's std; a run's *samples* are unproductive when its single-sample PSNR
is more than 1 dB below the grid's best. The regression U-Net on the same images
(``regression-any``) is a reference row: μ(x) is such a network, so its row shows how much of
the grid is the learning rate's effect on any regression network.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from microdiff.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
from _report import machine, today, write_section  # noqa: E402

SIZES = {
    "quick": {"steps": 50, "seeds": [0], "lrs": [1e-4, 3e-4, 1e-3]},
    # at 150 steps every run of every method was still below bicubic (19.0-19.7 dB vs 23.1):
    # 250 steps is where the demo learning rate's runs pass it (quality.py)
    "default": {"steps": 250, "seeds": [0, 1], "lrs": [1e-4, 3e-4, 1e-3]},
    # issue 17: the new design at a budget where regression has plateaued (learning_curves.py)
    "long": {"steps": 2000, "seeds": [0, 1], "lrs": [1e-4, 3e-4, 1e-3], "per_cell": 2},
    "full": {"steps": 3000, "seeds": [0, 1, 2, 3, 4], "lrs": [1e-4, 3e-4, 1e-3, 3e-3]},
}
DEFAULT_METHODS = ["learned", "learned-exact", "fixed-linear", "fixed-cosine"]
#: the long grid: the default design, its fixed-schedule twin and, as a reference, the
#: regression U-Net of the same data (μ(x)'s own sensitivity to the learning rate)
LONG_METHODS = ["zmd-scaled-var-any", "zmd-scaled-var-any/fixed-linear", "regression-any"]
GAP_DB = 1.0  # unproductive: more than this below the best run of the grid (PSNR)


def run_paths(method: str, seed: int, lr: float, steps: int) -> tuple[Config, Path, Path]:
    """(config, the folder of the run's robustness.json, the folder it trains in): a run at the
    preset's learning rate trains where quality.py's run of the same config does."""
    out = P.run_dir(f"robustness-{steps}", method, seed, lr)
    cfg = P.method_config(method, steps, seed, lr)
    train_dir = out
    if cfg == P.method_config(method, steps, seed):
        train_dir = P.run_dir(P.run_tag(steps), method, seed)
    return cfg, out, train_dir


def finished(method: str, seed: int, lr: float, steps: int) -> bool:
    """Whether the run is evaluated, or trained and only waiting for its evaluation."""
    _, out, train_dir = run_paths(method, seed, lr, steps)
    marker = train_dir / "train.json"
    return (out / "robustness.json").exists() or (
        marker.exists() and json.loads(marker.read_text())["steps"] >= steps)


def one_run(method: str, seed: int, lr: float, steps: int, images: list[P.TestImage]) -> dict:
    cfg, out, train_dir = run_paths(method, seed, lr, steps)
    cache = out / "robustness.json"
    if cache.exists():
        return json.loads(cache.read_text())
    info = P.train_cached(cfg, train_dir)
    info["seconds"] = P.training_seconds(train_dir)  # every session's share, not the last call's
    result = {"method": method, "seed": seed, "lr": lr, "train": info, "psnr": float("nan"),
              "ssim": float("nan")}
    if not info["diverged"]:
        model = P.model_at(train_dir, cfg, steps)
        rows = P.evaluate_model(model, cfg, images, samples=2, steps=cfg.sample.steps, seed=seed)
        result["images"] = len(rows)
        for key in ("psnr", "ssim", "sample1_psnr", "coverage_1sigma"):
            value = float(np.mean([r.get(key, np.nan) for r in rows]))
            result[key] = value if np.isfinite(value) else float("nan")
    P._write_json(cache, result)
    return result


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--long", action="store_true")
    size.add_argument("--full", action="store_true")
    ap.add_argument("--methods", nargs="+", default=None,
                    choices=list(P.METHODS),
                    help=f"default: {' '.join(DEFAULT_METHODS)} ({' '.join(LONG_METHODS)} with --long)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="train this many runs at once, each in its own process with an equal share "
                         "of the CPU threads (2 on a 2-core CPU; more on a GPU, which they share)")
    ap.add_argument("--report-only", action="store_true",
                    help="write the report from the runs already trained (evaluating those not yet "
                         "evaluated); train nothing")
    args = ap.parse_args()
    args.sizing = next((k for k in ("quick", "long", "full") if getattr(args, k)), "default")
    args.default_methods = LONG_METHODS if args.sizing == "long" else DEFAULT_METHODS
    args.methods = args.methods or args.default_methods
    return args


def run_grid(args: argparse.Namespace, images: list[P.TestImage]) -> list[dict]:
    """Every (seed, lr, method) run of the sizing, seed-major so that a partial grid still
    compares every method; with --report-only only those already trained."""
    z = SIZES[args.sizing]
    if args.jobs > 1 and not args.report_only:
        P.train_many([run_paths(m, seed, lr, z["steps"])[::2] for seed in z["seeds"] for lr in z["lrs"]
                      for m in args.methods if not finished(m, seed, lr, z["steps"])], args.jobs)
    runs = []
    for seed in z["seeds"]:
        for lr in z["lrs"]:
            for method in args.methods:
                if args.report_only and not finished(method, seed, lr, z["steps"]):
                    continue
                print(f"{method} lr {lr:g} seed {seed}", flush=True)
                runs.append(one_run(method, seed, lr, z["steps"], images))
                print(f"  PSNR {runs[-1]['psnr']:.2f}, diverged {runs[-1]['train']['diverged']}", flush=True)
    return runs


def is_generative(method: str) -> bool:
    return P.METHODS[method][0] != "demo-regression"


def mark_unproductive(runs: list[dict], bicubic: float) -> tuple[float, float]:
    """Flag each run's point estimate (``unproductive``) and its samples (``bad_samples``);
    returns the grid's best point-estimate and single-sample PSNR. A regression method is a
    reference: flagged against the diffusion runs' best, never setting it."""
    def best_of(key: str) -> float:
        return max((r.get(key, np.nan) for r in runs if is_generative(r["method"])
                    and np.isfinite(r.get(key, np.nan))), default=np.nan)

    best, best_sample = best_of("psnr"), best_of("sample1_psnr")
    for r in runs:
        r["unproductive"] = r["train"]["diverged"] or not (r["psnr"] >= max(best - GAP_DB, bicubic))
        sample = r.get("sample1_psnr", np.nan)
        r["bad_samples"] = r["train"]["diverged"] or not (sample >= best_sample - GAP_DB)
    return best, best_sample


def method_row(method: str, rs: list[dict], lrs: list[float], samples: bool) -> str:
    div = sum(r["train"]["diverged"] for r in rs)
    bad = [r for r in rs if r["unproductive"]]
    secs = sum(r["train"]["seconds"] for r in rs)
    bad_secs = sum(r["train"]["seconds"] for r in bad)

    def by_lr(key: str, digits: int = 2) -> str:
        return "; ".join(f"{lr:g}: {P.mean_pm_std([r.get(key, np.nan) for r in rs if r['lr'] == lr], digits)}"
                         for lr in lrs)

    share = bad_secs / max(secs, 1e-9)
    row = (f"| {method} | {len(rs)} | {div} | {len(bad)} | {len(bad) / len(rs):.2f} | "
           f"{bad_secs / 60:.1f} of {secs / 60:.1f} min ({share:.0%}) | {by_lr('psnr')} |")
    if samples:
        if is_generative(method):
            n_bad = sum(r["bad_samples"] for r in rs)
            row += f" {n_bad} | {by_lr('sample1_psnr')} | {by_lr('coverage_1sigma')} |"
        else:
            row += " – | – | – |"
    return row


def report(args: argparse.Namespace, runs: list[dict], n_images: int, bicubic: float, seconds: float
           ) -> str:
    z = SIZES[args.sizing]
    best, best_sample = mark_unproductive(runs, bicubic)
    samples = args.sizing == "long"
    flags = "" if args.sizing == "default" else f" --{args.sizing}"
    if args.methods != args.default_methods:
        flags += f" --methods {' '.join(args.methods)}"
    lines = [
        f"## Unproductive runs ({args.sizing} sizing)", "",
        f"Command: `.venv/bin/python benchmarks/robustness.py{flags}`  ",
        f"Machine: {machine()}  ", f"Date: {today()}", "",
        f"Grid: learning rates {', '.join(f'{lr:g}' for lr in z['lrs'])} × seeds "
        f"{', '.join(map(str, z['seeds']))}, {z['steps']} training steps of the `demo` preset "
        "each (only the method's options, `train.lr` and `train.seed` change). Quality: PSNR of the "
        f"point estimate (posterior mean of 2 samples × 20 steps, or μ(x)) on {n_images} held-out "
        f"simulated test images of quality.py (bicubic: {bicubic:.2f} dB). The *runs* column counts "
        f"the runs finished (of {len(z['lrs']) * len(z['seeds'])} per method). **Unproductive** = "
        f"diverged, no better than bicubic, or more than {GAP_DB:g} dB below the best run of the grid "
        f"({best:.2f} dB). Compute: training seconds on this machine.",
    ]
    if samples:
        lines += ["", f"*Samples unproductive*: one posterior sample more than {GAP_DB:g} dB below the "
                  f"grid's best ({best_sample:.2f} dB) or diverged. ±1σ: raw coverage of the model's "
                  "std (0.683 if calibrated)."]
    head = ("| method | runs | diverged | unproductive | fraction | compute on unproductive runs "
            "| PSNR by lr (mean ± std over seeds) |")
    rule = "|---|---|---|---|---|---|---|"
    if samples:
        head += " samples unproductive | one sample's PSNR by lr | ±1σ by lr |"
        rule += "---|---|---|"
    lines += ["", head, rule]
    lines += [method_row(m, rs, z["lrs"], samples)
              for m in args.methods if (rs := [r for r in runs if r["method"] == m])]
    lines += ["", f"Total benchmark time: {seconds / 60:.0f} min (cached runs are not re-trained)."]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    images = P.test_set(SIZES[args.sizing].get("per_cell", 1), real=False)
    bicubic = float(np.mean([r["psnr"] for r in P.evaluate_baseline("bicubic", images)]))
    t0 = time.perf_counter()
    runs = run_grid(args, images)
    text = report(args, runs, len(images), bicubic, time.perf_counter() - t0)
    write_section(f"robustness_{args.sizing}", text)
    print(text)


if __name__ == "__main__":
    main()

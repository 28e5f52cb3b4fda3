"""The protocol shared by quality.py and robustness.py: methods, equal-budget training runs
(cached and resumable under runs/), the fixed held-out test set and its evaluation.

Every trained method is the ``demo`` preset (or ``demo-regression``) with only the
overrides named in :data:`METHODS` changed, so all share the U-Net size, data, patch
size, batch, optimiser and number of steps; validation during training is reduced to the
final one (it does not count towards the compared figures).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from microdiff.baselines import apply_baseline
from microdiff.checkpoint import latest_checkpoint, load_training_state
from microdiff.config import Config, apply_overrides, load_config
from microdiff.data.datasets import Pair, make_pair, simulated
from microdiff.data.io import read_image, widefield_from_raw_sim
from microdiff.data.sources import TEST_STREAM, VAL_STREAM
from microdiff.data.synthetic import SimulatorConfig
from microdiff.evaluation import image_metrics
from microdiff.models import build_model
from microdiff.options import SINGLE_STRUCTURES
from microdiff.predictor import load
from microdiff.runs import train_run
from microdiff.train import TrainingDiverged

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "benchmarks"
REAL = ROOT.parent / "shared" / "data" / "biosr-mt-cell001"
REAL_CROP = 256  # target pixels of the centre crop of the real pair (input: 128²)
TEST_SEED = 1000  # the held-out simulated test set: independent of every training seed
VAL_SEED = 7000  # + level: validation images for choices (sampler floor, calibration), never reported
STRUCTURES = SINGLE_STRUCTURES  # the test sets hold one structure per image
LEVELS = {"low": 1, "high": 9}  # simulator signal levels (BioSR's levels 01 and 09)
METRICS = ("psnr", "ssim", "ms_ssim", "nrmse", "frc_resolution", "spectral_resolution")

#: name → (preset, overrides). Each pins its whole design, so a change of the demo preset's
#: defaults never changes what a method name means: the paper's design (*PAPER*: K-sample mean,
#: no mean network, one gradient clip, EMA from step 0) or issue 17's (*MEAN_NET*: ZMD with a
#: mean network the size of the denoiser in the regression model's parameterisation, μ(x) as
#: the point estimate, per-module clipping, EMA warm-up). The first five are the schedule
#: comparison of issue 5; ``learned/...`` the options of how the learned schedule learns.
LEARNED = "model.schedule.kind=learned"
DEMO_NET = "model.zmd.net={base_channels: 32, channel_mults: [1, 2, 2], num_res_blocks: 1}"
PAPER = ["model.zmd.enabled=false", "sample.point_estimate=sample-mean", "sample.gamma_min=null",
         "train.grad_clip_scope=global", "train.ema_warmup=false"]
VAR_NET = "model.zmd.variance_net={base_channels: 32, channel_mults: [1, 2, 2], num_res_blocks: 1}"
PIXEL_NORM = [f"{net}.norm=pixel" for net in ("model.denoiser", "model.schedule.net", "model.zmd.net",
                                               "model.zmd.variance_net")]
#: the demo preset as it was before it predicted in one pass (issue 20): no variance head, the
#: std from K = 4 samples, mixed-structure training images; every method below starts from it,
#: so the cached runs and their figures keep their meaning
SAMPLED_DEMO = ["model.zmd.variance_net=null", "sample.uncertainty=samples", "sample.samples=4",
                "train.val_samples=4", "data.structure=mixed"]
MEAN_NET = ["model.zmd.enabled=true", DEMO_NET, "model.zmd.scaled=true", "sample.point_estimate=mean-net",
            "sample.gamma_min=1e-3", "train.grad_clip_scope=per-module", "train.ema_warmup=true"]
METHODS: dict[str, tuple[str, list[str]]] = {
    "learned": ("demo", [*PAPER, LEARNED]),
    "learned-exact": ("demo", [*PAPER, "model.schedule.kind=learned-exact"]),
    "fixed-linear": ("demo", [*PAPER, "model.schedule.kind=fixed-linear"]),
    "fixed-cosine": ("demo", [*PAPER, "model.schedule.kind=fixed-cosine"]),
    "regression": ("demo-regression", ["data.structure=mixed"]),
    # the regression U-Net on the demo's own data (single-structure and mixed images, half
    # each): the reference for the default preset's design, zmd-scaled-var-any (issue 17)
    "regression-any": ("demo-regression", ["data.structure=any"]),
    # the faithful CVDM and DDPM's fixed schedule in the paper's design, on the same images:
    # issue 17's time-to-quality comparison against zmd-scaled-var-any and regression-any
    "learned-any": ("demo", [*PAPER, LEARNED, "data.structure=any"]),
    "fixed-linear-any": ("demo", [*PAPER, "model.schedule.kind=fixed-linear", "data.structure=any"]),
    "learned/elbo": ("demo", [*PAPER, LEARNED, "model.schedule.eps_grad=elbo"]),
    "learned/no-eps-grad": ("demo", [*PAPER, LEARNED, "model.schedule.eps_grad=none"]),
    "learned/lr0.1": ("demo", [*PAPER, LEARNED, "model.schedule.lr_scale=0.1"]),
    "learned/bounded": ("demo", [*PAPER, LEARNED, "model.schedule.lambda_range=[0.35,1.4]"]),
    # Zero-Mean Diffusion as the authors have it (μ = net(x), σ = 0.5), mean network the
    # denoiser's size, the K-sample mean as the estimate
    "zmd": ("demo", [*PAPER, "model.zmd.enabled=true", "model.zmd.scaled=false", DEMO_NET,
                     "model.schedule.kind=learned-exact"]),
    # issue 17's design with the learned schedule, and with DDPM's fixed one
    "zmd-scaled": ("demo", [*MEAN_NET, "model.schedule.kind=learned-exact"]),
    # zmd-scaled plus the variance head, fitted to the EMA mean (its other weights train
    # bit-identically); its std is the head's
    "zmd-scaled-var": ("demo", [*MEAN_NET, "model.schedule.kind=learned-exact", VAR_NET,
                                "sample.uncertainty=head"]),
    # zmd-scaled-var trained on single-structure and mixed images (half each): the test
    # images hold one structure each, the demo trains on mixed ones (issue 18)
    "zmd-scaled-var-any": ("demo", [*MEAN_NET, "model.schedule.kind=learned-exact", VAR_NET,
                                    "sample.uncertainty=head", "data.structure=any"]),
    "zmd-scaled/fixed-linear": ("demo", [*MEAN_NET, "model.schedule.kind=fixed-linear"]),
    # the demo preset's design with DDPM's fixed schedule: learned vs fixed inside it (issue 17)
    "zmd-scaled-var-any/fixed-linear": ("demo", [*MEAN_NET, "model.schedule.kind=fixed-linear", VAR_NET,
                                                 "sample.uncertainty=head", "data.structure=any"]),
    # zmd-scaled-var-any trained on the 128² images whole (batch 2: the pixels of a step stay
    # 64² × 8): the networks see the whole field the targets are normalised over (issue 18:
    # a per-image gain the 64² crops cannot know; benchmarks/class_bias.py). Measured (seed 0):
    # the gain's share of the error unchanged, the per-structure spread too (docs/core.md)
    "zmd-scaled-var-any-whole": ("demo", [*MEAN_NET, "model.schedule.kind=learned-exact", VAR_NET,
                                          "sample.uncertainty=head", "data.structure=any",
                                          "data.size=128", "train.batch_size=2"]),
    # zmd-scaled-var with every network normalised per pixel (norm: pixel): outputs that do
    # not depend on the image size, so whole images are predicted as the training patches
    # were (issue 18: the head's per-structure miscalibration; benchmarks/head_norm.py). Measured:
    # size-independent, but no better calibrated per structure (docs/core.md)
    "zmd-scaled-var-px": ("demo", [*MEAN_NET, "model.schedule.kind=learned-exact", VAR_NET,
                                   "sample.uncertainty=head", *PIXEL_NORM]),
}
CORE = ["learned", "learned-exact", "fixed-linear", "fixed-cosine", "regression"]
BUDGET = ["data.n_val=2", "train.val_every=0", "train.checkpoint_every=100", "train.log_every=10"]


@dataclass
class TestImage:
    """One held-out pair, normalised as in training (``make_pair``): ``group`` is
    sim-low, sim-high, real-01 or real-09."""

    group: str
    structure: str
    pair: Pair
    pixel_size_um: float  # of the target

    @property
    def name(self) -> str:
        return self.pair.name


#: long runs (learning_curves.py, quality.py --long) live in one folder group and keep a
#: checkpoint every 250 steps, so one training serves the learning curve and the evaluation at
#: any budget it has reached (the LR and EMA schedules do not depend on the total steps)
LONG_STEPS, CURVE_EVERY = 2000, 250
CURVE_KEEP = ["train.checkpoint_every=250", "train.keep_checkpoints=1000"]


def method_config(method: str, steps: int, seed: int, lr: float | None = None) -> Config:
    preset, overrides = METHODS[method]
    extra = [f"train.steps={steps}", f"train.seed={seed}"] + ([f"train.lr={lr}"] if lr else [])
    if steps >= LONG_STEPS:
        extra += CURVE_KEEP
    pinned = SAMPLED_DEMO if preset == "demo" else []
    return apply_overrides(load_config(preset), [*pinned, *overrides, *BUDGET, *extra])


def sampled_demo() -> Config:
    """The ``demo`` preset with :data:`SAMPLED_DEMO`: the design the older sections measured."""
    return apply_overrides(load_config("demo"), SAMPLED_DEMO)


def run_tag(steps: int) -> str:
    """The run folder group of a budget: long runs are shared with learning_curves.py."""
    return "long" if steps >= LONG_STEPS else f"quality-{steps}"


def run_dir(tag: str, method: str, seed: int, lr: float | None = None) -> Path:
    lr_part = f"_lr{lr:g}" if lr else ""
    return RUNS / tag / method.replace("/", "+") / f"seed{seed}{lr_part}"


def train_cached(cfg: Config, out: Path) -> dict:
    """Train ``cfg`` into ``out`` unless a run of at least its steps is there (resume a
    partial or shorter one). Returns {"seconds": wall-clock of this call's training,
    "diverged": bool, "steps"}."""
    marker = out / "train.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        if info["steps"] >= cfg.train.steps or info["diverged"]:
            return info
        marker.unlink()  # a shorter finished run: continue it
    latest = latest_checkpoint(out / "checkpoints") if out.exists() else None
    if latest is None and out.exists():  # killed before its first checkpoint: start again
        shutil.rmtree(out)
    t0 = time.perf_counter()
    diverged, message = False, ""
    try:
        train_run(cfg, out, resume=latest is not None, progress=False)
    except TrainingDiverged as e:
        diverged, message = True, str(e)
    stats = [json.loads(ln) for ln in (out / "stats.jsonl").read_text().splitlines() if ln.strip()]
    train_rows = [r for r in stats if r.get("kind") == "train"]
    info = {"seconds": time.perf_counter() - t0, "diverged": diverged, "message": message,
            "steps": cfg.train.steps, "last_step": train_rows[-1]["step"] if train_rows else 0,
            "skipped": int(sum(r.get("skipped", 0) for r in train_rows))}
    _write_json(marker, info)
    return info


def _train_job(threads: int, cfg: Config, out: Path) -> dict:
    torch.set_num_threads(threads)
    return train_cached(cfg, out)


def train_many(jobs: list[tuple[Config, Path]], workers: int) -> None:
    """:func:`train_cached` every ``(config, folder)`` of ``jobs``, ``workers`` at once in
    separate processes with an equal share of the CPU's threads each (on a GPU they share
    the device): the long benchmarks' "two runs at once, one thread each", as an option.
    Each run still resumes from its last checkpoint when killed. A folder listed twice
    trains once."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    todo = list({out: (cfg, out) for cfg, out in jobs}.values())
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_train_job, threads, cfg, out): out for cfg, out in todo}
        for future, out in futures.items():
            info = future.result()
            print(f"trained {out} ({info['steps']} steps{', diverged' if info['diverged'] else ''})",
                  flush=True)


def training_seconds(out: Path) -> float:
    """Wall-clock seconds of training the run in ``out`` took over all its sessions: the
    trainer's clock restarts when a killed run resumes, so the sum of each segment's last
    ``seconds`` in stats.jsonl (NaN without one)."""
    path = out / "stats.jsonl"
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    clock = [r["seconds"] for r in rows if r.get("kind") == "train"]
    if not clock:
        return float("nan")
    ends = [a for a, b in zip(clock[:-1], clock[1:], strict=True) if b < a]
    return float(sum(ends) + clock[-1])


def trained_to(cfg: Config, out: Path, steps: int) -> dict:
    """Make sure ``out`` has the model after ``steps`` steps: a long run that has already
    passed them (its checkpoint is kept, even while it is still training) is used as it is;
    else :func:`train_cached`. Returns the training info, with the seconds the run had taken
    at that step."""
    if not (out / "checkpoints" / f"step_{steps:08d}.pt").exists():
        return train_cached(cfg, out)
    rows = [json.loads(ln) for ln in (out / "stats.jsonl").read_text().splitlines() if ln.strip()]
    at = [r for r in rows if r.get("kind") == "train" and r["step"] <= steps]
    return {"seconds": at[-1]["seconds"] if at else float("nan"), "diverged": False, "message": "",
            "steps": steps, "last_step": steps, "skipped": int(sum(r.get("skipped", 0) for r in at))}


def model_at(out: Path, cfg: Config, steps: int):
    """The run's EMA model after ``steps`` steps: that checkpoint's EMA weights when it was
    kept (long runs keep all), else the inference bundle (the final weights)."""
    ckpt = out / "checkpoints" / f"step_{steps:08d}.pt"
    if not ckpt.exists():
        return load(out / "model").model
    torch.manual_seed(0)
    model = build_model(cfg.model)
    model.load_state_dict(load_training_state(ckpt)["ema"])
    return model.eval()


def long_run_outputs(method: str, seed: int, images: list[TestImage], samples: int, tag: str,
                     parts: tuple[str, ...], uncertainty: str = "samples"
                     ) -> tuple[dict[str, dict[str, np.ndarray]], bool]:
    """The ``LONG_STEPS`` run's model on ``images`` with its preset's sampler and ``samples``
    samples: name → {part: array} for ``parts`` among ``mean`` (the point estimate), ``std``,
    ``sample_mean`` (the K samples' mean; 2-D), ``samples`` ``[K, H, W]``, ``y`` and ``x``
    (normalised units), cached in the run folder as ``{tag}-K{samples}x{steps}-g{gamma_min}.npz``
    (recomputed when it lacks a part); and whether they were computed now (not cached).
    ``uncertainty="head"``: ``std`` is the variance head's σ(x) (the cache name ends ``-head``).
    Trains nothing."""
    cfg = method_config(method, LONG_STEPS, seed)
    out = run_dir("long", method, seed)
    if not (out / "train.json").exists():
        raise SystemExit(f"{out} has no finished {LONG_STEPS}-step run: run quality.py --long first")
    s = cfg.sample
    head = "-head" if uncertainty == "head" else ""
    cache = out / f"{tag}-K{samples}x{s.steps}-g{s.gamma_min}{head}.npz"
    names = [im.name for im in images]
    if cache.exists():
        saved = np.load(cache)
        if list(saved["names"]) == names and all(f"{n}/{p}" in saved for n in names for p in parts):
            return {n: {p: saved[f"{n}/{p}"] for p in parts} for n in names}, False
    model = model_at(out, cfg, LONG_STEPS)
    gen = torch.Generator().manual_seed(seed)
    result = {}
    for im in images:
        with torch.no_grad():
            res = model.sample(im.pair.x[None], steps=s.steps, samples=samples, generator=gen,
                               **(s.options() | {"uncertainty": uncertainty}))
        sample_mean = res.mean if res.sample_mean is None else res.sample_mean
        arrays = {"mean": res.mean[0, 0], "std": res.std[0, 0], "sample_mean": sample_mean[0, 0],
                  "samples": res.samples[0, :, 0],
                  "y": im.pair.y[0], "x": im.pair.x[0]}
        result[im.name] = {p: arrays[p].numpy() for p in parts}
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, names=np.array(names),
                        **{f"{n}/{p}": v for n, d in result.items() for p, v in d.items()})
    tmp.replace(cache)
    return result, True


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def test_set(per_cell: int = 1, size: int = 128, real: bool = True, real_crop: int = REAL_CROP
             ) -> list[TestImage]:
    """``per_cell`` simulated images per structure and level (``size``² target pixels, a
    stream no training run draws from), plus the real BioSR pair's centre crop at levels
    01 and 09 when ../shared/data is present."""
    out = _simulated_set(per_cell, size, TEST_SEED, TEST_STREAM)
    if real and REAL.is_dir():
        target = read_image(REAL / "sim_gt.tif").data.squeeze().astype(np.float32)
        h, w = target.shape
        t0, l0 = (h - real_crop) // 4 * 2, (w - real_crop) // 4 * 2  # even: whole input pixels
        y = target[t0:t0 + real_crop, l0:l0 + real_crop]
        for level in ("01", "09"):
            wf = widefield_from_raw_sim(read_image(REAL / f"raw_sim_level{level}.tif")).data
            x = wf[t0 // 2:(t0 + real_crop) // 2, l0 // 2:(l0 + real_crop) // 2].astype(np.float32)
            pair = make_pair(f"biosr_cell001_L{level}", x[None], y[None])
            out.append(TestImage(f"real-{level}", "mt", pair, 0.0313))
    return out


def validation_set(per_cell: int = 1, size: int = 128) -> list[TestImage]:
    """``per_cell`` simulated images per structure and signal level from the validation
    stream (seed VAL_SEED + level): for choosing settings and fitting calibrations, so that
    nothing is tuned on :func:`test_set`."""
    return _simulated_set(per_cell, size, VAL_SEED, VAL_STREAM)


def mixed_set(per_level: int, held_out: str = "test", size: int = 128) -> list[TestImage]:
    """``per_level`` images of the training distribution (``mixed``: 2–3 structures each) per
    signal level, from the test or validation stream (seeds offset by 100 from the
    single-structure sets)."""
    seed, stream = (TEST_SEED, TEST_STREAM) if held_out == "test" else (VAL_SEED, VAL_STREAM)
    return _simulated_set(per_level, size, seed + 100, stream, kinds=("mixed",))


def _simulated_set(per_cell: int, size: int, seed: int, stream: int,
                   kinds: tuple[str, ...] = STRUCTURES) -> list[TestImage]:
    """``per_cell`` pairs per structure and signal level from simulator ``stream``, seed
    ``seed`` + level, named ``KIND_NNNNN_L<level>``."""
    sim = SimulatorConfig(scale=2)
    out = []
    for level_name, level in LEVELS.items():
        for kind in kinds:
            for p in simulated(kind, per_cell, size, seed + level, level, sim, stream=stream):
                p.name = f"{p.name}_L{level}"
                out.append(TestImage(f"sim-{level_name}", kind, p, sim.target_pixel_um))
    return out


def _row(im: TestImage, pred: np.ndarray, seconds: float) -> dict:
    m = image_metrics(pred.astype(np.float64), im.pair.y[0].numpy().astype(np.float64), im.pixel_size_um)
    return {"image": im.name, "group": im.group, "structure": im.structure, "seconds": seconds,
            **{k: m[k] for k in METRICS}}


def evaluate_model(model, cfg: Config, images: list[TestImage], samples: int, steps: int,
                   seed: int = 0) -> list[dict]:
    """Metrics of the posterior mean (``samples`` × ``steps``; one pass for regression) on
    every test image, with the sampling seconds per image."""
    s = cfg.sample
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for im in images:
        t0 = time.perf_counter()
        with torch.no_grad():
            res = model.sample(im.pair.x[None], steps=steps, samples=samples, generator=gen,
                               **s.options())
        row = _row(im, res.mean[0, 0].numpy(), time.perf_counter() - t0)
        if model.generative:  # one posterior sample (sharpness), the K samples' mean, the std
            y = im.pair.y[0].numpy().astype(np.float64)
            one = image_metrics(res.samples[0, 0, 0].numpy().astype(np.float64), y, im.pixel_size_um)
            kmean = image_metrics(res.sample_mean[0, 0].numpy().astype(np.float64), y, im.pixel_size_um)
            unc = image_metrics(res.mean[0, 0].numpy().astype(np.float64), y, im.pixel_size_um,
                                res.std[0, 0].numpy().astype(np.float64))
            row |= {f"sample1_{k}": one[k] for k in METRICS} | {f"kmean_{k}": kmean[k] for k in METRICS}
            row |= {k: unc[k] for k in ("spearman_std_error", "coverage_1sigma", "coverage_2sigma")}
        rows.append(row)
    return rows


def evaluate_baseline(name: str, images: list[TestImage]) -> list[dict]:
    """Metrics of a classical baseline (bicubic, richardson-lucy) on every test image."""
    rows = []
    for im in images:
        t0 = time.perf_counter()
        low = im.pair.low[0].numpy().astype(np.float64)
        pred = apply_baseline(name, low, im.pair.scale, im.pixel_size_um * im.pair.scale)
        rows.append(_row(im, pred, time.perf_counter() - t0))
    return rows


def mean_pm_std(values: list[float], digits: int = 2) -> str:
    v = np.asarray(values, dtype=float)
    if v.size == 0 or not np.isfinite(v).any():
        return "–"
    v = v[np.isfinite(v)]
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if v.size > 1 else f"{v.mean():.{digits}f}"

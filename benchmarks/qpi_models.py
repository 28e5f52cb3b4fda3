"""QPI on equal budgets: CVDM vs the fixed-schedule DDPM vs the regression U-Net vs TIE.

Every trained method is the ``qpi-2shot`` or ``qpi-poly`` preset with only its method
option changed: ``cvdm`` (the learned schedule, as the preset), ``fixed-cosine``
(conditional DDPM) and ``regression`` (the same U-Net trained with MSE); same data (phase
maps from scikit-image's natural images, noise ℓ ~ U(0, 0.2)), 64² patches, batch 8,
``--steps`` steps, ``--seeds``. Test set, never trained on: ``--n`` natural-image phase maps
(128², a stream no training run draws from) and scikit-image's real phase image ``cell``
(256² crop), each acquired at noise ℓ = 0.02 and 0.1. TIE (two-shot only) sees the raw
intensities with its α tuned per noise level (benchmarks/qpi.py). Metrics: RMSE [rad],
PSNR and SSIM over the 3.5 rad range after removing the mean phase; for CVDM also
Spearman(std, |error|) and ±1σ coverage. Runs are cached under runs/benchmarks/. Writes the
``qpi_models`` section of docs/benchmarks.md and, from the two-shot CVDM run (seed 0), the
``cell`` figure docs/img/qpi_cell.png (intensities, TIE, CVDM mean and std, truth). Usage::

    .venv/bin/python benchmarks/qpi_models.py             # ~3 h on a 2-core CPU (three seeds)
    .venv/bin/python benchmarks/qpi_models.py --seeds 1   # one seed; runs are cached, so seeds
                                                          # can run side by side, then pooled
    .venv/bin/python benchmarks/qpi_models.py --quick     # ~20 min: a check, not a conclusion
    .venv/bin/python benchmarks/qpi_models.py --full      # GPU-sized

``--methods`` picks other methods (issue 19's designs: ``cvdm-tieauto-mean-cells-wdc``, the
``qpi-2shot-tie`` preset, and its variants; ``-dc`` / ``-wdc``: the same trained run with
data consistency ``tie`` / ``tie+wiener`` at prediction, scored on the same samples: each
test item's samples are cached in the run folder; ``-t64`` / ``-t128``: the same trained run
predicted in overlapping tiles of that side, as ``predict`` tiles, samples drawn anew),
``--levels`` other noise levels,
``--cell-draws`` noise draws of the ``cell``, ``--figure METHOD`` the cell figure of that
method (docs/img/qpi_cell_METHOD.png); each set writes its own section.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
import qpi as Q  # noqa: E402
from _report import machine, today, write_section  # noqa: E402

from microdiff.config import Config, apply_overrides, load_config  # noqa: E402
from microdiff.data.datasets import make_pair  # noqa: E402
from microdiff.data.phase_truth import QPIConfig, cell_phase, simulate_qpi  # noqa: E402
from microdiff.data.sources import task_of  # noqa: E402
from microdiff.metrics import phase_metrics  # noqa: E402
from microdiff.predictor import load  # noqa: E402

SIZES = {  # at 100 steps the diffusion models still predicted ε ≈ 0 (RMSE 1.6 rad): size up
    "quick": {"steps": 250, "seeds": [0], "n": 4, "samples": 2},
    "default": {"steps": 800, "seeds": [0, 1, 2], "n": 6, "samples": 4},
    "full": {"steps": 5000, "seeds": [0, 1, 2], "n": 32, "samples": 8},
}
# issue 19's design (the qpi-2shot-tie preset): the TIE channel and the residual around it
TIE_DESIGN = ["data.qpi_input_norm=mean", "data.baseline_channel=true", "model.in_channels=3",
              "model.residual=true", "model.target_scale=0.1"]
METHODS = {"cvdm": [], "fixed-cosine": ["model.schedule.kind=fixed-cosine"],
           "regression": ["model.kind=regression"],
           # not in the default set: the input stack divided by its mean instead of min-max
           "cvdm-mean": ["data.qpi_input_norm=mean"],
           # issue 19: the TIE phase of the whole image as a third input channel and the
           # residual around it (the qpi-2shot-tie preset; two-shot only)
           "cvdm-tie": TIE_DESIGN,
           "regression-tie": [*TIE_DESIGN, "model.kind=regression"],
           # the same with the demo's mean network μ(x) as the point estimate (Zero-Mean Diffusion)
           "cvdm-tie-mean": [*TIE_DESIGN, "model.zmd.enabled=true", "model.zmd.scaled=true",
                             "sample.point_estimate=mean-net", "sample.gamma_min=1e-3"]}
# TIE at three Tikhonov weights (weak, strong, then the residual's base 1e-3)
MULTI_TIE = ["data.tie_extra_regularizations=[1e-5, 1e-1]", "model.in_channels=5"]
METHODS["cvdm-tie3-mean"] = [*METHODS["cvdm-tie-mean"], *MULTI_TIE]
METHODS["regression-tie3"] = [*METHODS["regression-tie"], *MULTI_TIE]
# trained on natural maps and synthetic cells, half each (data.phase_source=natural+cells)
CELLS = ["data.phase_source=natural+cells"]
METHODS["cvdm-tie-mean-cells"] = [*METHODS["cvdm-tie-mean"], *CELLS]
METHODS["cvdm-tie3-mean-cells"] = [*METHODS["cvdm-tie3-mean"], *CELLS]
METHODS["regression-tie-cells"] = [*METHODS["regression-tie"], *CELLS]
# the TIE channel's α from each image's noise (data.tie_regularization=auto)
METHODS["cvdm-tieauto-mean-cells"] = [*METHODS["cvdm-tie-mean-cells"], "data.tie_regularization=auto"]
METHODS["fixed-cosine-tie-mean-cells"] = [*METHODS["cvdm-tie-mean-cells"], "model.schedule.kind=fixed-cosine"]
METHODS["fixed-cosine-tieauto-mean-cells"] = [*METHODS["cvdm-tieauto-mean-cells"],
                                             "model.schedule.kind=fixed-cosine"]
# issue 19's low frequencies: 256² training images (cells 51-115 px across, like the real
# `cell`'s ~100-px body) cut into 128² patches, batch 2: the pixels, and so the CPU time, of a
# step stay those of 64² × 8, but a patch holds a whole cell and its background
METHODS["cvdm-tieauto-mean-cells-field"] = [*METHODS["cvdm-tieauto-mean-cells"], "data.image_size=256",
                                            "data.size=128", "train.batch_size=2"]
# the same pixels per step on the 128² training images whole (cells 26-58 px): the field
# of a test map, without rescaling the natural maps' content
METHODS["cvdm-tieauto-mean-cells-whole"] = [*METHODS["cvdm-tieauto-mean-cells"], "data.size=128",
                                            "train.batch_size=2"]
# every network normalised per pixel (norm: pixel; issue 18's finding): trained on 64²
# patches, a GroupNorm network sees other statistics on a whole 256² `cell`
_PX = [k for k in P.PIXEL_NORM if not k.startswith("model.zmd.variance_net")]  # the preset has no head
METHODS["cvdm-tieauto-mean-cells-px"] = [*METHODS["cvdm-tieauto-mean-cells"], *_PX]
# prediction-time variants of trained runs, data consistency on the same trained models:
# -dc, one TIE-preconditioned Gauss-Newton step towards the intensities (data_consistency=tie);
# -wdc, that step and then the Wiener step through the pair's transfer function (tie+wiener)
_DC_BASES = ("cvdm-tieauto-mean-cells", "fixed-cosine-tieauto-mean-cells", "cvdm-tie-mean-cells",
             "regression-tie-cells", "cvdm-tieauto-mean-cells-field", "cvdm-tieauto-mean-cells-whole",
             "cvdm-tieauto-mean-cells-px")
_DC = {"dc": "tie", "wdc": "tie+wiener"}
TRAINED_AS = {f"{m}-{v}": m for m in _DC_BASES for v in _DC}
for _m in _DC_BASES:
    for _v, _how in _DC.items():
        METHODS[f"{_m}-{_v}"] = [*METHODS[_m], f"data.data_consistency={_how}"]
# prediction-time variants that run the network in overlapping tiles (overlap a quarter of the
# tile, blended as `predict` blends) and then refine the whole image: a GroupNorm network trained
# on 64² patches sees its training statistics on the 256² `cell` (the 128² natural maps are one
# 128² tile); their samples are drawn anew (cached apart), scored on the same items
TILE: dict[str, int] = {}
for _m in ("cvdm-tieauto-mean-cells", "fixed-cosine-tieauto-mean-cells"):
    for _t in (64, 128):
        for _v in ("", "-wdc"):
            TILE[f"{_m}-t{_t}{_v}"], TRAINED_AS[f"{_m}-t{_t}{_v}"] = _t, _m
            METHODS[f"{_m}-t{_t}{_v}"] = [*METHODS[_m], *(["data.data_consistency=tie+wiener"] if _v else [])]
TWO_SHOT_ONLY = ("cvdm-tie", "regression-tie", "cvdm-tie-mean", "cvdm-tie3-mean", "regression-tie3",
                 "cvdm-tie-mean-cells", "cvdm-tie3-mean-cells", "regression-tie-cells",
                 "fixed-cosine-tie-mean-cells", "cvdm-tieauto-mean-cells", "fixed-cosine-tieauto-mean-cells",
                 "cvdm-tieauto-mean-cells-field", "cvdm-tieauto-mean-cells-whole",
                 "cvdm-tieauto-mean-cells-px", *TRAINED_AS)
DEFAULT_METHODS = ("cvdm", "fixed-cosine", "regression")
TASKS = ("qpi-2shot", "qpi-poly")
ROOT = Path(__file__).resolve().parent.parent
LEVELS = (0.02, 0.1)


def method_config(task: str, method: str, steps: int, seed: int) -> Config:
    return apply_overrides(load_config(task), [*METHODS[method], *P.BUDGET, f"train.steps={steps}",
                                               f"train.seed={seed}"])


def test_items(task: str, n: int, levels: tuple[float, ...] = LEVELS, cell_draws: int = 1
               ) -> list[tuple[str, float, np.ndarray, np.ndarray, np.ndarray, str]]:
    """(group, ℓ, phase truth, acquisition ``[C, H, W]`` min-max normalised, the same raw, a
    name) for every test image and level; the one ``cell`` is acquired ``cell_draws`` times
    (noise draws; the first is the single draw of the default)."""
    truths = [("natural", phi, 0) for phi in Q.maps(n, 128, Q.TEST_SEED)]
    cell = cell_phase(Q.PHASE_RANGE, 256)
    truths += [("cell", cell, draw) for draw in range(cell_draws)]
    items = []
    for level in levels:
        acq = QPIConfig(task=task, noise=(level, level))
        for i, (group, phi, draw) in enumerate(truths):
            i = i - draw  # every draw of the cell is image n, as with one draw
            seed = [Q.TEST_SEED, i, int(level * 1000)] + ([draw] if draw else [])
            stack, _ = simulate_qpi(phi, acq, np.random.default_rng(seed))
            raw, _ = simulate_qpi(phi, acq, np.random.default_rng(seed), normalize=False)
            items.append((group, level, phi, stack, raw, f"{task}_{i}_l{level:g}_d{draw}"))
    return items


def run_dir(task: str, method: str, steps: int, seed: int) -> Path:
    """Where ``method``'s run is trained (a prediction-time variant shares its base's)."""
    return P.run_dir(f"qpi-{steps}/{task}", TRAINED_AS.get(method, method), seed)


def _cache_key(items, samples: int) -> dict:
    levels = sorted({item[1] for item in items})
    key = {"n": len(items), "samples": samples, "sampling": "per-item",  # see cached_sample
           **({"levels": levels} if levels != sorted(LEVELS) else {})}
    draws = sum(item[0] == "cell" for item in items) // len(levels)
    return key | ({"cell_draws": draws} if draws != 1 else {})


def sample_path(out: Path, name: str, steps: int, samples: int) -> Path:
    """Where :func:`cached_sample` keeps one test item's draws in the run folder ``out``."""
    return out / "samples" / f"{name}_k{samples}_s{steps}.pt"


def cached_sample(predictor, out: Path, name: str, x: torch.Tensor, steps: int, samples: int, seed: int,
                  options: dict, tile: int | None = None) -> dict[str, torch.Tensor]:
    """The model's point estimate, std and samples of one test item, drawn once (its own
    generator, from the seed and the item's name) and cached under ``out``/samples, so that a
    new prediction-time variant of the run costs no sampling. ``tile``: the network runs in
    overlapping ``tile``² tiles (``predictor.sample_normalized``, overlap ``tile // 4``)."""
    path = sample_path(out, name + (f"_t{tile}" if tile else ""), steps, samples)
    if path.exists():
        return torch.load(path)
    drawn = draw(predictor, x, steps, samples, seed * 1_000_003 + zlib.crc32(name.encode()), options, tile)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(drawn, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)
    return drawn


def draw(predictor, x: torch.Tensor, steps: int, samples: int, seed: int | torch.Generator, options: dict,
         tile: int | None = None) -> dict[str, torch.Tensor]:
    """``mean``, ``std`` ``[1, C, H, W]`` and ``samples`` ``[1, K, C, H, W]`` of the condition ``x``
    ``[C', H, W]``: the model on the whole image, or in overlapping ``tile``² tiles (overlap
    ``tile // 4``, ``predictor.sample_normalized``: as ``predict`` tiles). ``seed``: a seed, or a
    generator to draw from (the tiles' seed is then drawn from it)."""
    if not tile:
        gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
        with torch.no_grad():
            res = predictor.model.sample(x[None], steps=steps, samples=samples, generator=gen, **options)
        return {"mean": res.mean, "std": res.std, "samples": res.samples}
    if isinstance(seed, torch.Generator):
        seed = int(torch.randint(0, 2**62, (1,), generator=seed))
    res = predictor.sample_normalized(x, samples, steps, seed, tile, tile // 4,
                                      return_samples=predictor.model.generative)
    out = {k: torch.from_numpy(v)[None] for k, v in res.items()}
    if "samples" in out:
        out["samples"] = out["samples"].reshape(1, samples, *out["mean"].shape[1:])
    return out


def evaluate(task: str, method: str, steps: int, seed: int, items, samples: int,
             variants: tuple[str, ...] = ()) -> list[dict]:
    """``method``'s rows (cached per method); ``variants``, prediction-time variants of the
    same run (``TRAINED_AS``), are scored on the very same samples and cached too."""
    cfg = method_config(task, method, steps, seed)
    out = run_dir(task, method, steps, seed)
    info = P.train_cached(cfg, out)
    names = (method, *variants)
    caches = {m: out / ("qpi.json" if m not in TRAINED_AS else f"qpi_{m}.json") for m in names}
    key = _cache_key(items, samples)
    if all(c.exists() and json.loads(c.read_text())["key"] == key for c in caches.values()):
        return json.loads(caches[method].read_text())["rows"]
    predictor = load(out / "model")
    model = predictor.model
    tasks = {m: task_of(method_config(task, m, steps, seed).data) for m in names}
    rows: dict[str, list[dict]] = {m: [] for m in names}
    for group, level, phi, stack, raw, name in items:
        t = tasks[method]
        pair = make_pair("test", raw if t.input_norm == "mean" else stack, phi[None], t)
        drawn = {tile: cached_sample(predictor, out, name, pair.x, cfg.sample.steps,
                                     samples if model.generative else 1, seed, cfg.sample.options(), tile)
                 for tile in {TILE.get(m) for m in names}}
        for m in names:
            res = drawn[TILE.get(m)]
            point, std, _ = tasks[m].refine(pair.x[None], res["mean"], res["samples"])
            std = res["std"] if std is None else std
            mean = point[0, 0].numpy() * Q.PHASE_RANGE
            std = std[0, 0].numpy() * Q.PHASE_RANGE if model.generative else None
            rows[m].append({"group": group, "level": level, "train_s": info["seconds"],
                            **phase_metrics(mean, phi, Q.PHASE_RANGE, std)})
    for m in names:
        P._write_json(caches[m], {"key": key, "rows": rows[m], "train": info})
    return rows[method]


def tie_rows(items) -> list[dict]:
    """TIE on the very raw two-shot intensities the trained methods get, α tuned per level."""
    alphas = {lv: Q.tuned_alpha(lv) for lv in sorted({lv for _, lv, *_ in items})}
    return [{"group": group, "level": level,
             **phase_metrics(Q.tie(torch.from_numpy(np.asarray(raw, np.float64)), alphas[level]), phi,
                             Q.PHASE_RANGE)}
            for group, level, phi, _, raw, _ in items]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true")
    size.add_argument("--full", action="store_true")
    ap.add_argument("--steps", type=int, help="training steps (overrides the sizing)")
    ap.add_argument("--seeds", type=int, nargs="+", help="training seeds (override the sizing)")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(METHODS),
                    help="a set other than the default writes its own section")
    ap.add_argument("--levels", type=float, nargs="+", default=list(LEVELS),
                    help="noise levels ℓ (others than the default: their own section)")
    ap.add_argument("--cell-draws", type=int, default=1, help="noise draws of the `cell` per level "
                    "(its RMSE is their mean; more than 1: their own section)")
    ap.add_argument("--figure", choices=list(METHODS), help="draw the cell figure of this method "
                    "(seed 0; default: cvdm when it is in --methods, to docs/img/qpi_cell.png)")
    args = ap.parse_args()
    sizing = "quick" if args.quick else "full" if args.full else "default"
    z = dict(SIZES[sizing])
    z["steps"] = args.steps or z["steps"]
    z["seeds"] = args.seeds or z["seeds"]
    table = {}
    for task in args.tasks:
        items = test_items(task, z["n"], tuple(args.levels), args.cell_draws)
        for method in args.methods:
            if method in TWO_SHOT_ONLY and task != "qpi-2shot":
                continue
            runs = []
            for seed in z["seeds"]:
                print(f"{task} {method} seed {seed}", flush=True)
                variants = tuple(m for m in args.methods if TRAINED_AS.get(m) == method)
                runs.append(evaluate(task, method, z["steps"], seed, items, z["samples"], variants))
            table[(task, method)] = runs
        if task == "qpi-2shot":
            table[(task, "tie")] = [tie_rows(items)]
    report(args, sizing, z, table)
    figure = args.figure or ("cvdm" if "cvdm" in args.methods else None)
    if "qpi-2shot" in args.tasks and figure:
        name = "qpi_cell.png" if figure == "cvdm" else f"qpi_cell_{figure}.png"
        cell_figure(figure, z["steps"], z["seeds"][0], ROOT / "docs" / "img" / name, tuple(args.levels))


def cell_figure(method: str, steps: int, seed: int, path: Path, levels: tuple[float, ...] = LEVELS,
                samples: int = 8) -> None:
    """Rows: the noise levels; columns: the raw intensities at ∓Δz, TIE (α tuned), the
    ``method``'s point estimate, std (``samples`` × the preset's steps) and error, and the
    truth, all in rad."""
    import matplotlib.pyplot as plt

    from microdiff.plots import save_figure

    cfg = method_config("qpi-2shot", method, steps, seed)
    predictor = load(run_dir("qpi-2shot", method, steps, seed) / "model")
    task = task_of(cfg.data)
    truth = cell_phase(Q.PHASE_RANGE, 256)
    gen = torch.Generator().manual_seed(seed)
    lo, hi = float(truth.min()), float(truth.max())
    fig, axes = plt.subplots(len(levels), 7, figsize=(19.5, 3.1 * len(levels)), dpi=100)
    for row, level in zip(axes, levels, strict=True):
        raw = Q.acquire(truth, level, Q.TEST_SEED)  # the same noisy intensities for both;
        # make_pair min-max normalises them for CVDM as in training
        tie = Q.tie(raw, Q.tuned_alpha(level))
        pair = make_pair("cell", raw.numpy(), truth[None], task)
        res = draw(predictor, pair.x, cfg.sample.steps, samples, gen, cfg.sample.options(), TILE.get(method))
        point, std, _ = task.refine(pair.x[None], res["mean"], res["samples"])
        mean = point[0, 0].numpy() * Q.PHASE_RANGE
        std = (res["std"] if std is None else std)[0, 0].numpy() * Q.PHASE_RANGE
        shift = lambda est: est - est.mean() + truth.mean()  # noqa: E731  (mean phase is free)
        m_tie = phase_metrics(tie, truth, Q.PHASE_RANGE)["rmse_rad"]
        m_cvdm = phase_metrics(mean, truth, Q.PHASE_RANGE)["rmse_rad"]
        panels = [(raw[0].numpy(), f"ℓ = {level:g}: intensity at −1 µm", "gray", None),
                  (raw[1].numpy(), "intensity at +1 µm", "gray", None),
                  (shift(tie), f"TIE [rad], RMSE {m_tie:.3f}", "viridis", (lo, hi)),
                  (shift(mean), f"estimate [rad], RMSE {m_cvdm:.3f}", "viridis", (lo, hi)),
                  (std, "std [rad]", "magma", None),
                  (shift(mean) - truth, "estimate − truth [rad]", "RdBu_r", (-0.5, 0.5)),
                  (truth, "truth [rad]", "viridis", (lo, hi))]
        Q.draw_panels(fig, row, panels)
    fig.suptitle(f"scikit-image `cell` as held-out phase truth: {method} ({steps} training steps, "
                 f"posterior of {samples} samples) against TIE", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)


def _cell(runs: list[list[dict]], group: str, level: float, key: str, digits: int) -> str:
    per_seed = [np.mean([r[key] for r in rows if r["group"] == group and r["level"] == level])
                for rows in runs]
    return P.mean_pm_std(per_seed, digits)


def report(args, sizing: str, z: dict, table: dict) -> None:
    flags = {"quick": " --quick", "full": " --full", "default": ""}[sizing]
    flags += f" --steps {args.steps}" if args.steps else ""
    flags += f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds else ""
    flags += f" --tasks {' '.join(args.tasks)}" if list(args.tasks) != list(TASKS) else ""
    custom = list(args.methods) != list(DEFAULT_METHODS)
    flags += f" --methods {' '.join(args.methods)}" if custom else ""
    level_list = ", ".join(f"{lv:g}" for lv in args.levels)
    if sorted(args.levels) != sorted(LEVELS):
        flags += " --levels " + level_list.replace(",", "")
    flags += f" --cell-draws {args.cell_draws}" if args.cell_draws != 1 else ""
    flags += f" --figure {args.figure}" if args.figure else ""
    budget = f"{sizing} sizing" + (f", {args.steps} steps" if args.steps else "")
    lines = [f"## QPI on equal budgets ({budget})", "",
             f"Command: `.venv/bin/python benchmarks/qpi_models.py{flags}`  ", f"Machine: {machine()}  ",
             f"Date: {today()}", "",
             f"Each trained method: the `qpi-2shot` / `qpi-poly` preset (1.0 M-parameter U-Net) with the "
             "method's overrides (`METHODS` in the script: the `-tie` designs add the TIE channel, "
             "`-mean` a mean network (2.0 M parameters in all), `-cells` synthetic cells to the "
             "natural-image phase maps in training; `-dc` / `-wdc`: the same trained run and the same "
             "samples with data consistency `tie` / `tie+wiener` at prediction; `-t64`: the same run "
             "predicted in overlapping 64² tiles, overlap 16, then data consistency on the whole image), "
             f"{z['steps']} steps of batch 8 on 64² patches (`-field`: 256² training images cut into "
             "128² patches, batch 2; `-whole`: the 128² training images whole, batch 2: the same pixels "
             "per step; `-px`: every network normalised per pixel, `norm: pixel`), seeds "
             f"{', '.join(map(str, z['seeds']))}. Test: {z['n']} held-out "
             "natural phase maps (128²) and scikit-image's real phase image `cell` (256²) at noise "
             f"ℓ = {level_list}" + (f" (the `cell`: {args.cell_draws} noise draws per level, RMSE their mean)"
                                    if args.cell_draws != 1 else "") +
             f". Generative methods: their preset's point estimate (`sample.point_estimate`: the mean of "
             f"{z['samples']} samples × 20 steps, or the mean network's μ(x)) and the std of the samples. "
             "TIE: raw intensities, α tuned per level. Metrics after removing the mean phase; "
             "each cell: mean ± std over seeds of the mean over images.", "",
             "| task | method | ℓ | RMSE natural [rad] | PSNR natural [dB] | SSIM natural | RMSE cell [rad] "
             "| SSIM cell | Spearman(std, \\|err\\|) | ±1σ coverage |", "|---" * 10 + "|"]
    for (task, method), runs in table.items():
        for level in args.levels:
            def cell(group: str, key: str, digits: int, lv: float = level, rs: list = runs) -> str:
                return _cell(rs, group, lv, key, digits)

            unc = ["–", "–"]
            if all("spearman_std_error" in r for rows in runs for r in rows):  # generative methods
                unc = [cell("natural", "spearman_std_error", 2), cell("natural", "coverage_1sigma", 2)]
            lines.append(f"| {task} | {method} | {level:g} | {cell('natural', 'rmse_rad', 3)} | "
                         f"{cell('natural', 'psnr', 2)} | {cell('natural', 'ssim', 3)} | "
                         f"{cell('cell', 'rmse_rad', 3)} | {cell('cell', 'ssim', 3)} | {unc[0]} | {unc[1]} |")
    name = f"qpi_models_{sizing}" + ("_" + "_".join(args.methods).replace("-", "_") if custom else "")
    if sorted(args.levels) != sorted(LEVELS):
        name += "_l" + "_".join(f"{lv:g}" for lv in args.levels).replace(".", "")
    name += f"_draws{args.cell_draws}" if args.cell_draws != 1 else ""
    name += f"_steps{args.steps}" if args.steps else ""  # a budget of its own, beside the sizing's
    write_section(name, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

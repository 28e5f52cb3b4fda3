"""How many held-out images the std calibration needs, and on what inputs (issue 18).

For each seed of the long runs of ``--method`` (``quality.py --long``; this script trains
nothing), the model's std and error maps (normalised units, error = estimate − target) on
``--per-cell`` validation and test images per structure and signal level
(``_protocol.validation_set`` / ``test_set``; 32 each: 256 images of 128²), cached in the run
folder. The std is the variance head's σ(x) (``--uncertainty head``, one pass) or the spread
of K samples (``--uncertainty samples --samples K``). Validation images give two kinds of
maps to fit on:

- *whole*: each image predicted whole, as ``predict`` (tiles of 256) and, since this issue,
  training's final calibration see it;
- *crops*: its centre ``data.size``² crop (64²) predicted alone, which is what training's
  final calibration fitted on before (``data.n_val`` crops).

Table 1: a std map (``calibration.fit_std_calibration``, the ``rms`` target, the *affine*
line or the one-parameter *scale*) fitted on N random validation images, 20 draws per N,
applied to all the whole test images: ±1σ coverage, the bins' RMSE / RMV range, the largest
distance of a structure's ±1σ from the pooled one, and the share of draws that meet issue
18's three bounds (±1σ in [0.63, 0.73], every structure within 0.08 of it, every bin in
[0.8, 1.25]). Table 2: the scale map fitted on every validation image, checked on every test
image, per seed; and how often the same checks hold on random 16-image test sets (2 per cell,
as ``calibration.py`` tests), to show how much of a verdict on 16 images is chance. Writes
the ``calibration_size`` section of docs/benchmarks.md. Usage::

    .venv/bin/python benchmarks/calibration_size.py [--method zmd-scaled-var-any] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _protocol as P  # noqa: E402
from _report import machine, today, write_section  # noqa: E402

from microdiff.calibration import StdCalibration, calibration_bins, fit_std_calibration  # noqa: E402

STRUCTURES = ("mt", "factin", "ccp", "er")
SIZES = (8, 16, 64, 256)
DRAWS = 20
Maps = tuple[list[str], np.ndarray, np.ndarray]  # structures, std [N, H, W], error [N, H, W]


def predicted(method: str, seed: int, kind: str, mode: str, per_cell: int, uncertainty: str, k: int) -> Maps:
    """(structures, std, error) of the run's model on the ``kind`` set (val or test), predicted
    ``whole`` or on each image's centre ``data.size``² ``crop``; cached in the run folder."""
    out = P.run_dir("long", method, seed)
    cache = out / f"calsize-{kind}-{mode}-{uncertainty}{k}-{per_cell}.npz"
    if cache.exists():
        z = np.load(cache)
        return list(z["structures"]), z["std"], z["error"]
    cfg = P.method_config(method, P.LONG_STEPS, seed)
    model = P.model_at(out, cfg, P.LONG_STEPS)
    images = P.validation_set(per_cell) if kind == "val" else P.test_set(per_cell, real=False)
    gen = torch.Generator().manual_seed(seed)
    side, stds, errors = cfg.data.size, [], []
    for im in images:
        x, y = im.pair.x[None], im.pair.y[None]
        if mode == "crop":
            r, c = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
            x, y = x[..., r:r + side, c:c + side], y[..., r:r + side, c:c + side]
        with torch.no_grad():
            res = model.sample(x, steps=cfg.sample.steps, samples=k, generator=gen,
                               **(cfg.sample.options() | {"uncertainty": uncertainty}))
        stds.append(res.std[0, 0].numpy())
        errors.append((res.mean - y)[0, 0].numpy())
    structures = [im.structure for im in images]
    tmp = cache.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, structures=np.array(structures), std=np.stack(stds), error=np.stack(errors))
    tmp.replace(cache)
    return structures, np.stack(stds), np.stack(errors)


def flat_sorted(maps: Maps, idx: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The images ``idx`` (default all) of ``maps`` as per-pixel (std, error, structure) sorted
    by std: a std map with a positive slope keeps that order, so the bins of
    :func:`calibration_bins` then cost no new sort."""
    structures, std, err = maps
    idx = np.arange(len(structures)) if idx is None else idx
    names = np.repeat(np.array(structures)[idx], std[0].size)
    s, e = std[idx].ravel().astype(np.float64), err[idx].ravel().astype(np.float64)
    order = np.argsort(s, kind="stable")
    return s[order], e[order], names[order]


def checks(pixels: tuple[np.ndarray, np.ndarray, np.ndarray], cal: StdCalibration) -> dict:
    """Issue 18's simulated checks of ``cal`` on the pixels of :func:`flat_sorted`."""
    std, e, names = pixels
    s = cal.apply(std)
    inside = np.abs(e) < s
    pooled = float(inside.mean())
    per = {k: float(inside[names == k].mean()) for k in STRUCTURES if (names == k).any()}
    rmv, rmse, _ = calibration_bins(s, e)
    ratio = rmse / rmv
    dist = max(abs(v - pooled) for v in per.values())
    ok = 0.63 <= pooled <= 0.73 and dist <= 0.08 and ratio.min() >= 0.8 and ratio.max() <= 1.25
    return {"pooled": pooled, "two": float((np.abs(e) < 2 * s).mean()), "dist": dist,
            "lo": float(ratio.min()), "hi": float(ratio.max()), "ok": ok, "per": per}


def fitted(maps: Maps, idx: np.ndarray, form: str) -> StdCalibration:
    _, std, err = maps
    return fit_std_calibration(std[idx], err[idx], form=form)


def cell_subsets(structures: list[str], per: int, rng: np.random.Generator) -> np.ndarray:
    """``per`` random images of each structure × level cell (the sets list cells in order,
    per structure first low, then high: the level is the image's half of the list)."""
    n = len(structures)
    cells: dict[tuple[str, bool], list[int]] = {}
    for i, k in enumerate(structures):
        cells.setdefault((k, i >= n // 2), []).append(i)
    return np.concatenate([rng.choice(v, per, replace=False) for v in cells.values()])


def measure(method: str, seed: int, per_cell: int, uncertainty: str, k: int) -> dict:
    test = predicted(method, seed, "test", "whole", per_cell, uncertainty, k)
    pixels = flat_sorted(test)
    rng = np.random.default_rng(seed)
    rows, vals = {}, {}
    for mode in ("whole", "crop"):
        val = vals[mode] = predicted(method, seed, "val", mode, per_cell, uncertainty, k)
        n_val = len(val[0])
        for form in ("affine", "scale"):
            for n in [n for n in SIZES if n <= n_val]:
                draws = [np.arange(n_val)] if n == n_val else [rng.choice(n_val, n, replace=False)
                                                             for _ in range(DRAWS)]
                rows[(mode, form, n)] = [checks(pixels, fitted(val, d, form)) for d in draws]
    val = vals["whole"]
    cal = fitted(val, np.arange(len(val[0])), "scale")
    small = [checks(flat_sorted(test, cell_subsets(test[0], 2, rng)), cal) for _ in range(100)]
    return {"rows": rows, "all": checks(pixels, cal), "raw": checks(pixels, StdCalibration()), "k": cal.slope,
            "small": small, "images": (len(val[0]), len(test[0]))}


def report(args, results: dict[int, dict], seconds: float) -> str:
    seeds = list(results)
    n_val, n_test = results[seeds[0]]["images"]
    what = ("the variance head's σ(x)" if args.uncertainty == "head"
            else f"the spread of {args.samples} samples")
    cmd = (f"`.venv/bin/python benchmarks/calibration_size.py --method {args.method} --seeds "
           f"{' '.join(map(str, seeds))} --per-cell {args.per_cell} --uncertainty {args.uncertainty}"
           + (f" --samples {args.samples}" if args.uncertainty == "samples" else "") + "`")
    lines = [f"## How many images calibration needs ({args.method}, 2000 steps, {what}; issue 18)", "",
             f"Command: {cmd} ({seconds:.0f} s; {today()}; {machine()}).", "",
             f"A std map fitted on N of {n_val} validation images (20 random draws per N; all of them once), "
             f"applied to {n_test} whole test images (every structure, signal levels 1 and 9); the std is "
             f"{what}. *whole*: the validation images predicted whole, as `predict` and now training's "
             "final calibration predict them; *crops*: their centre 64² crops (the training patch size), "
             "what training's final calibration fitted on before. *affine*: the least-squares line through "
             "the bins; *scale*: one factor, the geometric mean of the bins' RMSE / RMV (the new default). "
             "Mean ± std over draws and seeds; the bins' range is the median lowest and highest bin, "
             "with the worst draw in brackets; *meet*: the share of draws meeting issue 18's three bounds.",
             "", "| fitted on | map | N | ±1σ | RMSE / RMV over the bins | per-structure distance | meet |",
             "|---|---|---|---|---|---|---|"]
    for key in results[seeds[0]]["rows"]:
        runs = [r for s in seeds for r in results[s]["rows"][key]]
        v = {f: np.array([r[f] for r in runs]) for f in ("pooled", "lo", "hi", "dist", "ok")}
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {v['pooled'].mean():.3f} ± {v['pooled'].std():.3f} "
                     f"| {np.median(v['lo']):.2f} – {np.median(v['hi']):.2f} ({v['lo'].min():.2f} – "
                     f"{v['hi'].max():.2f}) | {v['dist'].mean():.3f} | {v['ok'].mean():.0%} |")
    lines += ["", f"The scale map fitted on all {n_val} validation images, checked on all {n_test} test "
              "images (bounds: ±1σ in [0.63, 0.73], every structure within ±0.08 of it, every bin in "
              "[0.8, 1.25]), and the share of 100 random 16-image test sets (2 per structure and level) on "
              "which the same map meets all three:", "",
              "| seed | k | ±1σ raw | ±1σ | ±2σ | " + " | ".join(STRUCTURES)
              + " | largest distance | RMSE / RMV over the bins | all three | 16-image sets meeting them |",
              "|---|---|---|---|---|" + "---|" * len(STRUCTURES) + "---|---|---|---|"]
    for s in seeds:
        r, a = results[s], results[s]["all"]
        cells = [f"{r['k']:.3f}", f"{r['raw']['pooled']:.3f}", f"{a['pooled']:.3f}", f"{a['two']:.3f}",
                 *(f"{a['per'][k]:.2f}" for k in STRUCTURES), f"{a['dist']:.3f}",
                 f"{a['lo']:.2f} – {a['hi']:.2f}", "yes" if a["ok"] else "no",
                 f"{np.mean([x['ok'] for x in r['small']]):.0%}"]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="zmd-scaled-var-any")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--per-cell", type=int, default=32, help="images per structure and level, each set")
    ap.add_argument("--uncertainty", choices=("head", "samples"), default="head")
    ap.add_argument("--samples", type=int, default=8, help="K with --uncertainty samples")
    ap.add_argument("--only-predict", action="store_true", help="fill the caches of --seeds and stop")
    args = ap.parse_args()
    torch.set_num_threads(1)
    k = 0 if args.uncertainty == "head" else args.samples
    t0 = time.perf_counter()
    results = {s: measure(args.method, s, args.per_cell, args.uncertainty, k) for s in args.seeds}
    if args.only_predict:
        return
    body = report(args, results, time.perf_counter() - t0)
    suffix = "" if args.uncertainty == "head" else f"_samples{args.samples}"
    write_section(f"calibration_size-{args.method}{suffix}", body)
    print(body)


if __name__ == "__main__":
    main()
